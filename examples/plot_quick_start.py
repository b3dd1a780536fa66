"""
Quick start: learn a sparse dictionary with DoubleBatchKSVD
===========================================================

Signals made of 3 out of 50 hidden atoms, plus noise, are given to
:class:`~skdict.DoubleBatchKSVD`. It learns 50 unit-norm atoms such that every
signal is approximated by at most 3 of them, finds most of the hidden atoms,
and plugs into scikit-learn like any transformer.
"""

# %%
# Data with a known dictionary
# ----------------------------
# :func:`~skdict.datasets.make_sparse_signals` draws the synthetic data of the
# K-SVD paper: a random 20 x 50 dictionary, 1500 signals of 3 atoms each, and
# white noise at 20 dB.
import matplotlib.pyplot as plt
import numpy as np

from skdict import DoubleBatchKSVD
from skdict.datasets import make_sparse_signals
from skdict.metrics import atom_recovery_rate, signal_recovered

X, true_atoms, true_codes = make_sparse_signals(random_state=0)
print(X.shape, true_atoms.shape)

# %%
# Fit and encode
# --------------
ksvd = DoubleBatchKSVD(n_components=50, n_nonzero_coefs=3, max_iter=40, random_state=0)
codes = ksvd.fit_transform(X)
print("non-zeros per row:", np.count_nonzero(codes, axis=1).max())
print(f"signal recovered: {signal_recovered(X, ksvd.inverse_transform(codes)):.3f}")
print(f"true atoms found: {atom_recovery_rate(true_atoms, ksvd.components_):.0%}")

# %%
# ``error_`` holds the signal recovered after each iteration.
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(np.arange(1, ksvd.n_iter_ + 1), ksvd.error_)
ax.set_xlabel("iteration")
ax.set_ylabel("signal recovered")
fig.tight_layout()

# %%
# How close is each learned atom to a true one?
# ---------------------------------------------
# The largest ``|cos|`` between each true atom and the learned atoms: found
# atoms sit at 1.
best = np.abs(true_atoms @ ksvd.components_.T).max(axis=1)
fig, ax = plt.subplots(figsize=(5, 3))
ax.hist(best, bins=20, range=(0.5, 1.0))
ax.set_xlabel("max |cos| with a learned atom")
ax.set_ylabel("true atoms")
fig.tight_layout()

# %%
# A scikit-learn transformer
# --------------------------
# The codes feed any estimator; here a pipeline predicts whether a signal uses
# true atom 0 from its learned sparse code.
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

uses_atom_0 = true_codes[:, 0].toarray().ravel() != 0
pipe = make_pipeline(
    DoubleBatchKSVD(50, n_nonzero_coefs=3, max_iter=20, random_state=0),
    LogisticRegression(max_iter=1000),
)
print(f"accuracy: {cross_val_score(pipe, X, uses_atom_0, cv=3).mean():.3f}")
