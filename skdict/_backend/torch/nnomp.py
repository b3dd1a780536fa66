"""Non-negative OMP of :mod:`skdict._backend.numba.nnomp` on torch tensors (CPU or CUDA).

The same algorithm, each step on a whole chunk of rows at once: every active
row adds its atom of largest positive correlation, then Lawson & Hanson's NNLS
runs on all rows' supports together, as batched (rows, k, k) Cholesky solves
whose non-passive slots hold the identity; rows leave the loop as they finish.
The correlations are recomputed from ``alpha0`` after each step by one batched
product with the support's Gram rows.
"""

from ..._optional import import_optional
from .pursuit import TorchCoder

torch = import_optional("torch", "torch", "backend='torch'")


def _with_sink(matrix, rows, cols):
    """`matrix` padded by zero rows and columns up to (rows, cols): unused support
    slots point at the padding."""
    out = torch.zeros((rows, cols), dtype=matrix.dtype, device=matrix.device)
    out[:matrix.shape[0], :matrix.shape[1]] = matrix
    return out


def _solve_passive(Gs, b, passive):
    """Least squares on each row's passive slots (0 elsewhere), and whether it factorised."""
    both = passive.unsqueeze(2) & passive.unsqueeze(1)
    eye = torch.eye(Gs.shape[1], dtype=Gs.dtype, device=Gs.device).expand_as(Gs)
    factor, info = torch.linalg.cholesky_ex(torch.where(both, Gs, eye))
    rhs = torch.where(passive, b, torch.zeros_like(b)).unsqueeze(2)
    z = torch.cholesky_solve(rhs, factor).squeeze(2)
    return torch.where(passive, z, torch.zeros_like(z)), info == 0


def _nnls(Gs, b, passive, a, valid, todo, gtol):
    """Lawson-Hanson NNLS on the supports of the rows in `todo`, from the feasible `a`.

    `Gs` (rows, k, k) and `b` (rows, k) are the Gram matrix and the correlations
    on each row's support slots; `valid` marks the slots in use. Updates `a` and
    `passive` in place.
    """
    slots = torch.arange(Gs.shape[1], device=Gs.device)
    for _ in range(3 * Gs.shape[1] + 3):
        if not bool(todo.any()):
            return
        z, factorised = _solve_passive(Gs, b, passive)
        todo &= factorised
        negative = passive & (z <= 0) & todo.unsqueeze(1)
        blocked = negative.any(1)
        gap = a - z
        ratio = torch.where(gap > 0, a / torch.where(gap > 0, gap, torch.ones_like(gap)),
                            torch.zeros_like(gap))
        step, blocking = torch.where(negative, ratio, torch.full_like(ratio, 2.0)).min(1)
        moved = a + step.unsqueeze(1) * (z - a)
        leave = passive & ((moved <= 0) | (slots == blocking.unsqueeze(1)))
        shrink = blocked.unsqueeze(1) & passive
        a.copy_(torch.where(shrink, torch.where(leave, torch.zeros_like(a), moved), a))
        passive &= ~(blocked.unsqueeze(1) & leave)
        solved = todo & ~blocked
        a.copy_(torch.where(solved.unsqueeze(1),
                            torch.where(passive, z, torch.zeros_like(z)), a))
        gradient = b - (Gs @ a.unsqueeze(2)).squeeze(2)
        candidate = solved.unsqueeze(1) & valid & ~passive
        best, enter = torch.where(candidate, gradient, torch.full_like(gradient, -1.0)).max(1)
        enters = solved & (best > gtol)
        passive[enters, enter[enters]] = True
        todo &= blocked | enters


def nnomp(alpha0, gram, x2, kmax, thresh2, dep_tol):
    """Batched NN-OMP of one chunk; return (indices, values, counts) as tensors.

    The arguments are those of :func:`skdict._backend.torch.pursuit.omp`.
    """
    n, K = alpha0.shape
    device, dtype = alpha0.device, alpha0.dtype
    rows = torch.arange(n, device=device)
    slots = torch.arange(kmax, device=device)
    gram_sink = _with_sink(gram, K + 1, K + 1)
    alpha0_sink = _with_sink(alpha0, n, K + 1)
    c_sink = alpha0_sink.clone()
    support = torch.full((n, kmax), K, dtype=torch.int64, device=device)
    a = torch.zeros((n, kmax), dtype=torch.float64, device=device)
    passive = torch.zeros((n, kmax), dtype=torch.bool, device=device)
    t = torch.zeros(n, dtype=torch.int64, device=device)
    gtol = dep_tol * torch.sqrt(x2)
    active = x2 > 0
    while bool(active.any()):
        best, j = c_sink[:, :K].max(1)
        active &= best.to(torch.float64) > gtol
        slot = t.clamp(max=kmax - 1)
        support[rows, slot] = torch.where(active, j, support[rows, slot])
        passive[rows, slot] |= active
        t += active.to(torch.int64)
        Gs = gram_sink[support.unsqueeze(2), support.unsqueeze(1)].to(torch.float64)
        b = alpha0_sink.gather(1, support).to(torch.float64)
        _nnls(Gs, b, passive, a, slots < t.unsqueeze(1), active.clone(), gtol)
        c_sink = alpha0_sink - torch.bmm(a.to(dtype).unsqueeze(1), gram_sink[support]).squeeze(1)
        # Support atoms are no candidates; the sink column stays zero.
        c_sink.scatter_(1, support, 0)
        err2 = x2 - (a * b).sum(1)
        active &= (t < kmax) & (err2 > thresh2 * x2)
    # Compact the non-zero coefficients to the front, in support order.
    order = torch.argsort((~passive).to(torch.int8), dim=1, stable=True)
    indices = support.gather(1, order)
    values = torch.where(passive, a, torch.zeros_like(a)).gather(1, order)
    counts = passive.sum(1)
    indices = torch.where(slots < counts.unsqueeze(1), indices, torch.zeros_like(indices))
    return indices, values.to(dtype), counts


class TorchNNOMPCoder(TorchCoder):
    """Runs the torch NN-OMP for a dictionary held on one device (parameters as
    :class:`~skdict._backend.torch.pursuit.TorchCoder`)."""

    def support(self, X, algorithm, kmax, thresh2, dep_tol):
        """Code the rows of a numpy chunk (`algorithm` is "omp"); return numpy
        (indices, values, counts)."""
        Xt = torch.tensor(X, device=self.device)
        alpha0 = Xt @ self.dictionary.T
        x2 = (Xt.to(torch.float64) ** 2).sum(1)
        with torch.no_grad():
            idx, values, counts = nnomp(alpha0, self.gram, x2, kmax, thresh2, dep_tol)
        return (
            idx.to(torch.int32).cpu().numpy(),
            values.cpu().numpy(),
            counts.cpu().numpy(),
        )
