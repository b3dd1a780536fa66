"""What a fit checks and builds before its first iteration: atom groups, the
memory it will need, and the initial atoms."""

import numpy as np

from .._dask import is_dask_array
from .._rows import _row_norms
from .._validation import available_memory, check_dictionary
from .schedule import take_rows


def group_bounds(nested_groups, n_components, n_nonzero_coefs):
    """(start, stop, n_nonzero_coefs) of each atom group."""
    if nested_groups is None:
        return [(0, n_components, n_nonzero_coefs)]
    sizes = np.asarray(nested_groups)
    if (
        sizes.ndim != 1
        or sizes.size == 0
        or not np.issubdtype(sizes.dtype, np.integer)
        or sizes[0] < 1
        or np.any(np.diff(sizes) <= 0)
        or sizes[-1] != n_components
    ):
        raise ValueError(
            "nested_groups must be increasing positive ints ending at n_components="
            f"{n_components}, e.g. ({n_components // 4}, {n_components}); got "
            f"{nested_groups!r}."
        )
    n_groups = sizes.size
    if n_nonzero_coefs < n_groups:
        raise ValueError(
            f"n_nonzero_coefs={n_nonzero_coefs} is smaller than the {n_groups} "
            "nested_groups; each group needs at least one non-zero coefficient."
        )
    shares = np.full(n_groups, n_nonzero_coefs // n_groups)
    shares[: n_nonzero_coefs % n_groups] += 1
    starts = np.concatenate([[0], sizes[:-1]])
    bounds = []
    for lo, hi, k in zip(starts, sizes, shares):
        if k > hi - lo:
            raise ValueError(
                f"nested group of atoms {lo}..{hi} has {hi - lo} atoms but gets {k} "
                "non-zero coefficients; use larger groups or fewer n_nonzero_coefs."
            )
        bounds.append((int(lo), int(hi), int(k)))
    return bounds


def _working_bytes(groups, n_features, n_rows, itemsize):
    """Bytes a fit holds at its peak: the Gram matrices, the atoms and one batch's buffers.

    The Gram matrix is held twice while ``D @ D.T`` is recomputed after each update;
    with nested groups each group also gets its own contiguous block. The atoms are
    held as ``components_`` and as the working copy; a batch's rows are copied
    for the residual; the correlations of one chunk of rows take ~32 MiB.
    """
    n_atoms = groups[-1][1]
    gram = 2 * n_atoms**2
    if len(groups) > 1:
        gram += sum((hi - lo) ** 2 for lo, hi, _ in groups)
    return (gram + 2 * n_atoms * n_features + 2 * n_rows * n_features) * itemsize + 2**25


def check_working_memory(groups, X, batch_size, backend):
    """Refuse, before allocating, a fit that needs more memory than the machine has.

    Without this, a million atoms meet a MemoryError (or the swap) only after
    the slow initialisation. Fits on a CUDA device keep the Gram matrix there,
    so they are not checked against host memory.
    """
    available = available_memory()
    if available is None or not backend.uses_host_memory:
        return
    n_rows = X.shape[0] if batch_size is None else min(batch_size, X.shape[0])
    needed = _working_bytes(groups, X.shape[1], n_rows, X.dtype.itemsize)
    if needed <= available:
        return
    n_atoms = groups[-1][1]
    rows_part = 2 * n_rows * X.shape[1] * X.dtype.itemsize
    # Largest atom count whose two Gram matrices fit in what the rows leave free.
    room = max(available - rows_part - 2**25, 0) / (2 * X.dtype.itemsize)
    fits = int(np.sqrt(room))
    fixes = [f"use at most about {fits} atoms (the Gram matrix grows as n_components**2)"]
    if rows_part > available / 2:
        fixes.append("set a smaller batch_size (rows held at once)")
    if X.dtype == np.float64:
        fixes.append("pass float32 data (half the memory)")
    raise ValueError(
        f"n_components={n_atoms} needs about {needed / 2**30:.1f} GiB of memory (the "
        f"{n_atoms} x {n_atoms} Gram matrix, held twice while it is updated, and working "
        f"buffers) but {available / 2**30:.1f} GiB is available; " + ", or ".join(fixes) + "."
    )


def initial_components(init, X, n_components, rng):
    n_features = X.shape[1]
    if isinstance(init, str) and init == "data":
        norms = _any_row_norms(X)
        chosen = rng.permutation(np.flatnonzero(norms > 0))[:n_components]
        D = np.empty((n_components, n_features), dtype=np.float64)
        D[: chosen.size] = take_rows(X, chosen) / norms[chosen, None]
        D[chosen.size :] = rng.standard_normal((n_components - chosen.size, n_features))
    elif isinstance(init, str):
        D = rng.standard_normal((n_components, n_features))
    else:
        D = check_dictionary(init, n_features, name="init").astype(np.float64)
        if D.shape[0] != n_components:
            raise ValueError(
                f"init has {D.shape[0]} atoms but n_components={n_components}; pass "
                f"an array of shape ({n_components}, {n_features})."
            )
    norms = np.linalg.norm(D, axis=1)
    if np.any(norms == 0):
        raise ValueError("init contains an all-zero atom; every atom needs a direction.")
    return np.ascontiguousarray(D / norms[:, None], dtype=X.dtype)


def _any_row_norms(X):
    if is_dask_array(X):
        # Block by block with the same function, so that a dask fit starts from
        # bit-identical atoms to the in-memory fit of the same data.
        return X.map_blocks(
            _row_norms, dtype=np.float64, drop_axis=1, meta=np.empty(0, dtype=np.float64)
        ).compute()
    return _row_norms(X)
