"""The perturbation test, and identifiability under a perturbed forward pass.

The computations behind :func:`skdict.inspection.perturbation_test` and
:func:`skdict.inspection.perturbed_identifiability`.

Perturbation-test protocols (``protocol``):

- ``"authors"`` (their ``src/perturbation/explain_perturbation.py`` and the
  areas printed by ``plot_perturbation`` in ``src/plots/explainability.py``):
  keep n = 1, ..., n_patches - 1 patches; the random baseline is one
  permutation of the patches per seed, shared by all images, and its curve is
  the mean over the seeds; the area of a curve is
  ``sum(curve) / (max(curve) * n_patches)``.
- ``"fractions"``: keep a share of the patches (by default 10%, ..., 100%);
  the random baseline draws one order per image; the area is the trapezoid
  rule over the fractions, divided by their range.

In both, "negative" keeps the most relevant patches first and "positive" the
least relevant first (the authors' names, after the perturbation tests of
Chefer et al.: a "negative perturbation" removes the least relevant tokens).
"""

import contextlib

import numpy as np
from sklearn.utils import Bunch

from .class_analyses import (
    has_class_token, identifiability_per_image, ranks, summarise_identifiability,
)
from .hooks import OUTPUT
from .interventions import edited_attention, kept_patches

PROTOCOLS = ("authors", "fractions")


def kept_logits(proj, x, keep):
    """Class logits (N, n_classes) when only the patches `keep` (N, n_keep) enter the blocks."""
    keep = np.asarray(keep)
    parts = [
        states[OUTPUT].cpu().numpy()
        for _, states in proj._batches(
            x, (OUTPUT,), [],
            lambda rows: kept_patches(proj.model_, proj.num_prefix_tokens_, keep[rows]),
        )
    ]
    return np.concatenate(parts)


def _accuracy_curve(proj, x, y, ranked, n_kept):
    """Accuracy when each image keeps its first n patches of `ranked`, for each n."""
    return np.array([
        np.mean(kept_logits(proj, x, ranked[:, :n]).argmax(axis=1) == y) for n in n_kept
    ])


def _authors_area(curve, n_patches):
    """The authors' area of a perturbation curve: sum / (max * n_patches)."""
    return float(np.sum(curve) / (np.max(curve) * n_patches))


def check_fractions(fractions):
    fractions = np.linspace(0.1, 1.0, 10) if fractions is None else np.asarray(fractions, float)
    if fractions.ndim != 1 or len(fractions) < 2 or np.any(np.diff(fractions) <= 0) or (
        fractions[0] <= 0 or fractions[-1] > 1
    ):
        raise ValueError("fractions must be at least 2 increasing values in (0, 1].")
    return fractions


def perturbation_curves(proj, x, y, relevance, protocol, fractions, n_seeds, rng):
    """Accuracy curves and areas for the patch `relevance` (N, n_patches) under `protocol`."""
    order = np.argsort(-relevance, axis=1, kind="stable")  # most relevant first
    n, n_patches = order.shape
    if protocol == "authors":
        n_kept = np.arange(1, n_patches)
        random_orders = np.stack([rng.permutation(n_patches) for _ in range(n_seeds)])
        random = np.mean([_accuracy_curve(proj, x, y, np.tile(perm, (n, 1)), n_kept)
                          for perm in random_orders], axis=0)
        fractions = n_kept / n_patches

        def area(curve):
            return _authors_area(curve, n_patches)
    else:
        n_kept = np.maximum(1, np.round(fractions * n_patches)).astype(int)
        random_orders = np.argsort(rng.random_sample(order.shape), axis=1)
        random = _accuracy_curve(proj, x, y, random_orders, n_kept)

        def area(curve):
            return float(np.trapezoid(curve, fractions) / (fractions[-1] - fractions[0]))
    curves = {
        "negative": _accuracy_curve(proj, x, y, order, n_kept),
        "positive": _accuracy_curve(proj, x, y, order[:, ::-1], n_kept),
        "random": random,
    }
    result = Bunch(n_kept=n_kept, fractions=fractions, random_orders=random_orders, **curves)
    for name, curve in curves.items():
        result[f"auc_{name}"] = area(curve)
    return result


def _interventions(proj, attention, keep_index):
    """The `intervene` callable of a perturbed forward pass (None: no change)."""
    if attention is None and keep_index is None:
        return None
    has_cls = has_class_token(proj)

    @contextlib.contextmanager
    def intervene(rows):
        with contextlib.ExitStack() as stack:
            if attention is not None:
                stack.enter_context(edited_attention(proj.model_, attention, has_cls))
            if keep_index is not None:
                stack.enter_context(
                    kept_patches(proj.model_, proj.num_prefix_tokens_, keep_index[rows])
                )
            yield

    return intervene


def _groups(keep, n_images):
    """(image indices, kept patch indices or None) for images keeping as many patches."""
    if keep is None:
        return [(np.arange(n_images), None)]
    counts = keep.sum(axis=1)
    # stable: the kept patches of each image in the model's order
    order = np.argsort(~keep, axis=1, kind="stable")
    return [(rows, order[rows, :count])
            for count in np.unique(counts) for rows in [np.flatnonzero(counts == count)]]


def perturbed_identifiability(proj, x, y, attention, keep):
    """Accuracy and identifiability per layer under the perturbed forward pass.

    Images that keep different numbers of patches run in separate groups; the
    measures are per image first (over its remaining patches), then averaged
    over images.
    """
    n_classes = len(proj.classes_)
    per_image, correct = [], []
    for rows, keep_index in _groups(keep, len(y)):
        intervene = _interventions(proj, attention, keep_index)
        for batch, states in proj._batches(x[rows], (proj.site, OUTPUT), intervene=intervene):
            labels = y[rows[batch]]
            logits = proj._to_classes(states[proj.site]).cpu().numpy()
            r = 1.0 - ranks(logits, labels[:, None, None]) / n_classes
            per_image.append(identifiability_per_image(proj, r))
            correct.append(states[OUTPUT].argmax(dim=-1).cpu().numpy() == labels)
    result = summarise_identifiability(proj, Bunch(**{
        name: np.concatenate([part[name] for part in per_image]) for name in per_image[0]
    }))
    result.accuracy = float(np.concatenate(correct).mean())
    result.attention = attention
    result.n_kept = None if keep is None else keep.sum(axis=1)
    return result
