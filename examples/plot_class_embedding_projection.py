"""
==========================================================
Reading a vision transformer in its class-embedding space
==========================================================

A ViT's classifier reads the class token after the last block. Vilas,
Schaumlöffel & Roig (NeurIPS 2023) apply that same readout,
``head(norm(h))``, to every token of every block: the rank of the true
class among the projected scores shows how class evidence builds up over
the layers.

Here we train a tiny ViT (4 blocks, width 64, 2x2 patches) on sklearn's 8x8
digits in a few seconds, then compare it with the same architecture with
random weights, and explain one prediction.
"""

# %%
# Train the digits ViT
# --------------------
import matplotlib.pyplot as plt
import numpy as np
import torch

from skdict import ClassEmbeddingProjector
from skdict.datasets import load_digits_images, make_digits_vit, train_digits_vit
from skdict.inspection import explain, perturbation_test

trained = train_digits_vit(random_state=0)
images, y = load_digits_images(subset="test", return_X_y=True)
with torch.no_grad():
    accuracy = np.mean(trained(torch.from_numpy(images)).argmax(1).numpy() == y)
print(f"test accuracy: {accuracy:.3f}")

# %%
# Class identifiability per block
# -------------------------------
# ``r = 1 - rank / n_classes`` is 1 when the true class is the top class of
# a token's projection. The class token of the trained model becomes
# identifiable early; patch tokens follow more slowly. With random weights,
# r stays near chance (0.55 for ten classes).
results = {
    name: ClassEmbeddingProjector(model, device="cpu", batch_size=256)
    .fit()
    .identifiability(images, y)
    for name, model in [("trained", trained), ("random", make_digits_vit(random_state=1))]
}
fig, ax = plt.subplots(figsize=(5, 3.5))
for name, style in [("trained", "-"), ("random", "--")]:
    ax.plot(results[name].layers, results[name].cls, "o" + style, label=f"{name}: CLS")
    ax.plot(results[name].layers, results[name].image_tokens, "s" + style,
            label=f"{name}: image tokens")
ax.set_xlabel("block")
ax.set_ylabel("class identifiability r")
ax.set_xticks(results["trained"].layers)
ax.legend(fontsize=8)
fig.tight_layout()
for name, result in results.items():
    print(name, "CLS:", np.round(result.cls, 3), "image tokens:",
          np.round(result.image_tokens, 3))

# %%
# Explaining a prediction
# -----------------------
# :func:`skdict.inspection.explain` scores each patch, by default as the
# paper's code does: minus the gradient of each block's class-token loss,
# projected onto the class embeddings, with respect to the class token's
# attention weights; the patch grid is upsampled to the image. Keeping only the
# most relevant patches ("negative" perturbation) preserves the accuracy better
# than a random order, and keeping the least relevant ones ("positive") worse.
projector = ClassEmbeddingProjector(trained, device="cpu", batch_size=256).fit()
heatmap = explain(projector, images[:1], y[:1])[0]
curves = perturbation_test(projector, images, y, random_state=0)
print(f"area negative {curves.auc_negative:.3f}, random {curves.auc_random:.3f}, "
      f"positive {curves.auc_positive:.3f}")

fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
axes[0].imshow(images[0, 0], cmap="gray_r")
axes[0].set_title(f"digit {y[0]}")
limit = np.abs(heatmap).max()
shown = axes[1].imshow(heatmap, cmap="RdBu_r", vmin=-limit, vmax=limit)
axes[1].set_title("relevance for the true class")
fig.colorbar(shown, ax=axes[1])
for ax in axes[:2]:
    ax.set_axis_off()
for name in ("negative", "random", "positive"):
    axes[2].plot(curves.fractions, curves[name], label=name)
axes[2].set_xlabel("share of patches kept")
axes[2].set_ylabel("accuracy")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()
