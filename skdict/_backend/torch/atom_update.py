"""The K-SVD dictionary update of :mod:`skdict._backend.numba.atom_update` on torch tensors.

Same maths as the numba kernels (see ``numba.atom_update._rank1_atom``): atoms are
updated in batches from the same residual, each taking the majorise-minimise
weighted rank-1 update of its restricted residual by power iteration started
from the old atom (which fixes the sign, ``v · d >= 0``), coefficients clipped at
zero for non-negative codes, and the residual rows a batch touches are corrected
afterwards.

Where the numba kernels loop over each atom's rows, here a batch of atoms is one
flat list of CSR entries (row, atom slot, coefficient): the residual rows of
those entries are gathered once per batch, every product with the restricted
residuals is an elementwise product and row sum over that list, and every sum
over an atom's rows is an accumulating scatter into the batch's slots. The CSR
transpose comes from the shared numba helper
:func:`~skdict._backend.numba.atom_update.atom_positions`.
"""

import numpy as np

from ..._optional import import_optional
from ..numba.atom_update import atom_positions

torch = import_optional("torch", "torch", "backend='torch'")

# Bytes of the (entries, n_features) products formed when codes are subtracted
# from the residual; larger sets of entries are processed in slices.
_SUBTRACT_BYTES = 256 * 2**20


def update_dictionary(
    X, D, codes, *, groups, atom_batch_size, x_norms, weight_floor, weighted, n_power_iter,
    device, positive=False,
):
    """K-SVD update of every group's atoms on `device`; return the residual.

    The same arguments and result as
    :func:`skdict._backend.numba.atom_update.update_dictionary`, plus the torch
    `device` the batch, atoms and codes are moved to for the update.
    """
    indptr, indices = codes.indptr, codes.indices
    atom_ptr, atom_rows, atom_pos = atom_positions(indptr, indices, D.shape[0])
    entry_rows = np.repeat(np.arange(X.shape[0]), np.diff(indptr))
    E = torch.tensor(np.asarray(X, dtype=D.dtype), device=device)
    Dt = torch.tensor(D, device=device)
    data = torch.tensor(codes.data, device=device)
    xn = torch.as_tensor(x_norms, dtype=torch.float64, device=device)
    for lo, hi, order in groups:
        in_group = (indices >= lo) & (indices < hi)
        _subtract_codes(
            E,
            torch.as_tensor(entry_rows[in_group], device=device),
            torch.as_tensor(indices[in_group], dtype=torch.int64, device=device),
            data[torch.as_tensor(np.flatnonzero(in_group), device=device)],
            Dt,
        )
        for batch in _batches(order, atom_batch_size, atom_ptr, atom_rows, atom_pos, device):
            _update_batch(E, Dt, data, *batch, xn, weight_floor, weighted, n_power_iter,
                          positive)
    D[:] = Dt.cpu().numpy()
    codes.data[:] = data.cpu().numpy()
    return E.cpu().numpy()


def _batches(order, atom_batch_size, atom_ptr, atom_rows, atom_pos, device):
    """Yield (atoms, entry rows, entry CSR positions, entry slots) per batch of `order`.

    The index lists are built on the host, where the CSR transpose is, and
    moved to `device` once per batch.
    """
    for start in range(0, order.shape[0], atom_batch_size):
        atoms = order[start:start + atom_batch_size]
        counts = atom_ptr[atoms + 1] - atom_ptr[atoms]
        slots = np.repeat(np.arange(atoms.shape[0]), counts)
        # Position of each entry in the CSR transpose: its atom's first entry
        # plus its rank among that atom's entries.
        first = np.repeat(atom_ptr[atoms] - np.cumsum(counts) + counts, counts)
        q = first + np.arange(slots.shape[0])
        yield tuple(
            torch.as_tensor(a, device=device) for a in (atoms, atom_rows[q], atom_pos[q], slots)
        )


def _update_batch(
    E, D, data, atoms, rows, pos, slots, x_norms, floor, weighted, n_power_iter, positive
):
    """Rank-1 updates of one batch of atoms from the same E; then correct E, D, data."""
    nb = atoms.shape[0]
    Eg = E[rows]
    coefs = data[pos]
    weights = _weights(Eg, x_norms[rows], floor) if weighted else torch.ones_like(coefs)
    D_old = D[atoms]
    V = D_old.clone()
    # An atom whose restricted residual vanishes keeps its direction and gets
    # zero coefficients, as in the numba kernel.
    frozen = torch.zeros(nb, dtype=torch.bool, device=E.device)
    for it in range(n_power_iter + 1):
        dv = (D_old * V).sum(1)
        u = (Eg * V[slots]).sum(1) + coefs * dv[slots]
        if positive:
            u = u.clamp(min=0)
        if it == n_power_iter:
            break
        wu = weights * u
        V_new = _slot_sums(slots, wu.unsqueeze(1) * Eg, nb)
        V_new += _slot_sums(slots, wu * coefs, nb).unsqueeze(1) * D_old
        norms = torch.linalg.vector_norm(V_new, dim=1)
        frozen |= norms <= 0
        V = torch.where(frozen.unsqueeze(1), D_old, V_new / norms.unsqueeze(1))
    u = torch.where(frozen[slots], torch.zeros_like(u), u)
    change = coefs.unsqueeze(1) * D_old[slots] - u.unsqueeze(1) * V[slots]
    E.index_put_((rows,), change, accumulate=True)
    D[atoms] = V
    data[pos] = u


def _weights(Eg, xr, floor):
    """Majorise-minimise weights of the entries' rows (see ``_rank1_atom``)."""
    e_norms = torch.linalg.vector_norm(Eg, dim=1).to(torch.float64)
    weights = torch.where(
        xr > 0, 1.0 / (xr * torch.maximum(e_norms, floor * xr)), torch.zeros_like(xr)
    )
    return weights.to(Eg.dtype)


def _slot_sums(slots, values, n_slots):
    """Sum `values` over the entries of each slot.

    ``index_put_`` with accumulation, not ``index_add_``, which is many times
    slower on the CPU for these short, repeated index lists.
    """
    out = torch.zeros((n_slots,) + values.shape[1:], dtype=values.dtype, device=values.device)
    return out.index_put_((slots,), values, accumulate=True)


def _subtract_codes(E, rows, cols, values, D):
    """``E[rows] -= values * D[cols]`` entry by entry, in slices of bounded memory."""
    step = max(1, _SUBTRACT_BYTES // (D.shape[1] * D.element_size()))
    for start in range(0, rows.shape[0], step):
        s = slice(start, start + step)
        E.index_put_((rows[s],), -values[s].unsqueeze(1) * D[cols[s]], accumulate=True)
