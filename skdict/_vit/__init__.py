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
- ``attention``: a timm attention layer recomputed from its input, its weights exposed.
- ``interventions``: changes to the forward pass (kept patches, edited attention).
- ``class_analyses``: ranks, identifiability, class-similarity change and the
  paired baselines the analyses share.
- ``memories``: the MLP and attention layers as key-value memories.
- ``probes``: the linear probes (the authors' ridge, or a logistic regression).
- ``attribution``: patch relevance (the authors' attention gradients, or
  skdict's attention evidence).
- ``perturbation``: the perturbation-test protocols and identifiability under a
  perturbed forward pass.
- ``digits_vit``: sklearn's digits as images and a tiny ViT trained on them.
"""
