"""
Matryoshka dictionaries with nested groups
==========================================

With ``nested_groups=(8, 24, 64)``, :class:`~skdict.DoubleBatchKSVD` learns
atoms in groups of growing size: the first 8 atoms code the data on their own,
the next 16 code what the first group left, and so on. Every prefix of the
dictionary is then a good small dictionary, coarse concepts first and finer
ones after, like Matryoshka sparse autoencoders. A plain fit spreads
information over all atoms, so its small prefixes are worse; the price of
nesting is a worse full dictionary, since later groups only see residuals.
"""

import matplotlib.pyplot as plt
import numpy as np

from skdict import DoubleBatchKSVD, sparse_encode
from skdict.datasets import make_sparse_signals
from skdict.metrics import signal_recovered

X, _, _ = make_sparse_signals(2000, n_features=32, n_components=64, n_nonzero_coefs=4,
                              random_state=0)
groups = (8, 24, 64)
nested = DoubleBatchKSVD(64, n_nonzero_coefs=6, nested_groups=groups, max_iter=30,
                         random_state=0).fit(X)
plain = DoubleBatchKSVD(64, n_nonzero_coefs=6, max_iter=30, random_state=0).fit(X)

# %%
# Signal recovered by each prefix
# -------------------------------
# Each prefix of the first ``m`` atoms codes the data on its own with up to 6
# non-zeros (fewer when the prefix is smaller).
prefixes = [4, 8, 16, 24, 40, 64]


def prefix_scores(model):
    scores = []
    for m in prefixes:
        D = model.components_[:m]
        codes = sparse_encode(X, D, n_nonzero_coefs=min(6, m))
        scores.append(signal_recovered(X, codes @ D))
    return scores


scores = {"nested_groups=(8, 24, 64)": prefix_scores(nested), "plain": prefix_scores(plain)}
for name, values in scores.items():
    print(f"{name:<26}", " ".join(f"{v:.3f}" for v in values))

fig, ax = plt.subplots(figsize=(5, 3))
for name, values in scores.items():
    ax.plot(prefixes, values, marker="o", label=name)
for g in groups[:-1]:
    ax.axvline(g, color="gray", lw=0.5, ls="--")
ax.set_xlabel("atoms in the prefix")
ax.set_ylabel("signal recovered")
ax.legend()
fig.tight_layout()
