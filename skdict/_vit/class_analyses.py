"""The measures of Vilas, Schaumlöffel & Roig (NeurIPS 2023) on a fitted projector.

The computations behind :meth:`ClassEmbeddingProjector.identifiability` and
the functions of :mod:`skdict.inspection`, following the definitions of the
paper's code (github.com/martinagvilas/vit-cls_emb).

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
  pairs the paper pairs: tokens for identifiability, classes for the
  class-value and key-value agreement, images for the class-similarity change.
"""

import numpy as np
from scipy.stats import wilcoxon
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Bunch

from .._optional import import_optional
from .hooks import _is_pre_norm, check_sites

_FEATURE = "ClassEmbeddingProjector"
TOP_MEMORIES = 5


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


def _summarise_identifiability(proj, r):
    has_cls = getattr(proj.model_, "cls_token", None) is not None
    patches = r[:, :, proj.num_prefix_tokens_:]
    return Bunch(
        cls=r[:, :, 0].mean(axis=0) if has_cls else np.full(r.shape[1], np.nan),
        image_tokens=patches.mean(axis=(0, 2)),
        top1_share=(patches == 1.0).mean(axis=(0, 2)),
        layers=np.array(proj.layers_),
    )


def identifiability(proj, images, y, *, baseline=None):
    """Class identifiability of the class token and the image tokens per layer.

    See :meth:`ClassEmbeddingProjector.identifiability`.
    """
    r = _token_identifiability(proj, images, y)
    result = _summarise_identifiability(proj, r)
    if baseline is None:
        return result
    baseline = check_baseline(proj, baseline)
    r_base = _token_identifiability(baseline, images, y)
    result.baseline = _summarise_identifiability(baseline, r_base)
    n_prefix = proj.num_prefix_tokens_
    patches = r[:, :, n_prefix:].transpose(0, 2, 1).reshape(-1, r.shape[1])
    patches_base = r_base[:, :, n_prefix:].transpose(0, 2, 1).reshape(-1, r.shape[1])
    result.pvalue = Bunch(
        cls=(per_layer_pvalues(r[:, :, 0], r_base[:, :, 0])
             if not np.isnan(result.cls).all() else np.full(r.shape[1], np.nan)),
        image_tokens=per_layer_pvalues(patches, patches_base),
    )
    return result


# -- class-similarity change (the authors' plots/mech_interp.py) ------------


def change_per_image(proj, images, y, reference):
    """Per image and layer, the share of tokens whose true-class logit each branch raises."""
    sites = ("input", "attn", "mlp") + (("mlp_in",) if reference == "branch_input" else ())
    check_sites(proj.model_.blocks[0], sites)
    x = proj._tensor(images)
    y = check_labels(y, len(x), len(proj.classes_))
    tokens = proj._token_slice(proj.tokens)
    rates = {"attn": [], "mlp": []}
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
    return {branch: np.concatenate(parts) for branch, parts in rates.items()}


# -- key-value memories (the authors' memories.py) -------------------------


def _numpy(tensor):
    return tensor.detach().cpu().numpy()


def value_vectors(proj, layer, kind):
    """Value vectors (n_values, width) of block `layer`'s MLP or attention.

    They are the columns of ``mlp.fc2.weight`` or ``attn.proj.weight``; with
    ``layer_scale="after"`` and a LayerScale in the block, scaled by its gamma,
    i.e. as they are written to the residual stream.
    """
    block = proj.model_.blocks[layer]
    weight = block.mlp.fc2.weight if kind == "mlp" else block.attn.proj.weight
    values = _numpy(weight).T
    scale = getattr(block, "ls2" if kind == "mlp" else "ls1", None)
    if proj.layer_scale == "after" and _is_pre_norm(block) and hasattr(scale, "gamma"):
        values = values * _numpy(scale.gamma)
    return values


def _value_scores(proj, values, ranking):
    if ranking == "raw":
        return values @ _numpy(proj.model_.head.weight).T
    return proj.project_directions(values)


def _top(scores, k, axis):
    """Indices of the k largest entries along `axis`; ties go to the lower index."""
    order = np.argsort(-scores, axis=axis, kind="stable")
    return np.take(order, np.arange(k), axis=axis)


def _key_hits(proj, images, y, kind, top_memories):
    """Per token (restricted by ``tokens``): do its top keys meet its class's memories?

    Returns hits (n_images, n_layers, n_tokens) of bool and the labels.
    """
    torch = import_optional("torch", "vision", _FEATURE)
    if y is None:
        raise ValueError("value_agreement needs y with images: the true classes.")
    x = proj._tensor(images)
    y = check_labels(y, len(x), len(proj.classes_))
    site = f"{kind}_keys"
    check_sites(proj.model_.blocks[0], (site,))
    tokens, hits = proj._token_slice(proj.tokens), []
    for rows, hidden in proj._batches(x, (site,)):
        keys = hidden[site][:, :, tokens]
        # stable sort: among equal coefficients the lower memory index wins
        top_keys = torch.sort(keys, dim=-1, descending=True, stable=True).indices
        top_keys = _numpy(top_keys[..., :TOP_MEMORIES])
        memories = top_memories[:, y[rows]].transpose(1, 0, 2)  # (B, layers, 5)
        match = top_keys[..., :, None] == memories[:, :, None, None, :]
        hits.append(match.any(axis=(-1, -2)))
    return np.concatenate(hits), y


def _per_class_rates(hits, y, n_classes):
    """(n_classes, n_layers) share of hit tokens among the images of each class."""
    per_image = hits.mean(axis=2)
    rates = np.full((n_classes, hits.shape[1]), np.nan)
    for c in np.unique(y):
        rates[c] = per_image[y == c].mean(axis=0)
    return rates


def key_value_memories(proj, images, y, kind, ranking, average):
    """Value scores, class-value agreement, top memories and (with images) key hits.

    The Bunch that :func:`skdict.inspection.value_agreement` returns, without
    the baseline.
    """
    embedding = _numpy(proj.model_.head.weight)
    embedding = embedding / np.linalg.norm(embedding, axis=1, keepdims=True)
    scores, agreement = [], []
    for layer in proj.layers_:
        values = value_vectors(proj, layer, kind)
        scores.append(_value_scores(proj, values, ranking))
        unit = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
        agreement.append((embedding @ unit.T).max(axis=1))
    scores = np.stack(scores)
    top = _top(scores, TOP_MEMORIES, axis=1).transpose(0, 2, 1)
    result = Bunch(
        value_scores=scores,
        agreement=np.stack(agreement),
        top_memories=top,
        key_value_agreement=None,
        key_value_agreement_per_class=None,
        layers=np.array(proj.layers_),
        kind=kind,
        ranking=ranking,
        average=average,
    )
    if images is not None:
        hits, y = _key_hits(proj, images, y, kind, top)
        per_class = _per_class_rates(hits, y, len(proj.classes_))
        result.key_value_agreement_per_class = per_class.T
        result.key_value_agreement = (
            np.nanmean(per_class, axis=0) if average == "class" else hits.mean(axis=(0, 2))
        )
    return result


# -- linear probes (the authors' linear_probing/prober.py) -----------------


def hidden_and_logits(proj, images):
    """Hidden states (N, layers, tokens, width) at the site and their projections."""
    x = proj._tensor(images)
    hidden, logits = [], []
    for _, states in proj._batches(x, (proj.site,)):
        h = states[proj.site]
        hidden.append(_numpy(h))
        logits.append(_numpy(proj._to_classes(h)))
    return np.concatenate(hidden), np.concatenate(logits)


def probe_scores(train_states, y_train, test_states, n_classes, C, random_state):
    """Decision scores (n_test, n_classes) of a standardised logistic regression."""
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


def readout_summary(r, has_cls, n_prefix):
    """Mean identifiability and top-1 share per layer of the class and image tokens."""
    patches = r[:, :, n_prefix:]
    nan = np.full(r.shape[1], np.nan)
    return Bunch(
        cls=r[:, :, 0].mean(axis=0) if has_cls else nan,
        cls_accuracy=(r[:, :, 0] == 1.0).mean(axis=0) if has_cls else nan,
        image_tokens=patches.mean(axis=(0, 2)),
        image_tokens_accuracy=(patches == 1.0).mean(axis=(0, 2)),
    )
