"""Training practice for SparseAutoencoder: batches, schedule, losses, statistics.

Imported only once torch is known to be installed (see ``skdict.sae``). X is
read in blocks of rows (``X[rows]``), so a memory map is never copied whole,
neither to host memory nor to the device.
"""

import numpy as np
import torch

from .model import SAEModule

# Rows read from X at once: a block is moved to the device and split into batches.
_BLOCK_BYTES = 64 * 2**20
# Rows used to estimate the input scale and the initial decoder bias.
_N_STATISTIC_ROWS = 2**14
_MAX_GRAD_NORM = 1.0
# Weiszfeld's distances are clamped here so that an iterate on a data point
# does not divide by zero.
_WEISZFELD_EPS = 1e-8


def block_rows(n_features, batch_size):
    """Rows per block: whole batches, about ``_BLOCK_BYTES`` of float32."""
    per_block = _BLOCK_BYTES // (4 * n_features)
    return max(1, per_block // batch_size) * batch_size


def to_device(X_rows, device, scale):
    """float32 tensor of scaled rows on `device`."""
    # torch wants writable memory: read-only memory-map slices are copied (one chunk)
    x = torch.from_numpy(np.require(X_rows, np.float32, ["C_CONTIGUOUS", "WRITEABLE"]))
    return x.to(device) / scale


def iter_blocks(X, rows, n_rows, device, scale):
    """Yield scaled device tensors of ``X[rows]``, `n_rows` rows at a time, in order."""
    for start in range(0, rows.size, n_rows):
        yield to_device(X[rows[start:start + n_rows]], device, scale)


def statistic_rows(X, rows, rng):
    """Up to ``_N_STATISTIC_ROWS`` of `rows` at random, in memory as float64."""
    if rows.size > _N_STATISTIC_ROWS:
        rows = np.sort(rng.choice(rows, _N_STATISTIC_ROWS, replace=False))
    return np.asarray(X[rows], dtype=np.float64)


def geometric_median(X, max_iter=200, tol=1e-7):
    """Point minimising the sum of Euclidean distances to the rows of X (Weiszfeld).

    Starts from the mean and stops when a step moves less than `tol` times the
    data's RMS distance to the mean.
    """
    X = np.asarray(X, dtype=np.float64)
    median = X.mean(axis=0)
    spread = np.sqrt(np.mean(np.sum((X - median) ** 2, axis=1)))
    for _ in range(max_iter):
        dist = np.maximum(np.linalg.norm(X - median, axis=1), _WEISZFELD_EPS)
        weights = 1.0 / dist
        new = weights @ X / weights.sum()
        moved = np.linalg.norm(new - median)
        median = new
        if moved <= tol * max(spread, _WEISZFELD_EPS):
            break
    return median


def lr_factor(step, total_steps, warmup_steps, decay_steps):
    """Linear warmup to 1 over `warmup_steps`, then 1, then linear decay to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps is not None and decay_steps > 0:
        return min(1.0, max(0.0, (total_steps - step) / decay_steps))
    return 1.0


class Trainer:
    """Adam on a :class:`SAEModule` with the SAE training practice.

    Parameters
    ----------
    module : SAEModule
        On its device.
    learning_rate : float
        Peak Adam learning rate.
    total_steps : int or None
        Planned optimiser steps (None: constant rate after warmup, for partial_fit).
    warmup_steps, decay_steps : int
        Linear learning-rate warmup at the start, linear decay at the end.
    sparsity_coef : float
        Weight of the activation's sparsity penalty (none for the TopK variants).
    sparsity_warmup_steps : int
        The penalty weight grows linearly from 0 over these steps.
    auxk_coef : float
        Weight of the AuxK loss, in which dead latents reconstruct the residual.
    dead_after : int
        A latent that has not fired for this many training rows is dead.
    """

    def __init__(self, module, *, learning_rate, total_steps, warmup_steps, decay_steps,
                 sparsity_coef, sparsity_warmup_steps, auxk_coef, dead_after):
        self.module = module
        self.optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_factor(step, total_steps, warmup_steps, decay_steps),
        )
        self.step_count = 0
        self.sparsity_coef = sparsity_coef
        self.sparsity_warmup_steps = sparsity_warmup_steps
        self.auxk_coef = auxk_coef
        self.dead_after = dead_after
        n_components, n_features = module.decoder_weight.shape
        self.k_aux = max(1, n_features // 2)
        device = module.decoder_weight.device
        self.rows_since_fired = torch.zeros(n_components, dtype=torch.int64, device=device)

    @property
    def dead(self):
        return self.rows_since_fired >= self.dead_after

    def dead_fraction(self):
        return float(self.dead.float().mean())

    def train_epoch(self, X, rows, batch_size, block_size, scale, rng):
        """One pass over ``X[rows]`` in random order; return summed statistics."""
        device = self.module.decoder_weight.device
        totals = _Totals(device)
        order = rng.permutation(rows)
        for start in range(0, order.size, block_size):
            block_rows_ = np.sort(order[start:start + block_size])
            block = to_device(X[block_rows_], device, scale)
            totals.add_rows(block)
            shuffle = torch.from_numpy(rng.permutation(block.shape[0])).to(device)
            for lo in range(0, block.shape[0], batch_size):
                self._step(block[shuffle[lo:lo + batch_size]], totals)
        return totals

    def _step(self, x, totals):
        module = self.module
        pre = module.preactivation(x)
        codes = module.activate(pre, training=True)
        residual = x - module.decode(codes)
        mse = residual.pow(2).sum(1).mean()
        loss = mse + self._sparsity_loss(pre, codes) + self._auxk_loss(pre, residual)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        module.project_decoder_grad()
        torch.nn.utils.clip_grad_norm_(module.parameters(), _MAX_GRAD_NORM)
        self.optimizer.step()
        self.schedule.step()
        module.apply_constraints()
        self.step_count += 1
        with torch.no_grad():
            self.rows_since_fired += x.shape[0]
            # != 0: a signed activation (AbsTopK) fires with negative codes too
            self.rows_since_fired[(codes != 0).any(0)] = 0
            totals.add_batch(mse * x.shape[0], loss)

    def _sparsity_loss(self, pre, codes):
        penalty = None if self.sparsity_coef == 0 else self.module.sparsity_loss(pre, codes)
        if penalty is None:
            return 0.0
        coef = self.sparsity_coef
        if self.step_count < self.sparsity_warmup_steps:
            coef *= (self.step_count + 1) / self.sparsity_warmup_steps
        return coef * penalty

    def _auxk_loss(self, pre, residual):
        """Dead latents' top ``k_aux`` reconstruct the (detached) residual.

        Normalised by the residual's energy, as in Gao et al. (2024). The top
        are chosen as the activation chooses (by magnitude for AbsTopK).
        """
        dead = torch.nonzero(self.dead).squeeze(1)
        if self.auxk_coef == 0 or dead.numel() == 0:
            return 0.0
        # top-k over the dead latents' columns only: cheap while few are dead
        kept = self.module.activation.keep_largest(pre[:, dead], min(self.k_aux, dead.numel()))
        aux_codes = torch.zeros_like(pre).index_copy(1, dead, kept)
        target = residual.detach()
        aux_error = (aux_codes @ self.module.decoder_weight - target).pow(2).sum(1).mean()
        energy = target.pow(2).sum(1).mean().clamp_min(1e-12)
        return self.auxk_coef * aux_error / energy


class _Totals:
    """Running sums over an epoch, kept on the device (no sync per step).

    Row statistics are added per block of rows, errors per batch, so that the
    bookkeeping costs two small operations per training step.
    """

    def __init__(self, device):
        self.n_rows = 0
        self.n_batches = 0
        self.loss = torch.zeros((), device=device, dtype=torch.float64)
        self.sse = torch.zeros((), device=device, dtype=torch.float64)
        self.sum = None
        self.sumsq = torch.zeros((), device=device, dtype=torch.float64)

    @torch.no_grad()
    def add_rows(self, x):
        x64 = x.double()
        self.n_rows += x.shape[0]
        self.sumsq += x64.pow(2).sum()
        row_sum = x64.sum(0)
        self.sum = row_sum if self.sum is None else self.sum + row_sum

    @torch.no_grad()
    def add_batch(self, sse, loss=None):
        self.sse += sse.detach()
        if loss is not None:
            self.n_batches += 1
            self.loss += loss.detach()

    def mean_loss(self):
        return float(self.loss) / max(self.n_batches, 1)

    def explained_variance(self):
        """``1 - SSE / total variance`` of the rows seen (scale-invariant)."""
        if self.sum is None:
            return float("nan")
        total = float(self.sumsq) - float(self.sum.pow(2).sum()) / self.n_rows
        return 1.0 - float(self.sse) / total if total > 0 else float("nan")


@torch.no_grad()
def evaluate(module, X, rows, n_rows, scale):
    """Explained variance of the module on ``X[rows]``, read block by block."""
    device = module.decoder_weight.device
    totals = _Totals(device)
    for x in iter_blocks(X, rows, n_rows, device, scale):
        totals.add_rows(x)
        totals.add_batch((x - module.decode(module.encode(x))).double().pow(2).sum())
    return totals.explained_variance()


def build_module(n_features, n_components, activation, seed):
    """A freshly initialised module on the CPU, seeded by `seed`."""
    generator = torch.Generator().manual_seed(int(seed))
    return SAEModule(n_features, n_components, activation, generator)
