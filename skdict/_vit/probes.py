"""Linear probes next to the class-embedding readout (behind ``linear_probe``).

Two probes (``probe``):

- ``"ridge"``, the authors' (``LinearProber.compute`` in their
  ``src/linear_probing/prober.py``): ridge regression (``alpha``, the lsqr
  solver) on the raw hidden states, with targets +1 for the true class and -1
  for every other class (one column per class of the head), predicting the
  class of largest output;
- ``"logistic"``: a multinomial logistic regression on standardised states.
"""

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Bunch

PROBES = ("ridge", "logistic")


def hidden_and_logits(proj, images):
    """Hidden states (N, layers, tokens, width) at the site and their projections."""
    x = proj._tensor(images)
    hidden, logits = [], []
    for _, states in proj._batches(x, (proj.site,)):
        h = states[proj.site]
        hidden.append(h.cpu().numpy())
        logits.append(proj._to_classes(h).cpu().numpy())
    return np.concatenate(hidden), np.concatenate(logits)


def _ridge_scores(train_states, y_train, test_states, n_classes, alpha):
    targets = -np.ones((len(y_train), n_classes))
    targets[np.arange(len(y_train)), y_train] = 1.0
    return Ridge(alpha=alpha, solver="lsqr").fit(train_states, targets).predict(test_states)


def _logistic_scores(train_states, y_train, test_states, n_classes, C, random_state):
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, max_iter=1000, random_state=random_state)
    ).fit(train_states, y_train)
    classes = probe[-1].classes_
    raw = probe.decision_function(test_states)
    if raw.ndim == 1:  # two classes seen: one score for classes[1]
        raw = np.stack([-raw, raw], axis=1)
    # classes absent from the training split can never be predicted
    scores = np.full((len(test_states), n_classes), -np.inf)
    scores[:, classes] = raw
    return scores


def probe_scores(probe, train_states, y_train, test_states, n_classes, *, alpha, C,
                 random_state):
    """Class scores (n_test, n_classes) of a `probe` fitted on the training states."""
    if probe == "ridge":
        return _ridge_scores(train_states, y_train, test_states, n_classes, alpha)
    return _logistic_scores(train_states, y_train, test_states, n_classes, C, random_state)


def readout_summary(r, has_cls, n_prefix):
    """Mean identifiability and top-1 share per layer of the class and image tokens.

    The image tokens are the patch tokens: the class token (and any register
    token) is not part of their average.
    """
    patches = r[:, :, n_prefix:]
    nan = np.full(r.shape[1], np.nan)
    return Bunch(
        cls=r[:, :, 0].mean(axis=0) if has_cls else nan,
        cls_accuracy=(r[:, :, 0] == 1.0).mean(axis=0) if has_cls else nan,
        image_tokens=patches.mean(axis=(0, 2)),
        image_tokens_accuracy=(patches == 1.0).mean(axis=(0, 2)),
    )
