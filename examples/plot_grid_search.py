"""
===================================================
Tuning a dictionary with GridSearchCV on its scores
===================================================

The scorers of :mod:`skdict.metrics` plug into scikit-learn's model selection.
Here a Pipeline normalises sklearn's handwritten digits (8x8 images, 64
features) and learns a :class:`~skdict.DoubleBatchKSVD` dictionary on them;
``GridSearchCV`` tries several sparsity levels and reports, for each, the
signal recovered on held-out folds and how well a small concept bank (the ten
mean digit images, named "0" to "9") describes the atoms.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from skdict import ConceptBank, DoubleBatchKSVD
from skdict.metrics import (
    make_faithfulness_scorer,
    make_specificity_scorer,
    reconstruction_scorer,
)

X, y = load_digits(return_X_y=True)

# %%
# A bank in the dictionary's space
# --------------------------------
# Scores are computed where the dictionary lives: after the Normalizer. The
# bank is therefore built from the normalised images: one concept per digit,
# its mean image. ``center=True`` (the default) removes the mean of the ten,
# so that a concept is what sets its digit apart from the others.
X_norm = Normalizer().fit_transform(X)
bank = ConceptBank(
    [str(d) for d in range(10)], [X_norm[y == d].mean(axis=0) for d in range(10)]
)

# %%
# The search
# ----------
# ``refit="rec"`` keeps the setting that reconstructs best; the other scores
# are recorded for each setting in ``cv_results_``.
pipe = Pipeline([
    ("norm", Normalizer()),
    ("ksvd", DoubleBatchKSVD(20, max_iter=5, random_state=0)),
])
search = GridSearchCV(
    pipe,
    {"ksvd__n_nonzero_coefs": [1, 2, 4, 8]},
    scoring={
        "rec": reconstruction_scorer,
        "faith": make_faithfulness_scorer(bank),
        "spec": make_specificity_scorer(bank),
    },
    refit="rec",
    cv=3,
).fit(X)
print("best:", search.best_params_)

# %%
# More atoms per image always reconstruct better; the description scores tell
# whether the atoms still mean something a digit name can capture. With ten
# names for twenty atoms, at most ten atoms can be the one their name
# retrieves: specificity cannot exceed 10 over the number of alive atoms (see
# the failure modes in the metrics guide).
k = np.array(search.cv_results_["param_ksvd__n_nonzero_coefs"], dtype=int)
fig, ax = plt.subplots(figsize=(6, 3.5))
for key, label in [("rec", "signal recovered"), ("faith", "faithfulness"),
                   ("spec", "specificity")]:
    mean = search.cv_results_[f"mean_test_{key}"]
    std = search.cv_results_[f"std_test_{key}"]
    ax.errorbar(k, mean, yerr=std, marker="o", capsize=3, label=label)
    print(label, np.round(mean, 3))
ax.set_xscale("log", base=2)
ax.set_xticks(k, k)
ax.set_xlabel("n_nonzero_coefs")
ax.set_ylabel("mean score over 3 folds")
ax.set_ylim(0, 1.05)
ax.legend()
ax.set_title("DoubleBatchKSVD on digits: reconstruction vs. description")
fig.tight_layout()
plt.show()
