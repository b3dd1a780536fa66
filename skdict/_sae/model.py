"""The torch module behind SparseAutoencoder: encoder, activation, decoder.

Imported only once torch is known to be installed (see ``skdict.sae``).
All tensors live in the scaled input space: rows of X divided by the
estimator's ``scale_``.
"""

import torch


class SAEModule(torch.nn.Module):
    """Sparse autoencoder ``x_hat = f(W_enc (x - b_dec) + b_enc) W_dec + b_dec``.

    Parameters
    ----------
    n_features, n_components : int
        Input dimension and number of latents.
    activation : skdict._sae.activations.Activation
        Sparsifying nonlinearity ``f``; the tensors of its
        :meth:`~skdict._sae.activations.Activation.init_state` become
        parameters or buffers of the module, under their own names.
    generator : torch.Generator
        Seeds the initial decoder; the encoder starts tied to it.
    """

    def __init__(self, n_features, n_components, activation, generator):
        super().__init__()
        weight = torch.randn(n_components, n_features, generator=generator)
        weight /= weight.norm(dim=1, keepdim=True)
        self.activation = activation
        self.decoder_weight = torch.nn.Parameter(weight)
        self.encoder_weight = torch.nn.Parameter(weight.clone())
        self.encoder_bias = torch.nn.Parameter(torch.zeros(n_components))
        self.decoder_bias = torch.nn.Parameter(torch.zeros(n_features))
        state = activation.init_state(n_components)
        for name, tensor in state.items():
            if isinstance(tensor, torch.nn.Parameter):
                self.register_parameter(name, tensor)
            else:
                self.register_buffer(name, tensor)
        self._state_names = tuple(state)

    @property
    def activation_state(self):
        """The activation's tensors by name, wherever the module has moved them."""
        return {name: getattr(self, name) for name in self._state_names}

    def preactivation(self, x):
        return (x - self.decoder_bias) @ self.encoder_weight.T + self.encoder_bias

    def activate(self, pre, training):
        """Codes from pre-activations (the activation may update its state when training)."""
        return self.activation.forward(pre, self.activation_state, training)

    def sparsity_loss(self, pre, codes):
        """The activation's unweighted sparsity penalty, or None."""
        return self.activation.sparsity_loss(pre, codes, self.decoder_weight,
                                             self.activation_state)

    def decode(self, codes):
        return codes @ self.decoder_weight + self.decoder_bias

    def encode(self, x):
        """Inference codes of scaled rows."""
        return self.activate(self.preactivation(x), training=False)

    @torch.no_grad()
    def apply_constraints(self):
        """Unit-norm decoder rows, and the activation's own constraint."""
        self.decoder_weight /= self.decoder_weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.activation.constrain(self.activation_state)

    @torch.no_grad()
    def project_decoder_grad(self):
        """Drop the gradient component along each decoder row (keeps norms at 1)."""
        grad = self.decoder_weight.grad
        if grad is not None:
            W = self.decoder_weight
            grad -= (grad * W).sum(1, keepdim=True) * W

    def export_threshold(self):
        """The activation's fitted ``threshold_`` (numpy, float or None)."""
        return self.activation.export_state(self.activation_state)

    @torch.no_grad()
    def import_threshold(self, threshold):
        """Load a fitted ``threshold_`` into the activation's tensors."""
        self.activation.import_state(threshold, self.activation_state)
