"""The measures of Vilas, Schaumlöffel & Roig (NeurIPS 2023) on a fitted projector.

The computations behind :meth:`ClassEmbeddingProjector.identifiability` and
:func:`skdict.inspection.class_similarity_change`, and the rules the other
analyses share (``memories``, ``probes``, ``perturbation``), following the
definitions of the paper's code (github.com/martinagvilas/vit-cls_emb).

Two rules hold throughout:

- **Ties count against the true class.** The rank of class c among scores s is
  the number of *other* classes scoring at least s_c, so a class is on top
  (rank 0) only when it beats every other class strictly. A readout that cannot
  tell classes apart (all scores equal) ranks the true class last, never first.
  The paper's code leaves ties to the order of ``torch.argsort``.
- **Baselines are paired.** Given ``baseline=`` (a projector of the same
  architecture with random weights), an analysis also runs on the baseline and
  returns, per layer, the one-sided Wilcoxon signed-rank p-value
  (``scipy.stats.wilcoxon(trained, baseline, alternative="greater")``) over the
  pairs the paper pairs: tokens for identifiability (by group, and all tokens
  pooled as the authors' one test), classes for the class-value and key-value
  agreement, images for the class-similarity change.
"""

import numpy as np
from scipy.stats import wilcoxon
from sklearn.utils import Bunch

from .hooks import check_sites


def check_labels(y, n_images, n_classes, name="y"):
    """`y` as an int array of class indices, or a clear error."""
    y = np.asarray(y)
    if y.shape != (n_images,) or y.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must be an int array of shape ({n_images},) with one class index "
            f"per image, got dtype {y.dtype} and shape {y.shape}."
        )
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name} must hold class indices in [0, {n_classes - 1}].")
    return y


def ranks(scores, labels):
    """0-based rank of class ``labels`` in ``scores`` along the last axis (0 = top).

    ``labels`` broadcasts against ``scores.shape[:-1]``. Ties count against the
    class: its rank is the number of other classes scoring at least as high.
    """
    target = np.take_along_axis(scores, labels[..., None], axis=-1)
    return (scores >= target).sum(axis=-1) - 1


def paired_wilcoxon(trained, baseline):
    """One-sided p-value that `trained` exceeds `baseline`, pair by pair.

    Pairs with a NaN on either side (e.g. a class absent from the images) are
    dropped. With no pair differing, there is no evidence either way: p = 1.
    """
    trained, baseline = np.ravel(trained), np.ravel(baseline)
    keep = ~(np.isnan(trained) | np.isnan(baseline))
    diff = trained[keep] - baseline[keep]
    if not np.any(diff != 0):
        return 1.0
    return float(wilcoxon(diff, alternative="greater").pvalue)


def check_baseline(proj, baseline):
    """A fitted baseline projector comparable with `proj`, or a clear error."""
    # projection imports this module (through skdict.inspection): import late
    from ..projection import ClassEmbeddingProjector

    if not isinstance(baseline, ClassEmbeddingProjector):
        raise TypeError(
            "baseline must be a ClassEmbeddingProjector of the same architecture with "
            f"random weights, e.g. ClassEmbeddingProjector(make_digits_vit()); got "
            f"{type(baseline).__name__}."
        )
    if not hasattr(baseline, "model_"):
        baseline = baseline.fit()
    same = (
        len(baseline.classes_) == len(proj.classes_)
        and baseline.layers_ == proj.layers_
        and baseline.num_prefix_tokens_ == proj.num_prefix_tokens_
        and baseline.grid_size_ == proj.grid_size_
    )
    if not same:
        raise ValueError(
            "baseline must have the same classes, selected layers and tokens as the "
            "projector it is compared with (the same architecture, random weights)."
        )
    for name in ("site", "tokens", "layer_scale"):
        if getattr(baseline, name) != getattr(proj, name):
            raise ValueError(
                f"baseline reads {name}={getattr(baseline, name)!r} but the projector "
                f"{name}={getattr(proj, name)!r}; give both the same {name}."
            )
    return baseline


def per_layer_pvalues(trained, baseline):
    """Wilcoxon p-values per layer for arrays of shape (n_pairs, n_layers)."""
    return np.array([paired_wilcoxon(trained[:, i], baseline[:, i])
                     for i in range(trained.shape[1])])


# -- identifiability (the authors' plots/class_ident.py) --------------------


def _token_identifiability(proj, images, y):
    """r = 1 - rank / n_classes per image, layer and token, at the projector's site."""
    logits = proj._logits(images, (proj.site,))[proj.site]
    y = check_labels(y, len(logits), len(proj.classes_))
    return 1.0 - ranks(logits, y[:, None, None]) / len(proj.classes_)


def has_class_token(proj):
    return getattr(proj.model_, "cls_token", None) is not None


def identifiability_per_image(proj, r):
    """Per image and layer (N, n_layers): the measures of identifiability.

    `r` (N, n_layers, n_tokens) holds each token's identifiability, prefix
    tokens first. Averaged over images, these are the curves that
    :meth:`ClassEmbeddingProjector.identifiability` returns.
    """
    patches = r[:, :, proj.num_prefix_tokens_:]
    top1 = patches == 1.0
    return Bunch(
        cls=r[:, :, 0] if has_class_token(proj) else np.full(r.shape[:2], np.nan),
        image_tokens=patches.mean(axis=2),
        top1_share=top1.mean(axis=2),
        top1_image_share=top1.any(axis=2).astype(float),
    )


def summarise_identifiability(proj, per_image):
    """The mean over images of each measure of `identifiability_per_image`."""
    result = Bunch(**{name: values.mean(axis=0) for name, values in per_image.items()})
    result.layers = np.array(proj.layers_)
    return result


def _token_pairs(r, tokens):
    """(N * n_tokens, n_layers): the `tokens` of every image, one token per row."""
    return r[:, :, tokens].transpose(0, 2, 1).reshape(-1, r.shape[1])


def identifiability(proj, images, y, *, baseline=None):
    """Class identifiability of the class token and the image tokens per layer.

    See :meth:`ClassEmbeddingProjector.identifiability`.
    """
    r = _token_identifiability(proj, images, y)
    result = summarise_identifiability(proj, identifiability_per_image(proj, r))
    if baseline is None:
        return result
    baseline = check_baseline(proj, baseline)
    r_base = _token_identifiability(baseline, images, y)
    result.baseline = summarise_identifiability(
        baseline, identifiability_per_image(baseline, r_base)
    )
    has_cls, patches = has_class_token(proj), list(range(proj.num_prefix_tokens_, r.shape[2]))
    groups = {"cls": [0] if has_cls else [], "image_tokens": patches,
              "all_tokens": ([0] if has_cls else []) + patches}
    result.pvalue = Bunch(**{
        name: (per_layer_pvalues(_token_pairs(r, tokens), _token_pairs(r_base, tokens))
               if tokens else np.full(r.shape[1], np.nan))
        for name, tokens in groups.items()
    })
    return result


# -- class-similarity change (the authors' plots/mech_interp.py) ------------


def change_per_image(proj, images, y, reference):
    """Per image and layer, the share of tokens whose true-class logit each branch raises.

    ``"block"``: the share whose true-class logit is higher at the block
    output than at its input (the authors' ``get_ident_change_rate``).
    """
    sites = ("input", "attn", "mlp", "resid") + (
        ("mlp_in",) if reference == "branch_input" else ()
    )
    check_sites(proj.model_.blocks[0], sites)
    x = proj._tensor(images)
    y = check_labels(y, len(x), len(proj.classes_))
    tokens = proj._token_slice(proj.tokens)
    rates = {"attn": [], "mlp": [], "block": []}
    for rows, hidden in proj._batches(x, sites):
        labels = y[rows][:, None, None, None]
        target = {
            site: np.take_along_axis(
                proj._to_classes(h[:, :, tokens]).cpu().numpy(), labels, axis=-1
            )[..., 0]
            for site, h in hidden.items()
        }
        mlp_reference = target["mlp_in" if reference == "branch_input" else "input"]
        rates["attn"].append((target["attn"] > target["input"]).mean(axis=2))
        rates["mlp"].append((target["mlp"] > mlp_reference).mean(axis=2))
        rates["block"].append((target["resid"] > target["input"]).mean(axis=2))
    return {branch: np.concatenate(parts) for branch, parts in rates.items()}
