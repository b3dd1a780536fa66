"""Batched greedy pursuits on the Gram matrix, on torch tensors (CPU or CUDA).

The same algorithms as the numba kernels in :mod:`skdict._backend.numba.omp` and
:mod:`~skdict._backend.numba.mp`, written as operations on a whole chunk of rows at
once so that they map onto GPU kernels: each step picks one atom per row, and the
correlations of every row with every atom are updated by one batched matrix
product. (The numba OMP computes a few steps at a time, on predicted atoms that
it then checks; here a step is one batched product over the chunk already, so
the codes are the same without that.)

OMP keeps, per row, ``U = L⁻¹ G[support, :]`` with ``L`` the Cholesky factor of
``G[support, support]`` (see the numba module for why): a step gathers the
column ``U[:, j]`` (the new row of ``L``), forms the new row of ``U`` as
``G[j, :] - U[:, j]ᵀ U`` (one batched matrix-vector product), and lowers the
correlations by ``v_t U[t, :]``. ``L`` and ``v = L⁻¹ alpha0[support]`` are held in
float64, and the coefficients come from one batched triangular solve at the end.

Rows advance independently: a row whose best atom is linearly dependent on its
support drops that atom for the step and does not advance, and finished rows
are masked out, exactly as the numba kernels do row by row. Unused slots of
``L`` hold the identity and unused slots of ``v`` zero, so that the final solve
gives zero coefficients there without per-row slicing.
"""

from ..._optional import import_optional
from ..._rows import rows_per_buffer

torch = import_optional("torch", "torch", "backend='torch'")

# Bytes of the per-chunk state (correlations and OMP's U, ~(k + 2) x n_atoms
# floats per row): small on the CPU where it should stay in cache-friendly
# sizes, larger on a GPU where bigger batches keep the device busy.
_CHUNK_BYTES = {"cpu": 64 * 2**20, "cuda": 1024 * 2**20}


def chunk_rows(n_atoms, n_nonzero_coefs, itemsize, device):
    """Rows per chunk so that the chunk's pursuit state fits the device budget."""
    budget = _CHUNK_BYTES.get(device.type, _CHUNK_BYTES["cpu"])
    return rows_per_buffer((n_nonzero_coefs + 2) * n_atoms, itemsize, budget, low=16)


def _first_argmax_abs(c):
    """Per row, the first index of the largest ``|c|``, and that largest ``|c|``.

    ``torch.max`` and ``torch.min`` over a dimension return the first extremal
    index on CPU and CUDA; the first of the two that reaches the largest
    magnitude is the numba kernels' tie-breaking. Two reductions read ``c``
    twice, where ``|c|`` would also write a temporary of its size.
    """
    hi, j_hi = torch.max(c, dim=1)
    lo, j_lo = torch.min(c, dim=1)
    use_lo = (-lo > hi) | ((-lo == hi) & (j_lo < j_hi))
    return torch.where(use_lo, j_lo, j_hi), torch.where(use_lo, -lo, hi)


def _with_sink(alpha0):
    """A copy of `alpha0` with one extra zero column, and the view without it.

    Scattering zeros through index lists whose unused entries point at the
    extra column clears chosen atoms without masks of size (n, n_atoms).
    """
    n, K = alpha0.shape
    c_sink = torch.zeros((n, K + 1), dtype=alpha0.dtype, device=alpha0.device)
    c_sink[:, :K] = alpha0
    return c_sink, c_sink[:, :K]


def _solve_upper_t(L, v):
    """Solve ``Lᵀ g = v`` for every row's lower-triangular ``L``."""
    return torch.linalg.solve_triangular(
        L.transpose(1, 2), v.unsqueeze(2), upper=True
    ).squeeze(2)


def omp(alpha0, gram, x2, kmax, thresh2, dep_tol):
    """Batched OMP of one chunk; return (indices, values, counts) as tensors.

    Parameters
    ----------
    alpha0 : tensor of shape (n, n_atoms)
        Correlations ``X_chunk Dᵀ``.
    gram : tensor of shape (n_atoms, n_atoms)
        ``D Dᵀ``, same dtype and device as `alpha0`.
    x2 : float64 tensor of shape (n,)
        Squared norms of the rows.
    kmax : int
        Maximum support size.
    thresh2 : float
        Stop a row once its squared relative residual is at most this.
    dep_tol : float
        Atoms whose squared distance to the span of the support is below this
        share of their squared norm are treated as dependent.
    """
    n, K = alpha0.shape
    device, dtype = alpha0.device, alpha0.dtype
    rows = torch.arange(n, device=device)
    diag = torch.diagonal(gram).to(torch.float64)
    c_sink, c = _with_sink(alpha0)
    U = torch.zeros((n, kmax, K), dtype=dtype, device=device)
    L = torch.eye(kmax, dtype=torch.float64, device=device).repeat(n, 1, 1)
    v = torch.zeros((n, kmax), dtype=torch.float64, device=device)
    idx = torch.full((n, kmax), K, dtype=torch.int64, device=device)
    t = torch.zeros(n, dtype=torch.int64, device=device)
    err2 = x2.clone()
    active = x2 > 0
    n_steps = 0
    while bool(active.any()):
        n_steps += 1
        width = min(n_steps, kmax)
        j, best = _first_argmax_abs(c)
        active &= best > 0
        w = U[rows, :width, j]
        w64 = w.to(torch.float64)
        d = diag[j] - (w64 * w64).sum(1)
        independent = d > dep_tol * diag[j]
        accept = active & independent
        # A dependent atom is dropped for this step only, as in the numba kernel.
        reject = active & ~independent
        cj = c[rows, j]
        c[rows, j] = torch.where(reject, torch.zeros_like(cj), cj)
        ltt = torch.sqrt(torch.where(accept, d, torch.ones_like(d)))
        vt = torch.where(accept, cj.to(torch.float64) / ltt, torch.zeros_like(d))
        new_u = torch.baddbmm(
            gram.index_select(0, j).unsqueeze(1), w.unsqueeze(1), U[:, :width], alpha=-1
        ).squeeze(1)
        # Rows that do not accept an atom get a zero row: written to their
        # unused slot it keeps ``U[:, j]`` zero beyond the support. (Rows with a
        # full support overwrite their last slot, but never read U again.)
        new_u *= torch.where(accept, 1.0 / ltt, torch.zeros_like(ltt)).to(dtype).unsqueeze(1)
        c.addcmul_(vt.to(dtype).unsqueeze(1), new_u, value=-1)
        slot = t.clamp(max=kmax - 1)
        U[rows, slot] = new_u
        L_row = torch.zeros((n, kmax), dtype=torch.float64, device=device)
        L_row[:, :width] = w64
        L_row[rows, slot] = ltt
        L[rows, slot] = torch.where(accept.unsqueeze(1), L_row, L[rows, slot])
        v[rows, slot] = torch.where(accept, vt, v[rows, slot])
        idx[rows, slot] = torch.where(accept, j, idx[rows, slot])
        t += accept.to(torch.int64)
        # The residual is orthogonal to the support; clear round-off so that no
        # chosen atom is picked twice. Unused slots point at the sink column.
        c_sink.scatter_(1, idx[:, :width], 0)
        err2 -= vt * vt
        active &= (t < kmax) & ~(accept & (err2 <= thresh2 * x2))
    values = _solve_upper_t(L, v).to(dtype)
    return idx.masked_fill_(idx == K, 0), values, t


def mp(alpha0, gram, x2, kmax, thresh2, dep_tol):
    """Batched matching pursuit with least-squares refit; same arguments as :func:`omp`."""
    n, K = alpha0.shape
    device = alpha0.device
    rows = torch.arange(n, device=device)
    diag = torch.diagonal(gram)
    c = alpha0.clone()
    # Unused slots hold K, which no atom index equals.
    support = torch.full((n, kmax), K, dtype=torch.int64, device=device)
    n_support = torch.zeros(n, dtype=torch.int64, device=device)
    err2 = x2.clone()
    active = x2 > 0
    for _ in range(kmax):
        if not bool(active.any()):
            break
        j, best = _first_argmax_abs(c)
        active &= best > 0
        cj = c[rows, j]
        a = torch.where(active, cj / diag[j], torch.zeros_like(cj))
        err2 -= a.to(torch.float64) * cj.to(torch.float64)
        c.addcmul_(a.unsqueeze(1), gram.index_select(0, j), value=-1)
        new = active & ~(support == j.unsqueeze(1)).any(1)
        slot = n_support.clamp(max=kmax - 1)
        support[rows, slot] = torch.where(new, j, support[rows, slot])
        n_support += new.to(torch.int64)
        active &= err2 > thresh2 * x2
    return _refit(alpha0, gram, support.clamp_(max=K - 1), n_support, dep_tol)


def _refit(alpha0, gram, support, n_support, dep_tol):
    """Least-squares coefficients on each row's support, in support order.

    Builds the Cholesky factor of ``G[support, support]`` one atom at a time,
    dropping atoms dependent on the ones kept before them, like the numba
    kernel's ``_cholesky_refit``; kept atoms are compacted to the front.
    """
    n, kmax = support.shape
    device = alpha0.device
    rows = torch.arange(n, device=device)
    gram64_diag = torch.diagonal(gram).to(torch.float64)
    L = torch.eye(kmax, dtype=torch.float64, device=device).repeat(n, 1, 1)
    kept = torch.zeros_like(support)
    t = torch.zeros(n, dtype=torch.int64, device=device)
    positions = torch.arange(kmax, device=device)
    for p in range(kmax):
        j = support[:, p]
        in_support = p < n_support
        # G[kept atoms, j], zero beyond each row's kept count.
        g = gram[kept, j.unsqueeze(1)].to(torch.float64)
        g = torch.where(positions < t.unsqueeze(1), g, torch.zeros_like(g))
        w = torch.linalg.solve_triangular(L, g.unsqueeze(2), upper=False).squeeze(2)
        d = gram64_diag[j] - (w * w).sum(1)
        accept = in_support & (d > dep_tol * gram64_diag[j])
        slot = t.clamp(max=kmax - 1)
        new_row = w.clone()
        new_row[rows, slot] = torch.sqrt(torch.where(accept, d, torch.ones_like(d)))
        L[rows, slot] = torch.where(accept.unsqueeze(1), new_row, L[rows, slot])
        kept[rows, slot] = torch.where(accept, j, kept[rows, slot])
        t += accept.to(torch.int64)
    rhs = alpha0.gather(1, kept).to(torch.float64)
    rhs = torch.where(positions < t.unsqueeze(1), rhs, torch.zeros_like(rhs))
    y = torch.linalg.solve_triangular(L, rhs.unsqueeze(2), upper=False).squeeze(2)
    return kept, _solve_upper_t(L, y).to(alpha0.dtype), t


_KERNELS = {"omp": omp, "mp": mp}


class TorchCoder:
    """Runs the torch pursuits for a dictionary held on one device.

    Parameters
    ----------
    dictionary : ndarray of shape (n_atoms, n_features)
    gram : ndarray of shape (n_atoms, n_atoms) or None
        Computed on the device when None.
    device : torch.device
    """

    def __init__(self, dictionary, gram, device):
        self.device = device
        self.dictionary = torch.tensor(dictionary, device=device)
        if gram is None:
            self.gram = self.dictionary @ self.dictionary.T
        else:
            self.gram = torch.tensor(gram, device=device)

    def support(self, X, algorithm, kmax, thresh2, dep_tol):
        """Code the rows of a numpy chunk; return numpy (indices, values, counts)."""
        Xt = torch.tensor(X, device=self.device)
        alpha0 = Xt @ self.dictionary.T
        x2 = (Xt.to(torch.float64) ** 2).sum(1)
        with torch.no_grad():
            idx, values, counts = _KERNELS[algorithm](
                alpha0, self.gram, x2, kmax, thresh2, dep_tol
            )
        return (
            idx.to(torch.int32).cpu().numpy(),
            values.cpu().numpy(),
            counts.cpu().numpy(),
        )
