"""The MLP and attention layers as key-value memories in class space.

The computations behind :func:`skdict.inspection.value_agreement`, following
the authors' ``src/memories.py`` (``Memory.compute_class_value_agr``,
``compute_key_value_agreement`` and ``compute_composition``) and the
summaries of their ``src/plots/mech_interp.py``.
"""

import numpy as np
from sklearn.utils import Bunch

from .._optional import import_optional
from .class_analyses import check_labels
from .hooks import OUTPUT, _is_pre_norm, check_sites

_FEATURE = "ClassEmbeddingProjector"
TOP_MEMORIES = 5


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


def _meets(top_keys, memories):
    """Whether each token's top keys (B, layers, T, 5) include one of `memories` (B, layers, 5)."""
    return (top_keys[..., :, None] == memories[:, :, None, None, :]).any(axis=(-1, -2))


def _token_memories(proj, x, y, kind, top_memories, memory_class, random_classes):
    """Per token (restricted by ``tokens``), how its 5 most activated memories relate to classes.

    Returns a Bunch of per-token arrays (n_images, n_layers, n_tokens):
    ``hits`` (a top key is one of the true class's top memories),
    ``random_hits`` (... of the random class's), ``matching`` (how many of
    the 5 memories have the branch output's top class as their own top
    class), and ``correct`` (n_images,), whether the model is right.
    """
    torch = import_optional("torch", "vision", _FEATURE)
    site = f"{kind}_keys"
    check_sites(proj.model_.blocks[0], (site, kind))
    tokens = proj._token_slice(proj.tokens)
    parts = {"hits": [], "random_hits": [], "matching": [], "correct": []}
    layers = np.arange(len(proj.layers_))[None, :, None, None]
    for rows, states in proj._batches(x, (site, kind, OUTPUT)):
        keys = states[site][:, :, tokens]
        # stable sort: among equal coefficients the lower memory index wins
        top_keys = torch.sort(keys, dim=-1, descending=True, stable=True).indices
        top_keys = _numpy(top_keys[..., :TOP_MEMORIES])
        labels = y[rows]
        parts["hits"].append(_meets(top_keys, top_memories[:, labels].transpose(1, 0, 2)))
        parts["random_hits"].append(
            _meets(top_keys, top_memories[:, random_classes[labels]].transpose(1, 0, 2))
        )
        predicted = _numpy(proj._to_classes(states[kind][:, :, tokens]).argmax(dim=-1))
        parts["matching"].append(
            (memory_class[layers, top_keys] == predicted[..., None]).sum(axis=-1)
        )
        parts["correct"].append(_numpy(states[OUTPUT].argmax(dim=-1)) == labels)
    return Bunch(**{name: np.concatenate(values) for name, values in parts.items()})


def _per_class_rates(hits, y, n_classes):
    """(n_classes, n_layers) share of hit tokens among the images of each class."""
    per_image = hits.mean(axis=2)
    rates = np.full((n_classes, hits.shape[1]), np.nan)
    for c in np.unique(y):
        rates[c] = per_image[y == c].mean(axis=0)
    return rates


def _agreement_rate(hits, y, n_classes, average):
    """The key-value agreement rate per layer, and per class (n_classes, n_layers)."""
    per_class = _per_class_rates(hits, y, n_classes)
    rate = np.nanmean(per_class, axis=0) if average == "class" else hits.mean(axis=(0, 2))
    return rate, per_class


def _mean_over_images(per_image, rows):
    """Mean over the images `rows` (n_layers,), NaN when there are none."""
    if not rows.any():
        return np.full(per_image.shape[1], np.nan)
    return per_image[rows].mean(axis=0)


def key_value_memories(proj, images, y, kind, ranking, average, random_classes):
    """Value scores, class-value agreement, top memories and (with images) key hits.

    The Bunch that :func:`skdict.inspection.value_agreement` returns, without
    the baseline. `random_classes` (n_classes,): the class whose memories each
    class is compared with in the random-class control.
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
        layers=np.array(proj.layers_),
        kind=kind,
        ranking=ranking,
        average=average,
    )
    per_image_keys = ("key_value_agreement", "key_value_agreement_per_class",
                      "key_value_agreement_random", "random_classes",
                      "key_value_agreement_correct", "key_value_agreement_wrong",
                      "memory_match", "n_matching_memories")
    result.update(dict.fromkeys(per_image_keys))
    if images is None:
        return result
    if y is None:
        raise ValueError("value_agreement needs y with images: the true classes.")
    x = proj._tensor(images)
    n_classes = len(proj.classes_)
    y = check_labels(y, len(x), n_classes)
    tokens = _token_memories(proj, x, y, kind, top, scores.argmax(axis=2), random_classes)
    rate, per_class = _agreement_rate(tokens.hits, y, n_classes, average)
    per_image = tokens.hits.mean(axis=2)
    result.update(
        key_value_agreement=rate,
        key_value_agreement_per_class=per_class.T,
        key_value_agreement_random=_agreement_rate(
            tokens.random_hits, y, n_classes, average)[0],
        random_classes=random_classes,
        key_value_agreement_correct=_mean_over_images(per_image, tokens.correct),
        key_value_agreement_wrong=_mean_over_images(per_image, ~tokens.correct),
        memory_match=(tokens.matching > 0).mean(axis=(0, 2)),
        n_matching_memories=tokens.matching.mean(axis=(0, 2)),
    )
    return result
