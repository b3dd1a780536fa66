"""The torch module behind SparseAutoencoder: encoder, activations, decoder.

Imported only once torch is known to be installed (see ``skdict.sae``).
All tensors live in the scaled input space: rows of X divided by the
estimator's ``scale_``.
"""

import torch

# Width of the rectangle kernel of the JumpReLU straight-through estimators
# (Rajamanoharan et al., 2024, use 0.001 on inputs of unit mean squared norm).
_JUMPRELU_BANDWIDTH = 1e-3
# Initial JumpReLU threshold, small enough that every latent can fire at first.
_JUMPRELU_INIT_THRESHOLD = 1e-3
# Weight of each new batch in BatchTopK's running inference threshold.
_THRESHOLD_MOMENTUM = 0.01


def _rectangle(u):
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    """``z * H(z - theta)``; the threshold's gradient is a kernel estimate."""

    @staticmethod
    def forward(ctx, pre, threshold):
        ctx.save_for_backward(pre, threshold)
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        grad_pre = grad * (pre > threshold)
        kernel = _rectangle((pre - threshold) / _JUMPRELU_BANDWIDTH)
        grad_threshold = -(threshold / _JUMPRELU_BANDWIDTH) * kernel * grad
        return grad_pre, grad_threshold.sum(0)


class _Step(torch.autograd.Function):
    """Heaviside ``H(z - theta)`` (the L0 norm's terms), same gradient estimate."""

    @staticmethod
    def forward(ctx, pre, threshold):
        ctx.save_for_backward(pre, threshold)
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        kernel = _rectangle((pre - threshold) / _JUMPRELU_BANDWIDTH)
        grad_threshold = -(1.0 / _JUMPRELU_BANDWIDTH) * kernel * grad
        return torch.zeros_like(pre), grad_threshold.sum(0)


def _keep_topk(values, k, dim):
    """Zero all but the `k` largest entries along `dim`, then apply ReLU."""
    top, idx = values.topk(k, dim=dim, sorted=False)
    return torch.zeros_like(values).scatter(dim, idx, top.clamp_min(0))


class SAEModule(torch.nn.Module):
    """Sparse autoencoder ``x_hat = f(W_enc (x - b_dec) + b_enc) W_dec + b_dec``.

    Parameters
    ----------
    n_features, n_components : int
        Input dimension and number of latents.
    activation : {"topk", "batchtopk", "relu", "jumprelu"}
        Sparsifying nonlinearity ``f``.
    k : int
        Latents per row (topk), or per row on average over a batch (batchtopk).
    generator : torch.Generator
        Seeds the initial decoder; the encoder starts tied to it.
    """

    def __init__(self, n_features, n_components, activation, k, generator):
        super().__init__()
        weight = torch.randn(n_components, n_features, generator=generator)
        weight /= weight.norm(dim=1, keepdim=True)
        self.activation = activation
        self.k = k
        self.decoder_weight = torch.nn.Parameter(weight)
        self.encoder_weight = torch.nn.Parameter(weight.clone())
        self.encoder_bias = torch.nn.Parameter(torch.zeros(n_components))
        self.decoder_bias = torch.nn.Parameter(torch.zeros(n_features))
        if activation == "jumprelu":
            # The threshold itself, not its log as in SAELens: Adam then moves
            # it by about the learning rate per step, so that it reaches the
            # scale of the pre-activations within an epoch or two of small data
            # instead of thousands of steps.
            self.threshold = torch.nn.Parameter(
                torch.full((n_components,), _JUMPRELU_INIT_THRESHOLD)
            )
        # BatchTopK's inference threshold; NaN until the first training batch.
        self.register_buffer("batch_threshold", torch.tensor(float("nan")))

    def preactivation(self, x):
        return (x - self.decoder_bias) @ self.encoder_weight.T + self.encoder_bias

    def activate(self, pre, training):
        """Codes from pre-activations; BatchTopK learns its threshold when training."""
        if self.activation == "topk":
            return _keep_topk(pre, self.k, dim=1)
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            return _JumpReLU.apply(pre, self.threshold)
        if not training:
            return pre * (pre > self.batch_threshold)
        n_keep = min(self.k * pre.shape[0], pre.numel())
        codes = _keep_topk(pre.reshape(-1), n_keep, dim=0).reshape(pre.shape)
        self._update_batch_threshold(codes)
        return codes

    @torch.no_grad()
    def _update_batch_threshold(self, codes):
        fired = codes[codes > 0]
        if fired.numel() == 0:
            return
        smallest = fired.min()
        if torch.isnan(self.batch_threshold):
            self.batch_threshold.copy_(smallest)
        else:
            self.batch_threshold.lerp_(smallest, _THRESHOLD_MOMENTUM)

    def l0_surrogate(self, pre):
        """Per-entry ``H(z - theta)`` with a threshold gradient (JumpReLU's L0 loss)."""
        return _Step.apply(pre, self.threshold)

    def decode(self, codes):
        return codes @ self.decoder_weight + self.decoder_bias

    def encode(self, x):
        """Inference codes of scaled rows."""
        return self.activate(self.preactivation(x), training=False)

    @torch.no_grad()
    def apply_constraints(self):
        """Unit-norm decoder rows, and non-negative JumpReLU thresholds."""
        self.decoder_weight /= self.decoder_weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if self.activation == "jumprelu":
            self.threshold.clamp_(min=0)

    @torch.no_grad()
    def project_decoder_grad(self):
        """Drop the gradient component along each decoder row (keeps norms at 1)."""
        grad = self.decoder_weight.grad
        if grad is not None:
            W = self.decoder_weight
            grad -= (grad * W).sum(1, keepdim=True) * W
