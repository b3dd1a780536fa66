"""Vision-transformer machinery behind the projector, the embedders and the inspection functions.

Private: the public entry points are :class:`skdict.ClassEmbeddingProjector`,
:class:`skdict.TimmEmbedder`, :class:`skdict.CLIPEmbedder`,
:mod:`skdict.inspection` and the digits helpers of :mod:`skdict.datasets`.

- ``timm_models``: build a timm model from a name, an instance or a local
  checkpoint (named so as never to be confused with the ``timm`` package).
- ``checkpoint``: refuse weight files whose loading would run code (timm and
  open_clip checkpoints), weights never chosen, and files that are not the
  weights of the model asked for.
- ``hub``: offline-safe Hugging Face hub access for pretrained weights.
- ``images``: arrays, PIL images or paths to the model's input tensor.
- ``hooks``: forward hooks that capture hidden states at the sites of ViT blocks.
- ``class_analyses``: the class-embedding measures (ranks, identifiability,
  class-similarity change, key-value memories, probes, paired baselines).
- ``attribution``: patch evidence through attention and the kept-patch forward
  pass of the perturbation test.
- ``digits_vit``: sklearn's digits as images and a tiny ViT trained on them.
"""
