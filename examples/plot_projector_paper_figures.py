"""
=================================================================
The class-embedding paper's figures, as the authors compute them
=================================================================

Vilas, Schaumlöffel & Roig (NeurIPS 2023) read a ViT's hidden states through
its own classifier and draw a set of figures from that reading. This example
draws the same set on a tiny ViT trained on sklearn's 8x8 digits, next to the
same architecture with random weights, with the definitions of the authors'
code (``github.com/martinagvilas/vit-cls_emb``), which are the defaults of
:mod:`skdict.inspection`:

1. class identifiability per block, class token and image tokens, with the
   authors' one Wilcoxon test per block (all tokens pooled);
2. the class-similarity change rate of the attention and MLP layers;
3. the key-value agreement of the memories, with its random-class control;
4. linear probes (their ridge regression) against the projection;
5. the perturbation test (their attention-gradient relevance, keeping
   1, ..., n - 1 patches, a random baseline of shared permutations).

It ends with the attention and context perturbations, which the paper
reports as numbers.
"""

# %%
# Train the digits ViT
# --------------------
import matplotlib.pyplot as plt
import numpy as np

from skdict import ClassEmbeddingProjector
from skdict.datasets import load_digits_images, make_digits_vit, train_digits_vit
from skdict.inspection import (
    class_similarity_change,
    linear_probe,
    perturbation_test,
    perturbed_identifiability,
    value_agreement,
)

images, y = load_digits_images(subset="test", return_X_y=True)
models = {"trained": train_digits_vit(random_state=0), "random": make_digits_vit(random_state=1)}
projectors = {
    name: ClassEmbeddingProjector(model, device="cpu", batch_size=512).fit()
    for name, model in models.items()
}
blocks = projectors["trained"].layers_
styles = {"trained": "-", "random": "--"}

# %%
# 1. Class identifiability over the blocks
# ----------------------------------------
# ``r = 1 - rank / n_classes`` of the true class among a token's projected
# class scores (1: on top; ties count against it). The stars mark blocks where
# the trained model beats the random one (one-sided Wilcoxon test over all
# tokens pooled, p < 0.05), the authors' test.
ident = projectors["trained"].identifiability(images, y, baseline=projectors["random"])
curves = {"trained": ident, "random": ident.baseline}
fig, ax = plt.subplots(figsize=(5, 3.5))
for name, result in curves.items():
    ax.plot(blocks, result.cls, "o" + styles[name], color="C0", label=f"{name}: class token")
    ax.plot(blocks, result.image_tokens, "s" + styles[name], color="C1",
            label=f"{name}: image tokens")
significant = np.flatnonzero(ident.pvalue.all_tokens < 0.05)
ax.plot(np.asarray(blocks)[significant], np.full(len(significant), 1.03), "*", color="gray")
ax.axhline(0.55, color="gray", lw=0.8, ls=":")
ax.set(xlabel="block", ylabel="class identifiability r", xticks=blocks)
ax.legend(fontsize=7)
fig.tight_layout()
print("p-values, all tokens pooled:", np.array2string(ident.pvalue.all_tokens, precision=3))
print("images with an identifiable image token:", np.round(ident.top1_image_share, 2))

# %%
# 2. What attention and MLP layers add
# ------------------------------------
# The share of tokens whose true-class logit is higher in a layer's output,
# projected alone, than in the block's input; and, for the whole block, at its
# output than at its input (the paper's figures start at the second block).
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
for ax, tokens, title in zip(axes, ("cls", "patches"), ("class token", "image tokens")):
    for name, model in models.items():
        proj = ClassEmbeddingProjector(model, tokens=tokens, device="cpu", batch_size=512)
        change = class_similarity_change(proj.fit(), images, y)
        for branch, color in (("attn", "C0"), ("mlp", "C2"), ("block", "C3")):
            ax.plot(blocks, change[branch], "o" + styles[name], color=color,
                    label=f"{branch}, {name}")
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.set(title=title, xlabel="block", xticks=blocks)
axes[0].set_ylabel("class similarity change rate")
axes[1].legend(fontsize=7)
fig.tight_layout()

# %%
# 3. Key-value memories
# ---------------------
# A token's 5 most activated memories agree with its class when one of them is
# among the 5 values that score the true class highest. The control uses the
# top memories of a random class instead.
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
for ax, kind in zip(axes, ("attn", "mlp")):
    for name, proj in projectors.items():
        memories = value_agreement(proj, images, y, kind=kind)
        ax.plot(blocks, memories.key_value_agreement, "o" + styles[name], color="C0",
                label=f"true class, {name}")
        ax.plot(blocks, memories.key_value_agreement_random, "x" + styles[name], color="C7",
                label=f"random class, {name}")
        if name == "trained":
            print(f"{kind}: agreement right {np.round(memories.key_value_agreement_correct, 2)}"
                  f" wrong {np.round(memories.key_value_agreement_wrong, 2)}")
    ax.set(title=kind, xlabel="block", xticks=blocks)
axes[0].set_ylabel("key-value agreement rate")
axes[1].legend(fontsize=7)
fig.tight_layout()

# %%
# 4. Linear probes against the projection
# ---------------------------------------
# The authors' probes: ridge regression on the raw states with +1 / -1
# targets, one per token position, held-out top-1 accuracy. On the trained
# model the probes decode the digit from every block, where the projection of
# the image tokens stays low: it shows what the model's own classifier reads.
# On the random network the ridge probes decode little (a logistic probe on
# standardised states does much better there, ``probe="logistic"``), so the
# comparison depends on the probe.
all_images, all_y = load_digits_images(return_X_y=True)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
for ax, tokens, title in zip(axes, ("cls", "image_tokens"), ("class token", "image tokens")):
    for name, proj in projectors.items():
        probes = linear_probe(proj, all_images, all_y)
        ax.plot(blocks, probes.probe[f"{tokens}_accuracy"], "o" + styles[name], color="C1",
                label=f"ridge probe, {name}")
        ax.plot(blocks, probes.projection[f"{tokens}_accuracy"], "s" + styles[name],
                color="C0", label=f"projection, {name}")
    ax.set(title=title, xlabel="block", xticks=blocks)
axes[0].set_ylabel("top-1 accuracy (held out)")
axes[1].legend(fontsize=7)
fig.tight_layout()

# %%
# 5. The perturbation test
# ------------------------
# Patches ranked by the authors' relevance (minus the gradient of each block's
# projected class-token loss with respect to the class token's attention
# weights); "negative" keeps the most relevant patches, "positive" the least
# relevant, "random" follows shared random orders (10 seeds).
curves = perturbation_test(projectors["trained"], images, y, random_state=0)
fig, ax = plt.subplots(figsize=(5, 3.5))
removed = 100 * (1 - curves.fractions)
for name in ("negative", "positive", "random"):
    ax.plot(removed, curves[name], label=f"{name} (area {curves[f'auc_{name}']:.2f})")
ax.set(xlabel="% of patches removed", ylabel="accuracy")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
# Attention and context perturbations
# -----------------------------------
# Accuracy and last-block identifiability of the image tokens when tokens only
# attend to themselves, when they ignore the class token, and when only the
# digit's own patches (those with ink) enter the model.
ink = images[:, 0].reshape(len(images), 4, 2, 4, 2).mean(axis=(2, 4)).reshape(len(images), -1)
settings = {"none": {}, "self_only": {"attention": "self_only"},
            "no_cls": {"attention": "no_cls"}, "no context": {"keep": ink > 0.1}}
for setting, kwargs in settings.items():
    result = perturbed_identifiability(projectors["trained"], images, y, **kwargs)
    print(f"{setting:10s} accuracy {result.accuracy:.3f}  image tokens r "
          f"{result.image_tokens[-1]:.3f}  top-1 share {result.top1_share[-1]:.3f}")
plt.show()
