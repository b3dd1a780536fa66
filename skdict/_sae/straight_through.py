"""JumpReLU's straight-through estimators, as torch autograd functions.

Imported by :class:`skdict._sae.activations.JumpReLU` only when it runs on
tensors (torch is installed by then). The Heaviside step ``H(z - theta)`` has
no useful gradient in the threshold ``theta``; Rajamanoharan et al. (2024)
replace it by a rectangle-kernel estimate of width ``BANDWIDTH``.
"""

import torch

# Width of the rectangle kernel (Rajamanoharan et al., 2024, use 0.001 on
# inputs of unit mean squared norm).
BANDWIDTH = 1e-3


def _rectangle(u):
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """``z * H(z - theta)``; the threshold's gradient is a kernel estimate."""

    @staticmethod
    def forward(ctx, pre, threshold):
        ctx.save_for_backward(pre, threshold)
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        grad_pre = grad * (pre > threshold)
        kernel = _rectangle((pre - threshold) / BANDWIDTH)
        grad_threshold = -(threshold / BANDWIDTH) * kernel * grad
        return grad_pre, grad_threshold.sum(0)


class StepFunction(torch.autograd.Function):
    """Heaviside ``H(z - theta)`` (the L0 norm's terms), same gradient estimate."""

    @staticmethod
    def forward(ctx, pre, threshold):
        ctx.save_for_backward(pre, threshold)
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        kernel = _rectangle((pre - threshold) / BANDWIDTH)
        grad_threshold = -(1.0 / BANDWIDTH) * kernel * grad
        return torch.zeros_like(pre), grad_threshold.sum(0)
