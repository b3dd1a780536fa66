"""Analyses of a fitted :class:`~skdict.ClassEmbeddingProjector`, as functions.

As :func:`sklearn.inspection.permutation_importance` takes a fitted estimator,
each function here takes a fitted projector as its first argument and reads
the model it wraps. They implement the analyses of Vilas, Schaumlöffel & Roig
(NeurIPS 2023) beyond identifiability (which stays a method, as it defines
:meth:`~skdict.ClassEmbeddingProjector.score`). Each default is the definition
of the authors' code (github.com/martinagvilas/vit-cls_emb); where skdict
offers another definition (or the paper's text words it differently), it is an
option, and the docstring says which is which.

Ranks count ties against the true class, and ``baseline=`` compares with a
projector of the same architecture with random weights by a one-sided paired
Wilcoxon test per layer (see the user guide, "Baselines and significance").
"""

from numbers import Integral

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ._vit import attribution, memories, perturbation, probes
from ._vit import class_analyses as analyses
from ._vit.class_analyses import check_labels
from ._vit.interventions import ATTENTION_EDITS

__all__ = [
    "class_similarity_change",
    "explain",
    "linear_probe",
    "perturbation_test",
    "perturbed_identifiability",
    "value_agreement",
]


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")


def class_similarity_change(projector, images, y, *, reference="block_input", baseline=None):
    """Share of tokens whose true-class logit each branch, and each block, raises.

    A token counts for a branch of block l when the true-class logit of the
    branch output, projected alone (read at ``site="attn"`` / ``"mlp"``, so
    before or after LayerScale as the projector's ``layer_scale`` says),
    exceeds that of a reference state of the same token:

    - attention branch: the block input;
    - MLP branch: the block input (``reference="block_input"``, as the
      paper's code computes the figure) or the MLP's own input, the block
      input plus the attention output (``reference="branch_input"``, as the
      paper's text describes it).

    It counts for the whole block when the true-class logit of its output
    exceeds that of its input: the block-to-block change rate of the
    authors' ``get_ident_change_rate`` (their code compares the projected
    true-class logits, which it stores in files named ``probs``).

    Block 0 is included: its input is the embedded tokens (patch embedding,
    position embedding and ``norm_pre``), which is what both branches of
    block 0 read. The paper's figures start at the second block because its
    code stores no embedding layer; drop ``layers=0`` to match them. Tokens
    are restricted by the projector's ``tokens`` (the authors' figures:
    ``"cls"`` and ``"patches"`` for the branches, ``"patches"`` for the
    block change rate).

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
        ``attn``, ``mlp`` and ``block``: (n_selected_layers,) change rates in
        [0, 1]; ``layers``: the block indices; ``reference``. With
        ``baseline``: ``baseline`` (its ``attn``, ``mlp`` and ``block``) and
        ``pvalue`` (the same three keys, one p-value per layer).

    Examples
    --------
    >>> from skdict import ClassEmbeddingProjector
    >>> from skdict.datasets import load_digits_images, make_digits_vit
    >>> from skdict.inspection import class_similarity_change
    >>> images, y = load_digits_images(subset="test", return_X_y=True)
    >>> proj = ClassEmbeddingProjector(make_digits_vit(), device="cpu").fit()
    >>> result = class_similarity_change(proj, images[:20], y[:20])
    >>> result.attn.shape, result.mlp.shape, result.block.shape
    ((4,), (4,), (4,))
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
    result = Bunch(**{name: rates.mean(axis=0) for name, rates in per_image.items()})
    result.update(layers=np.array(projector.layers_), reference=reference)
    if baseline is None:
        return result
    baseline = analyses.check_baseline(projector, baseline)
    base = analyses.change_per_image(baseline, images, y, reference)
    result.baseline = Bunch(**{name: rates.mean(axis=0) for name, rates in base.items()})
    result.pvalue = Bunch(**{name: analyses.per_layer_pvalues(per_image[name], base[name])
                           for name in per_image})
    return result


def value_agreement(projector, images=None, y=None, *, kind="mlp", ranking="raw",
                    average="class", baseline=None, random_state=0):
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
    lower value index. A value's own top class is the class it scores
    highest.

    With images, each token (restricted by the projector's ``tokens``) is
    read through its 5 largest keys, its most activated memories:

    - key-value agreement (the authors' ``compute_key_value_agreement``):
      whether they include one of its true class's top-5 memories.
      ``average="class"`` (the paper's) averages the tokens of each class's
      images, then the classes present in ``y``; ``average="token"`` pools
      all tokens (equal when the classes have equal counts);
    - the random-class control (the same function's ``agreement_random``):
      the same rate against the top-5 memories of a class drawn at random
      for each class (uniformly among all classes, so possibly itself, and
      shared by its images);
    - correctly vs wrongly classified images (the authors'
      ``plot_agr_rate_diff``, which reads the class token): the agreement
      averaged over the images the model classifies right, and wrong;
    - memory compositionality (the authors' ``compute_composition`` and
      ``plot_memory_compositionality``): whether any of the 5 memories has,
      as its own top class, the top class of the layer's output projected
      alone (at ``site=kind``); when none has, the layer's prediction is
      composed from memories that each point elsewhere.

    Parameters
    ----------
    projector : ClassEmbeddingProjector
        A fitted projector.
    images : array-like or list, default=None
        Images for the rates above, in any form
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
        How the key-value agreement rates average tokens (see above).
    baseline : ClassEmbeddingProjector, default=None
        The same architecture with random weights, fitted or not. When given,
        its agreements and one-sided Wilcoxon p-values (trained > baseline,
        paired by class, per layer) are returned too.
    random_state : int, RandomState instance or None, default=0
        Seed of the random classes of the control (fixed by default, so that
        results repeat).

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``value_scores``: (n_selected_layers, n_values, n_classes) class
        scores of the value vectors (per ``ranking``); ``agreement``:
        (n_selected_layers, n_classes) class-value agreement, the largest
        cosine between the class embedding (row of ``head.weight``) and any
        value vector; ``top_memories``: (n_selected_layers, n_classes, 5)
        the values that score each class highest, best first; ``layers``;
        ``kind``, ``ranking``, ``average``. With images (None without):
        ``key_value_agreement`` and ``key_value_agreement_random``:
        (n_selected_layers,) the agreement rate and its random-class control;
        ``key_value_agreement_per_class``: (n_selected_layers, n_classes),
        NaN for classes absent from ``y``; ``random_classes``: (n_classes,)
        the class each class is compared with in the control;
        ``key_value_agreement_correct`` and ``key_value_agreement_wrong``:
        (n_selected_layers,) mean agreement of the images classified right
        and wrong (NaN when there are none); ``memory_match``:
        (n_selected_layers,) share of tokens with at least one memory whose
        top class is the layer's predicted class, and
        ``n_matching_memories``: the mean number (0 to 5) of such memories.
        With ``baseline``: ``baseline`` (``agreement`` and
        ``key_value_agreement``) and ``pvalue`` (the same two keys, one
        p-value per layer; None without images).

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
    >>> result.key_value_agreement.shape, result.key_value_agreement_random.shape
    ((4,), (4,))
    """
    check_is_fitted(projector)
    _check_choice("kind", kind, ("mlp", "attn"))
    _check_choice("ranking", ranking, ("raw", "normalized"))
    _check_choice("average", average, ("class", "token"))
    # as in the authors' code, each class is compared with one class drawn at
    # random (possibly itself), the same for all its images, and the baseline
    # with the same classes
    n_classes = len(projector.classes_)
    random_classes = check_random_state(random_state).randint(n_classes, size=n_classes)
    result = memories.key_value_memories(projector, images, y, kind, ranking, average,
                                         random_classes)
    if baseline is None:
        return result
    baseline = analyses.check_baseline(projector, baseline)
    base = memories.key_value_memories(baseline, images, y, kind, ranking, average,
                                       random_classes)
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


def linear_probe(projector, images, y, *, probe="ridge", test_size=0.25, alpha=1.0, C=1.0,
                 random_state=0):
    """Per-layer linear probes next to the model's own class readout.

    The paper argues that projecting onto the class embeddings shows what
    the model itself uses, where a probe may find class information that
    the model never reads out. This fits, for each selected layer, a probe
    on the hidden states at the projector's ``site`` of the training images:
    one probe for the class token and one per image-token position, as in
    the paper's code. On the held-out images, the probe's class scores and
    the class-embedding projection of the same states are turned into the
    same measures; the image-token measures average the patch tokens only
    (not the class token).

    Probes (``probe``):

    - ``"ridge"`` (default, the authors' ``LinearProber.compute``): ridge
      regression (``alpha``, the lsqr solver) on the raw, unstandardised
      states, with targets +1 for the true class and -1 for every other
      class of the head (one-vs-rest), predicting the class of largest
      output;
    - ``"logistic"``: a multinomial logistic regression (``C``) on
      standardised states.

    Parameters
    ----------
    projector : ClassEmbeddingProjector
        A fitted projector.
    images : array-like or list
        Images in any form :meth:`ClassEmbeddingProjector.project
        <skdict.ClassEmbeddingProjector.project>` takes.
    y : array-like of shape (n_images,)
        True class of each image.
    probe : {"ridge", "logistic"}, default="ridge"
        Which probe to fit (see above).
    test_size : float, default=0.25
        Share of images held out (stratified by class).
    alpha : float, default=1.0
        Regularisation strength of the ridge probes.
    C : float, default=1.0
        Inverse regularisation strength of the logistic probes.
    random_state : int, default=0
        Seed of the split and of the logistic probes.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``probe`` and ``projection``, each with ``cls`` and
        ``image_tokens`` (mean identifiability, as in
        :meth:`~skdict.ClassEmbeddingProjector.identifiability`, per layer)
        and ``cls_accuracy`` and ``image_tokens_accuracy`` (share of tokens
        with the true class strictly on top); ``layers``; ``train_index``
        and ``test_index``; ``probe_kind``: the probe fitted.

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
    _check_choice("probe", probe, probes.PROBES)
    hidden, logits = probes.hidden_and_logits(projector, images)
    n_classes = len(projector.classes_)
    y = check_labels(y, len(hidden), n_classes)
    train, test = train_test_split(
        np.arange(len(y)), test_size=test_size, stratify=y, random_state=random_state
    )
    has_cls = analyses.has_class_token(projector)
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
                probe_scores[:, i, t] = probes.probe_scores(
                    probe, hidden[train, i, t], y[train], hidden[test, i, t], n_classes,
                    alpha=alpha, C=C, random_state=random_state,
                )
    labels = y[test][:, None, None]
    r_probe = 1.0 - analyses.ranks(probe_scores, labels) / n_classes
    r_projection = 1.0 - analyses.ranks(logits[test], labels) / n_classes
    return Bunch(
        probe=probes.readout_summary(r_probe, has_cls, n_prefix),
        projection=probes.readout_summary(r_projection, has_cls, n_prefix),
        layers=np.array(projector.layers_),
        train_index=train,
        test_index=test,
        probe_kind=probe,
    )


def explain(projector, images, y=None, *, method="gradient"):
    """Heatmaps of the patches that matter for a class.

    Two definitions of the relevance of patch token j for class c, summed
    over the selected blocks:

    - ``method="gradient"`` (default, the paper's: the authors'
      ``ViTGradients`` with its ``cross_entropy`` loss, summed over blocks
      and heads as their ``get_accumulated_grads`` does): in each block, the
      attention branch's output at the class token, projected alone onto
      the class embeddings (``head(fc_norm(norm(.)))``, the branch read at
      ``site="attn"``, so before or after LayerScale as ``layer_scale``
      says), gives a cross-entropy loss for class c; the relevance of j is
      minus the sum over heads of its gradient with respect to the class
      token's attention weight on j, ``A[h, 0, j]``. As in the authors'
      code, the loss is torch's cross-entropy of the softmax probabilities
      (a second log-softmax), and each block's gradient reaches its
      attention weights only through that block's own output. Models
      without a class token have no such row: use ``"evidence"``.
    - ``method="evidence"`` (skdict's): what j writes, through the
      attention layers, into the pooled token (the class token, or the
      mean of the patch tokens for pooled models), read in class-embedding
      space. In each block, j's term of the attention output at the pooled
      query is ``ls1(proj(A[query, j] v_j))`` (attention weights times
      value vectors, per head, without the bias); its class-c score is its
      dot product with the gradient of the class-c logit
      ``head(fc_norm(norm(.)))`` at the model's final pooled state, i.e.
      the classifier linearised where the model is. In class-logit units.

    The patch grid is upsampled bilinearly to the image size. Fused
    attention is unaffected: the attention weights are recomputed from the
    captured inputs.

    Parameters
    ----------
    projector : ClassEmbeddingProjector
        A fitted projector.
    images : array-like or list
        Images in any form :meth:`ClassEmbeddingProjector.project
        <skdict.ClassEmbeddingProjector.project>` takes.
    y : array-like of shape (n_images,), default=None
        Class to explain per image; None explains the model's prediction.
    method : {"gradient", "evidence"}, default="gradient"
        Which relevance to compute (see above).

    Returns
    -------
    heatmaps : ndarray of shape (n_images, H, W)
        Relevance per pixel (float32); positive patches support the class.

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
    grid = attribution.patch_relevance(projector, x, y, method)
    grid = grid.reshape(len(x), *projector.grid_size_)
    return attribution.upsample(grid, projector.input_size_[1:])


def perturbation_test(projector, images, y, *, method="gradient", protocol="authors",
                      fractions=None, n_seeds=10, random_state=None):
    """Accuracy when keeping only the most, least or randomly chosen patches.

    Patches are ranked by the relevance of :func:`explain` (``method``) for
    the true class; for each number of kept patches, the model sees the
    prefix tokens and only the kept patch tokens (the others are removed
    from the sequence, positions kept). As the authors name them,
    ``negative`` keeps the most relevant patches first (a good explanation
    keeps the accuracy high: large ``auc_negative``) and ``positive`` the
    least relevant first (small ``auc_positive``).

    Protocols:

    - ``protocol="authors"`` (default; their ``ViTPerturb`` and the areas
      of their ``plot_perturbation``): keep n = 1, ..., n_patches - 1
      patches; the random baseline keeps the first n patches of one random
      permutation per seed, the same for all images, averaged over
      `n_seeds` seeds; the area of a curve is
      ``sum(curve) / (max(curve) * n_patches)``.
    - ``protocol="fractions"``: keep the shares `fractions` of the patches
      (rounded, at least one); the random baseline draws one order per
      image; the area is the trapezoid rule over the fractions, divided by
      their range.

    Parameters
    ----------
    projector : ClassEmbeddingProjector
        A fitted projector.
    images : array-like or list
        Images in any form :meth:`ClassEmbeddingProjector.project
        <skdict.ClassEmbeddingProjector.project>` takes.
    y : array-like of shape (n_images,)
        True class of each image.
    method : {"gradient", "evidence"}, default="gradient"
        The relevance that ranks the patches (see :func:`explain`).
    protocol : {"authors", "fractions"}, default="authors"
        Which perturbation protocol to run (see above).
    fractions : array-like of float in (0, 1], default=None
        With ``protocol="fractions"``: shares of patches to keep,
        increasing; None for 0.1, 0.2, ..., 1.
    n_seeds : int, default=10
        With ``protocol="authors"``: random permutations averaged.
    random_state : int, RandomState instance or None, default=None
        Seed of the random baseline.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``n_kept``: the numbers of patches kept; ``fractions``: the same as
        shares of the patches; ``negative``, ``positive``, ``random``:
        accuracy curves; ``auc_negative``, ``auc_positive``,
        ``auc_random``: their areas (per ``protocol``); ``random_orders``:
        the random permutations, (n_seeds, n_patches) for ``"authors"``,
        (n_images, n_patches) for ``"fractions"``; ``method``, ``protocol``.

    Examples
    --------
    >>> from skdict import ClassEmbeddingProjector
    >>> from skdict.datasets import load_digits_images, make_digits_vit
    >>> from skdict.inspection import perturbation_test
    >>> images, y = load_digits_images(subset="test", return_X_y=True)
    >>> proj = ClassEmbeddingProjector(make_digits_vit(), device="cpu").fit()
    >>> result = perturbation_test(proj, images[:20], y[:20], n_seeds=2, random_state=0)
    >>> result.n_kept  # 1 to 15 of the 16 patches
    array([ 1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, 15])
    >>> result.negative.shape
    (15,)
    """
    check_is_fitted(projector)
    _check_choice("protocol", protocol, perturbation.PROTOCOLS)
    if protocol == "authors":
        if fractions is not None:
            raise ValueError(
                "fractions applies to protocol='fractions'; the authors' protocol keeps "
                "1, 2, ..., n_patches - 1 patches."
            )
        if not isinstance(n_seeds, Integral) or n_seeds < 1:
            raise ValueError(f"n_seeds must be a positive int, got {n_seeds!r}.")
    else:
        fractions = perturbation.check_fractions(fractions)
    x = projector._tensor(images)
    y = check_labels(y, len(x), len(projector.classes_))
    relevance = attribution.patch_relevance(projector, x, y, method)
    result = perturbation.perturbation_curves(
        projector, x, y, relevance, protocol, fractions, n_seeds,
        check_random_state(random_state),
    )
    result.update(method=method, protocol=protocol)
    return result


def perturbed_identifiability(projector, images, y, *, attention=None, keep=None):
    """Accuracy and identifiability when attention or the patches are perturbed.

    The authors' perturbation studies, reproducible offline:

    - ``attention="self_only"`` / ``"no_cls"`` (their
      ``ViTPerturbAttn``): in every block, after the softmax, each token
      other than the class token attends only to itself (its row of
      attention weights becomes one-hot), or gives no weight to the class
      token (its weight set to 0, the row not renormalised). The class
      token's own attention is left as it is.
    - ``keep`` (their ``ViTPerturbTokens``): only the patches marked in
      `keep` enter the model (the others are removed from the sequence,
      positions kept). With a mask of the object's patches, keeping it
      removes the context tokens (their ``mask_type="context"``), keeping
      its complement removes the object (``"class_label"``).

    Both can be combined; with neither, this is the unperturbed model. The
    identifiability of each layer is read as in
    :meth:`~skdict.ClassEmbeddingProjector.identifiability` (at the
    projector's ``site``), over the tokens that remain; the image-token
    measures are taken per image, then averaged over images (the same as
    pooling tokens when every image keeps as many patches).

    Parameters
    ----------
    projector : ClassEmbeddingProjector
        A fitted projector.
    images : array-like or list
        Images in any form :meth:`ClassEmbeddingProjector.project
        <skdict.ClassEmbeddingProjector.project>` takes.
    y : array-like of shape (n_images,)
        True class of each image.
    attention : {"self_only", "no_cls"} or None, default=None
        The attention perturbation, in every block.
    keep : array-like of bool of shape (n_images, n_patches), default=None
        The patches that enter the model, at least one per image, in the
        model's patch order (row-major over the patch grid); None keeps all.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``accuracy``: the model's top-1 accuracy; ``cls``,
        ``image_tokens``, ``top1_share`` and ``top1_image_share``: per
        layer, as :meth:`~skdict.ClassEmbeddingProjector.identifiability`
        returns them; ``layers``; ``attention``; ``n_kept``: the patches
        each image kept (None without `keep`).

    Examples
    --------
    >>> from skdict import ClassEmbeddingProjector
    >>> from skdict.datasets import load_digits_images, make_digits_vit
    >>> from skdict.inspection import perturbed_identifiability
    >>> images, y = load_digits_images(subset="test", return_X_y=True)
    >>> proj = ClassEmbeddingProjector(make_digits_vit(), device="cpu").fit()
    >>> result = perturbed_identifiability(proj, images[:20], y[:20], attention="no_cls")
    >>> result.image_tokens.shape
    (4,)
    """
    check_is_fitted(projector)
    if attention is not None:
        _check_choice("attention", attention, ATTENTION_EDITS)
    x = projector._tensor(images)
    y = check_labels(y, len(x), len(projector.classes_))
    if keep is not None:
        keep = np.asarray(keep)
        n_patches = int(np.prod(projector.grid_size_))
        if keep.dtype != bool or keep.shape != (len(x), n_patches):
            raise ValueError(
                f"keep must be a bool array of shape ({len(x)}, {n_patches}), one flag per "
                f"image and patch; got dtype {keep.dtype} and shape {keep.shape}."
            )
        if not keep.any(axis=1).all():
            raise ValueError("keep must keep at least one patch of every image.")
    return perturbation.perturbed_identifiability(projector, x, y, attention, keep)


# Downstream recovered (SAEBench's loss recovered, for a ViT) lives in its own module.
from ._vit.downstream import downstream_recovered  # noqa: E402

__all__ += ["downstream_recovered"]
