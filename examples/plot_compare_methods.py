"""
DB-KSVD, a sparse autoencoder and scikit-learn on the same data
===============================================================

Three ways to learn a sparse dictionary, given the same number of atoms and
the same number of non-zeros per code:

* :class:`~skdict.DoubleBatchKSVD` alternates batched orthogonal matching
  pursuit with K-SVD atom updates;
* :class:`~skdict.SparseAutoencoder` (TopK activation) learns an encoder and a
  decoder by gradient descent;
* scikit-learn's :class:`~sklearn.decomposition.MiniBatchDictionaryLearning`
  learns with an l1 penalty, then codes with OMP.

The data are sparse combinations of known atoms with non-negative
coefficients (TopK codes are non-negative, so this is the autoencoder's home
ground), and the scores are those of :mod:`skdict.metrics`.
"""

import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import MiniBatchDictionaryLearning

from skdict import DoubleBatchKSVD, SparseAutoencoder
from skdict.datasets import make_sparse_signals
from skdict.metrics import atom_recovery_rate, explained_variance, signal_recovered

X, true_atoms, _ = make_sparse_signals(6000, n_features=32, n_components=64,
                                       n_nonzero_coefs=4, nonnegative=True,
                                       dtype=np.float32, random_state=0)
n_atoms, k = 64, 4
methods = {
    "DoubleBatchKSVD": DoubleBatchKSVD(n_atoms, n_nonzero_coefs=k, max_iter=30,
                                       random_state=0),
    "SparseAutoencoder": SparseAutoencoder(n_atoms, activation="topk", k=k, max_iter=30,
                                           batch_size=256, learning_rate=3e-3,
                                           device="cpu", random_state=0),
    "MiniBatchDictionaryLearning": MiniBatchDictionaryLearning(
        n_atoms, transform_algorithm="omp", transform_n_nonzero_coefs=k, max_iter=30,
        random_state=0),
}

# %%
# Fit and score
# -------------
scores = {}
for name, estimator in methods.items():
    start = time.perf_counter()
    estimator.fit(X)
    seconds = time.perf_counter() - start
    X_hat = estimator.inverse_transform(estimator.transform(X))
    scores[name] = {
        "signal recovered": signal_recovered(X, X_hat),
        "explained variance": explained_variance(X, X_hat),
        "atom recovery": atom_recovery_rate(true_atoms, estimator.components_),
        "fit time (s)": seconds,
    }
    print(f"{name:<28}", "  ".join(f"{key} {value:.3f}" for key, value in scores[name].items()))

# %%
# The three scores side by side
# -----------------------------
keys = ["signal recovered", "explained variance", "atom recovery"]
fig, ax = plt.subplots(figsize=(6, 3))
width = 0.27
for i, name in enumerate(methods):
    ax.bar(np.arange(len(keys)) + (i - 1) * width, [scores[name][key] for key in keys],
           width, label=name)
ax.set_xticks(np.arange(len(keys)), keys)
ax.set_ylim(0, 1.05)
ax.legend(fontsize="small", loc="lower left")
fig.tight_layout()

# %%
# How close is each true atom to the nearest learned one?
# -------------------------------------------------------
fig, ax = plt.subplots(figsize=(6, 3))
for name, estimator in methods.items():
    D = estimator.components_ / np.linalg.norm(estimator.components_, axis=1, keepdims=True)
    best = np.sort(np.abs(true_atoms @ D.T).max(axis=1))[::-1]
    ax.plot(best, label=name)
ax.set_xlabel("true atoms, best matched first")
ax.set_ylabel("max |cos|")
ax.legend(fontsize="small")
fig.tight_layout()
