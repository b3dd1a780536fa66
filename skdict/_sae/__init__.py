"""The machinery behind :class:`skdict.SparseAutoencoder` (``skdict/sae.py``).

``activations`` holds one class per activation (TopK, BatchTopK, ReLU,
JumpReLU) behind a small interface, registered by the name the estimator's
``activation`` parameter takes; it imports no torch, so that the estimator
is constructed and validated without it. The torch-only modules come after:
``model`` is the torch module (encoder, activation, decoder) that asks its
activation for codes, state and constraints; ``straight_through`` holds
JumpReLU's gradient estimators; ``training`` is the training practice
(blocked reading of X, Adam with its schedule, sparsity and AuxK losses,
dead-latent tracking, held-out scoring); ``saelens`` reads and writes SAELens'
on-disk layout. Nothing is imported here, so importing any of them pulls in
only what it needs.
"""
