"""The torch backend: batched tensor kernels on one torch device (CPU or CUDA).

``pursuit`` and ``atom_update`` run the numba backend's algorithms as batched
tensor operations; both import torch, so this package is imported only once
:func:`~skdict._backend.resolve_backend` has found it.
"""

from . import atom_update, nnomp, pursuit


class TorchBackend:
    """Pursuit and atom updates as torch operations on `device` (see :mod:`skdict._backend`).

    Parameters
    ----------
    device : torch.device
    """

    name = "torch"

    def __init__(self, device):
        self.device = device

    @property
    def uses_host_memory(self):
        return self.device.type == "cpu"

    def coder(self, dictionary, gram):
        return pursuit.TorchCoder(dictionary, gram, self.device)

    def positive_coder(self, dictionary, gram):
        return nnomp.TorchNNOMPCoder(dictionary, gram, self.device)

    def chunk_rows(self, n_atoms, n_nonzero_coefs, itemsize):
        return pursuit.chunk_rows(n_atoms, n_nonzero_coefs, itemsize, self.device)

    def update_dictionary(self, X, D, codes, **options):
        return atom_update.update_dictionary(X, D, codes, device=self.device, **options)

    def __repr__(self):
        return f"TorchBackend(device={self.device!r})"
