"""Compute backends: the same operations on numba kernels or on torch tensors.

Estimators never branch on the backend. :func:`resolve_backend` turns the
``backend`` and ``device`` parameters into one backend object, and everything
that differs between backends is a method of that object, with the same
signature on each:

``coder(dictionary, gram)``
    A sparse coder bound to one dictionary whose ``support(X, algorithm, kmax,
    thresh2, dep_tol)`` codes a chunk of rows and returns numpy ``(indices,
    values, counts)``; ``gram`` is computed where the coder runs when None.
``positive_coder(dictionary, gram)``
    The same for non-negative codes (non-negative OMP; ``algorithm`` is "omp").
``chunk_rows(n_atoms, n_nonzero_coefs, itemsize)``
    Rows coded per chunk, so that a chunk's working memory fits the backend.
``update_dictionary(X, D, codes, *, groups, atom_batch_size, x_norms,
weight_floor, weighted, n_power_iter)``
    The K-SVD update of every atom group, in place on ``D`` and ``codes.data``;
    returns the residual ``X - codes @ D``.
``uses_host_memory``
    Whether the working buffers live in host memory (checked before a fit).

To add a backend, write a module here with a class exposing these members,
and a branch in :func:`resolve_backend` that builds it.
"""

import importlib

from .._optional import import_optional, resolve_device
from .numba import NumbaBackend

_BACKENDS = ("auto", "numba", "torch")


def resolve_backend(backend, device):
    """The backend object for the `backend` and `device` parameters.

    Parameters
    ----------
    backend : {"auto", "numba", "torch"}
        ``"auto"`` runs the numba kernels on the CPU and torch when the device
        is a CUDA GPU.
    device : {"cpu", "cuda", "auto"} or str
        ``"auto"`` means CUDA when torch is installed and finds a GPU, else the
        CPU. Any other value is checked by :func:`~skdict._optional.resolve_device`.

    Returns
    -------
    backend : NumbaBackend or TorchBackend
        ``name`` is ``"numba"`` or ``"torch"``; ``device`` the torch.device, or
        None for numba, which always runs on the CPU.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {list(_BACKENDS)}, got {backend!r}.")
    if device == "auto" and backend != "torch" and not _cuda_available():
        return NumbaBackend()
    if backend == "numba":
        if device not in ("auto", "cpu"):
            raise ValueError(
                f"backend='numba' runs on the CPU, but device={device!r}; use "
                "backend='torch' (or 'auto') to run on a GPU."
            )
        return NumbaBackend()
    if backend == "auto" and device == "cpu":
        return NumbaBackend()
    torch = import_optional("torch", "torch", f"backend={backend!r} with device={device!r}")
    from .torch import TorchBackend

    return TorchBackend(resolve_device(device, torch))


def _cuda_available():
    """Whether torch is installed and sees a CUDA GPU (False without torch)."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return False
    return torch.cuda.is_available()
