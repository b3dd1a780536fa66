"""
=====================================================
Class-embedding projection versus linear probes
=====================================================

A linear probe trained on a layer's hidden states tells whether class
information *can* be decoded from them; projecting the same states onto the
model's own class embeddings (``head(norm(h))``) tells whether the model
*itself* reads them that way. Vilas, Schaumlöffel & Roig (NeurIPS 2023)
argue for the second. Here we put both side by side, layer by layer, for a
tiny ViT trained on sklearn's 8x8 digits and for the same architecture with
random weights.
"""

# %%
# Train the digits ViT and fit the probes
# ---------------------------------------
# :func:`skdict.inspection.linear_probe` holds out a stratified
# quarter of the images, fits a probe per layer on the class token and one per
# image-token position, and scores the held-out images with the probes and
# with the projection. Here the probes are logistic regressions on
# standardised states (``probe="logistic"``; the default is the authors' ridge
# regression, see :ref:`sphx_glr_auto_examples_plot_projector_paper_figures.py`).
# Both are summarised by the class identifiability ``r = 1 - rank / n_classes``
# (1: true class on top; ties count against it).
import matplotlib.pyplot as plt
import numpy as np

from skdict import ClassEmbeddingProjector
from skdict.datasets import load_digits_images, make_digits_vit, train_digits_vit
from skdict.inspection import linear_probe

images, y = load_digits_images(return_X_y=True)
models = {"trained": train_digits_vit(random_state=0), "random": make_digits_vit(random_state=1)}
results = {
    name: linear_probe(
        ClassEmbeddingProjector(model, device="cpu", batch_size=512).fit(), images, y,
        probe="logistic", random_state=0,
    )
    for name, model in models.items()
}
for name, result in results.items():
    for readout in ("probe", "projection"):
        print(f"{name:8s} {readout:10s} CLS {np.round(result[readout].cls, 3)} "
              f"image tokens {np.round(result[readout].image_tokens, 3)}")

# %%
# Probes decode the class even from random weights
# ------------------------------------------------
# The probes find the digit almost as well in the random network as in the
# trained one: the pixels of an 8x8 digit, randomly mixed, stay linearly
# separable. The projection is at chance (0.55 for ten classes) for the random
# model and rises over the blocks only after training. On the trained model
# the image tokens carry the class for a probe at every block, yet their
# projection stays near chance until the last block: the classifier reads the
# class token, and nothing forces the image tokens to point at the class
# embedding the way the class token does.
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
for ax, tokens, title in zip(axes, ("cls", "image_tokens"), ("class token", "image tokens")):
    for name, style in (("trained", "-"), ("random", "--")):
        layers = results[name].layers
        ax.plot(layers, results[name].probe[tokens], "o" + style, color="C1",
                label=f"probe, {name}")
        ax.plot(layers, results[name].projection[tokens], "s" + style, color="C0",
                label=f"projection, {name}")
    ax.axhline(0.55, color="gray", lw=0.8, ls=":")
    ax.set_title(title)
    ax.set_xlabel("block")
    ax.set_xticks(layers)
axes[0].set_ylabel("class identifiability r (held out)")
axes[1].legend(fontsize=8, loc="lower right")
fig.tight_layout()

# %%
# Is the trained projection better than chance? A paired test
# ------------------------------------------------------------
# Given a random-weights ``baseline``, the analyses also return one-sided
# Wilcoxon signed-rank p-values per block (here paired by token), as the paper
# uses to call a difference significant.
test = results["trained"].test_index
projector = ClassEmbeddingProjector(models["trained"], device="cpu", batch_size=512).fit()
baseline = ClassEmbeddingProjector(models["random"], device="cpu", batch_size=512)
ident = projector.identifiability(images[test], y[test], baseline=baseline)
print("p-values, class token: ", np.array2string(ident.pvalue.cls, precision=2))
print("p-values, image tokens:", np.array2string(ident.pvalue.image_tokens, precision=2))
plt.show()
