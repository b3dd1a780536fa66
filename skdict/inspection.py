"""Analyses of a fitted :class:`~skdict.ClassEmbeddingProjector`, as functions.

As :func:`sklearn.inspection.permutation_importance` takes a fitted estimator,
each function here takes a fitted projector as its first argument and reads
the model it wraps. They implement the analyses of Vilas, Schaumlöffel & Roig
(NeurIPS 2023) beyond identifiability (which stays a method, as it defines
:meth:`~skdict.ClassEmbeddingProjector.score`), following the definitions of
the authors' code (github.com/martinagvilas/vit-cls_emb); where that code and
the paper's text differ, both conventions are offered and the docstring says
which is the default.

Ranks count ties against the true class, and ``baseline=`` compares with a
projector of the same architecture with random weights by a one-sided paired
Wilcoxon test per layer (see the user guide, "Baselines and significance").
"""

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ._vit import attribution
from ._vit import class_analyses as analyses
from ._vit.class_analyses import check_labels

__all__ = [
    "class_similarity_change",
    "explain",
    "linear_probe",
    "perturbation_test",
    "value_agreement",
]


def class_similarity_change(projector, images, y, *, reference="block_input", baseline=None):
    """Share of tokens whose true-class logit each branch raises, per layer.

    A token counts for a branch of block l when the true-class logit of the
    branch output, projected alone (read at ``site="attn"`` / ``"mlp"``, so
    before or after LayerScale as the projector's ``layer_scale`` says),
    exceeds that of a reference state of the same token:

    - attention branch: the block input;
    - MLP branch: the block input (``reference="block_input"``, as the
      paper's code computes the figure) or the MLP's own input, the block
      input plus the attention output (``reference="branch_input"``, as the
      paper's text describes it).

    Block 0 is included: its input is the embedded tokens (patch embedding,
    position embedding and ``norm_pre``), which is what both branches of
    block 0 read. The paper's figure starts at the second block because its
    code stores no embedding layer; drop ``layers=0`` to match it. Tokens are
    restricted by the projector's ``tokens``.

    Parameters
    ----------
    projector : ClassEmbeddingProjector
        A fitted projector.
    images : array-like or list
        Images in any form :meth:`ClassEmbeddingProjector.project
        <skdict.ClassEmbeddingProjector.project>` takes.
    y : array-like of shape (n_images,)
        True class of each image.
    reference : {"block_input", "branch_input"}, default="block_input"
        What the MLP output is compared with (see above).
    baseline : ClassEmbeddingProjector, default=None
        The same architecture with random weights, fitted or not. When given,
        its rates and one-sided Wilcoxon p-values (trained > baseline, paired
        by image on the per-image rates, per layer) are returned too.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``attn`` and ``mlp``: (n_selected_layers,) change rates in [0, 1];
        ``layers``: the block indices; ``reference``. With ``baseline``:
        ``baseline`` (its ``attn`` and ``mlp``) and ``pvalue`` (``attn``
        and ``mlp``, one p-value per layer).

    Examples
    --------
    >>> from skdict import ClassEmbeddingProjector
    >>> from skdict.datasets import load_digits_images, make_digits_vit
    >>> from skdict.inspection import class_similarity_change
    >>> images, y = load_digits_images(subset="test", return_X_y=True)
    >>> proj = ClassEmbeddingProjector(make_digits_vit(), device="cpu").fit()
    >>> result = class_similarity_change(proj, images[:20], y[:20])
    >>> result.attn.shape, result.mlp.shape
    ((4,), (4,))
    """
    check_is_fitted(projector)
    if reference not in ("block_input", "branch_input"):
        raise ValueError(
            f"reference must be 'block_input' (the paper's code) or 'branch_input' "
            f"(the paper's text), got {reference!r}."
        )
    per_image = analyses.change_per_image(projector, images, y, reference)
    # every image has the same number of tokens: the mean of per-image shares
    # is the share over all tokens
    result = Bunch(
        attn=per_image["attn"].mean(axis=0),
        mlp=per_image["mlp"].mean(axis=0),
        layers=np.array(projector.layers_),
        reference=reference,
    )
    if baseline is None:
        return result
    baseline = analyses.check_baseline(projector, baseline)
    base = analyses.change_per_image(baseline, images, y, reference)
    result.baseline = Bunch(attn=base["attn"].mean(axis=0), mlp=base["mlp"].mean(axis=0))
    result.pvalue = Bunch(
        attn=analyses.per_layer_pvalues(per_image["attn"], base["attn"]),
        mlp=analyses.per_layer_pvalues(per_image["mlp"], base["mlp"]),
    )
    return result


def value_agreement(projector, images=None, y=None, *, kind="mlp", ranking="raw",
                    average="class", baseline=None):
    """Read the MLP or attention layers as key-value memories in class space.

    A layer's output is a sum of value vectors weighted by keys. For the
    MLP (``kind="mlp"``) the values are the columns of ``mlp.fc2.weight``
    and a token's keys are the ``fc1`` outputs (before the activation);
    for attention (``kind="attn"``) the values are the columns of
    ``attn.proj.weight`` and the keys are the attention-weighted values of
    all heads, concatenated (the input of ``attn.proj``). With the
    projector's ``layer_scale="after"`` and a LayerScale in the block, the
    values are scaled by its gamma, as they are written to the residual.

    Each class's top-5 memories are the values that score it highest. With
    ``ranking="raw"`` (the paper's definition) the scores are the raw
    product ``head.weight @ values.T`` (E W_out), so a value's length
    counts; ``ranking="normalized"`` uses
    :meth:`~skdict.ClassEmbeddingProjector.project_directions`, which
    applies the final norm and discards the value's length. Ties go to the
    lower value index.

    The key-value agreement of a token is whether its 5 largest keys include
    one of its true class's top-5 memories. ``average="class"`` (the
    paper's) averages the tokens of each class's images, then the classes
    present in ``y``; ``average="token"`` pools all tokens (equal when the
    classes have equal counts).

    Parameters
    ----------
    projector : ClassEmbeddingProjector
        A fitted projector.
    images : array-like or list, default=None
        Images for the key-value agreement rate, in any form
        :meth:`ClassEmbeddingProjector.project
        <skdict.ClassEmbeddingProjector.project>` takes; None to read the
        weights only.
    y : array-like of shape (n_images,), default=None
        True class of each image; required with `images`.
    kind : {"mlp", "attn"}, default="mlp"
        Which layers to read as memories.
    ranking : {"raw", "normalized"}, default="raw"
        How values are scored for each class (see above).
    average : {"class", "token"}, default="class"
        How the key-value agreement rate averages tokens (see above).
    baseline : ClassEmbeddingProjector, default=None
        The same architecture with random weights, fitted or not. When given,
        its agreements and one-sided Wilcoxon p-values (trained > baseline,
        paired by class, per layer) are returned too.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``value_scores``: (n_selected_layers, n_values, n_classes) class
        scores of the value vectors (per ``ranking``); ``agreement``:
        (n_selected_layers, n_classes) class-value agreement, the largest
        cosine between the class embedding (row of ``head.weight``) and any
        value vector; ``top_memories``: (n_selected_layers, n_classes, 5)
        the values that score each class highest, best first;
        ``key_value_agreement``: (n_selected_layers,) the agreement rate
        (tokens restricted by the projector's ``tokens``), or None without
        images; ``key_value_agreement_per_class``: (n_selected_layers,
        n_classes), NaN for classes absent from ``y``, or None; ``layers``;
        ``kind``, ``ranking``, ``average``. With ``baseline``: ``baseline``
        (``agreement`` and ``key_value_agreement``) and ``pvalue`` (the same
        two keys, one p-value per layer; None without images).

    Examples
    --------
    >>> from skdict import ClassEmbeddingProjector
    >>> from skdict.datasets import load_digits_images, make_digits_vit
    >>> from skdict.inspection import value_agreement
    >>> images, y = load_digits_images(subset="test", return_X_y=True)
    >>> proj = ClassEmbeddingProjector(make_digits_vit(), device="cpu").fit()
    >>> result = value_agreement(proj, images[:20], y[:20])
    >>> result.top_memories.shape  # (layers, classes, 5 memories)
    (4, 10, 5)
    >>> result.key_value_agreement.shape
    (4,)
    """
    check_is_fitted(projector)
    options = {"kind": (kind, ("mlp", "attn")), "ranking": (ranking, ("raw", "normalized")),
               "average": (average, ("class", "token"))}
    for name, (value, allowed) in options.items():
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
    result = analyses.key_value_memories(projector, images, y, kind, ranking, average)
    if baseline is None:
        return result
    baseline = analyses.check_baseline(projector, baseline)
    base = analyses.key_value_memories(baseline, images, y, kind, ranking, average)
    result.baseline = Bunch(agreement=base.agreement,
                            key_value_agreement=base.key_value_agreement)
    result.pvalue = Bunch(
        agreement=analyses.per_layer_pvalues(result.agreement.T, base.agreement.T),
        key_value_agreement=None,
    )
    if images is not None:
        result.pvalue.key_value_agreement = analyses.per_layer_pvalues(
            result.key_value_agreement_per_class.T, base.key_value_agreement_per_class.T
        )
    return result


def linear_probe(projector, images, y, *, test_size=0.25, C=1.0, random_state=0):
    """Per-layer linear probes next to the model's own class readout.

    The paper argues that projecting onto the class embeddings shows what
    the model itself uses, where a probe may find class information that
    the model never reads out. This fits, for each selected layer, a
    logistic regression (standardised inputs, ``C``) on the hidden states
    at the projector's ``site`` of the training images: one probe for the
    class token and one per image-token position, as in the paper's code
    (which uses ridge regression). On the held-out images, the probe's class
    scores and the class-embedding projection of the same states are turned
    into the same measures.

    Parameters
    ----------
    projector : ClassEmbeddingProjector
        A fitted projector.
    images : array-like or list
        Images in any form :meth:`ClassEmbeddingProjector.project
        <skdict.ClassEmbeddingProjector.project>` takes.
    y : array-like of shape (n_images,)
        True class of each image.
    test_size : float, default=0.25
        Share of images held out (stratified by class).
    C : float, default=1.0
        Inverse regularisation strength of the probes.
    random_state : int, default=0
        Seed of the split and the probes.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``probe`` and ``projection``, each with ``cls`` and
        ``image_tokens`` (mean identifiability, as in
        :meth:`~skdict.ClassEmbeddingProjector.identifiability`, per layer)
        and ``cls_accuracy`` and ``image_tokens_accuracy`` (share of tokens
        with the true class strictly on top); ``layers``; ``train_index``
        and ``test_index``.

    Examples
    --------
    >>> from skdict import ClassEmbeddingProjector
    >>> from skdict.datasets import load_digits_images, make_digits_vit
    >>> from skdict.inspection import linear_probe
    >>> images, y = load_digits_images(subset="test", return_X_y=True)
    >>> proj = ClassEmbeddingProjector(make_digits_vit(), layers=-1, device="cpu").fit()
    >>> result = linear_probe(proj, images[:80], y[:80])
    >>> result.probe.cls.shape, result.projection.cls.shape
    ((1,), (1,))
    >>> len(result.test_index)
    20
    """
    check_is_fitted(projector)
    hidden, logits = analyses.hidden_and_logits(projector, images)
    n_classes = len(projector.classes_)
    y = check_labels(y, len(hidden), n_classes)
    train, test = train_test_split(
        np.arange(len(y)), test_size=test_size, stratify=y, random_state=random_state
    )
    has_cls = getattr(projector.model_, "cls_token", None) is not None
    n_prefix = projector.num_prefix_tokens_
    # the class token (if any) and each image-token position get their own
    # probe, as in the paper's code; register tokens are not read
    positions = ([0] if has_cls else []) + list(range(n_prefix, hidden.shape[2]))
    probe_scores = np.full(logits[test].shape, np.nan, dtype=float)
    # many small fits: BLAS threads only contend (100x slower measured on a
    # busy 2-core machine) where one thread per fit is plenty
    with threadpool_limits(limits=1):
        for i in range(hidden.shape[1]):
            for t in positions:
                probe_scores[:, i, t] = analyses.probe_scores(
                    hidden[train, i, t], y[train], hidden[test, i, t], n_classes, C,
                    random_state,
                )
    labels = y[test][:, None, None]
    r_probe = 1.0 - analyses.ranks(probe_scores, labels) / n_classes
    r_projection = 1.0 - analyses.ranks(logits[test], labels) / n_classes
    return Bunch(
        probe=analyses.readout_summary(r_probe, has_cls, n_prefix),
        projection=analyses.readout_summary(r_projection, has_cls, n_prefix),
        layers=np.array(projector.layers_),
        train_index=train,
        test_index=test,
    )


def explain(projector, images, y=None):
    """Heatmaps of the patches that carry evidence for a class.

    Rule: the evidence of patch token j for class c is what j writes,
    through the attention layers of the selected blocks, into the pooled
    token (the class token, or the mean of the patch tokens for pooled
    models), read in class-embedding space. In each block, j's term of the
    attention output at the pooled query is ``ls1(proj(A[query, j] v_j))``
    (attention weights times value vectors, per head, without the bias);
    its class-c score is its dot product with the gradient of the class-c
    logit ``head(fc_norm(norm(.)))`` at the model's final pooled state,
    i.e. the classifier linearised where the model is. The evidence sums
    these scores over the selected blocks. The patch grid is upsampled
    bilinearly to the image size. Fused attention is unaffected: the
    attention weights are recomputed from the captured inputs.

    Parameters
    ----------
    projector : ClassEmbeddingProjector
        A fitted projector.
    images : array-like or list
        Images in any form :meth:`ClassEmbeddingProjector.project
        <skdict.ClassEmbeddingProjector.project>` takes.
    y : array-like of shape (n_images,), default=None
        Class to explain per image; None explains the model's prediction.

    Returns
    -------
    heatmaps : ndarray of shape (n_images, H, W)
        Evidence per pixel in class-logit units (float32); positive
        patches push the class up, negative ones down.

    Examples
    --------
    >>> from skdict import ClassEmbeddingProjector
    >>> from skdict.datasets import load_digits_images, make_digits_vit
    >>> from skdict.inspection import explain
    >>> images, y = load_digits_images(subset="test", return_X_y=True)
    >>> proj = ClassEmbeddingProjector(make_digits_vit(), device="cpu").fit()
    >>> explain(proj, images[:3], y[:3]).shape  # one 8x8 map per image
    (3, 8, 8)
    """
    check_is_fitted(projector)
    x = projector._tensor(images)
    if y is not None:
        y = check_labels(y, len(x), len(projector.classes_))
    grid = attribution.patch_evidence(projector, x, y).reshape(len(x), *projector.grid_size_)
    return attribution.upsample(grid, projector.input_size_[1:])


def perturbation_test(projector, images, y, *, fractions=None, random_state=None):
    """Accuracy when keeping only the most, least or randomly chosen patches.

    Patches are ranked by the evidence of :func:`explain` for the true
    class; for each fraction, the model sees the prefix tokens and only the
    kept patch tokens (the others are removed from the sequence, positions
    kept). A good explanation keeps the accuracy high with few top patches
    (high ``auc_top``) and low with few bottom ones.

    Parameters
    ----------
    projector : ClassEmbeddingProjector
        A fitted projector.
    images : array-like or list
        Images in any form :meth:`ClassEmbeddingProjector.project
        <skdict.ClassEmbeddingProjector.project>` takes.
    y : array-like of shape (n_images,)
        True class of each image.
    fractions : array-like of float in (0, 1], default=None
        Shares of patches to keep, increasing; None for 0.1, 0.2, ..., 1.
    random_state : int, RandomState instance or None, default=None
        Seed of the random-order baseline.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``fractions``; ``top``, ``bottom``, ``random``: accuracy curves;
        ``auc_top``, ``auc_bottom``, ``auc_random``: their areas, divided by
        the range of fractions.

    Examples
    --------
    >>> from skdict import ClassEmbeddingProjector
    >>> from skdict.datasets import load_digits_images, make_digits_vit
    >>> from skdict.inspection import perturbation_test
    >>> images, y = load_digits_images(subset="test", return_X_y=True)
    >>> proj = ClassEmbeddingProjector(make_digits_vit(), device="cpu").fit()
    >>> result = perturbation_test(proj, images[:20], y[:20], fractions=[0.5, 1.0],
    ...                            random_state=0)
    >>> result.top.shape
    (2,)
    """
    check_is_fitted(projector)
    fractions = np.linspace(0.1, 1.0, 10) if fractions is None else np.asarray(fractions, float)
    if fractions.ndim != 1 or len(fractions) < 2 or np.any(np.diff(fractions) <= 0) or (
        fractions[0] <= 0 or fractions[-1] > 1
    ):
        raise ValueError("fractions must be at least 2 increasing values in (0, 1].")
    x = projector._tensor(images)
    y = check_labels(y, len(x), len(projector.classes_))
    order = np.argsort(-attribution.patch_evidence(projector, x, y), axis=1, kind="stable")
    rng = check_random_state(random_state)
    orders = {
        "top": order,
        "bottom": order[:, ::-1],
        "random": np.argsort(rng.random_sample(order.shape), axis=1),
    }
    n_patches = order.shape[1]
    result = Bunch(fractions=fractions)
    for name, ranked in orders.items():
        curve = []
        for fraction in fractions:
            keep = ranked[:, : max(1, round(fraction * n_patches))]
            predicted = attribution.kept_logits(projector, x, keep).argmax(axis=1)
            curve.append(np.mean(predicted == y))
        result[name] = np.array(curve)
        result[f"auc_{name}"] = float(
            np.trapezoid(result[name], fractions) / (fractions[-1] - fractions[0])
        )
    return result


# Downstream recovered (SAEBench's loss recovered, for a ViT) lives in its own module.
from ._vit.downstream import downstream_recovered  # noqa: E402

__all__ += ["downstream_recovered"]
