"""Binary weights: every weight is +1 or -1, times one scale per output channel.

A layer's real weights ``W`` (shape ``(out, ...)``) are kept for training,
but the forward pass uses ``sign(W) * alpha`` where ``alpha[c]`` is the mean
absolute value of output channel ``c``'s weights (XNOR-Net's choice: the
scale that makes ``alpha * sign(W)`` closest to ``W`` in the L2 sense). On a
microcontroller each weight is then one bit, and a multiply-accumulate is an
add or a subtract.

``sign`` has gradient zero almost everywhere, so training uses the
*straight-through estimator* (STE): the backward pass treats ``sign`` as the
identity where ``|W| <= 1`` and as a constant beyond, so weights that have
grown far from zero stop moving (Courbariaux et al., BinaryConnect, 2015).

The sign of 0 is +1 here, everywhere (Python, the packed bits, the C code).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class SignSTE(torch.autograd.Function):
    """``sign`` forward (0 -> +1); the clipped straight-through gradient backward."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return torch.where(weight >= 0, torch.ones_like(weight), -torch.ones_like(weight))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        """The gradient of the loss with respect to ``weight``, given the one with respect to ``sign(weight)``."""
        (weight,) = ctx.saved_tensors
        # TODO: return `grad_output` where |weight| <= 1 and 0 where |weight| > 1
        #       (the clipped straight-through estimator; same shape as `weight`).
        # BEGIN SOLUTION
        return grad_output * (weight.abs() <= 1).to(grad_output.dtype)
        # END SOLUTION
        # STUB: return grad_output


def channel_scales(weight: torch.Tensor) -> torch.Tensor:
    """``alpha``: the mean absolute value of every output channel (dimension 0), shape ``(out,)``."""
    return weight.abs().reshape(weight.shape[0], -1).mean(dim=1)


def binarize(weight: torch.Tensor) -> torch.Tensor:
    """``sign(W) * alpha[c]``, the weights the binary layers compute with; differentiable through the STE.

    ``alpha`` comes from :func:`channel_scales` (one number per output
    channel, treated as a constant by autograd: take it from
    ``weight.detach()``); the sign comes from ``SignSTE.apply`` so gradients
    reach ``weight``. The result has ``weight``'s shape.
    """
    # TODO: 1. alpha = channel_scales(weight.detach()), reshaped to (out, 1, 1, ...) so it broadcasts
    #          over the other dimensions of `weight` (conv: 4 dimensions, linear: 2);
    #       2. return SignSTE.apply(weight) * alpha.
    # BEGIN SOLUTION
    alpha = channel_scales(weight.detach()).reshape(-1, *([1] * (weight.dim() - 1)))
    return SignSTE.apply(weight) * alpha
    # END SOLUTION
    # STUB: return weight


def pack_signs(signs: torch.Tensor) -> torch.Tensor:
    """Pack a ``(rows, n)`` tensor of +1/-1 into ``(rows, ceil(n / 8))`` uint8, the layout of the C header.

    Row by row: weight ``i`` of a row goes to byte ``i // 8``, bit ``i % 8``
    (bit 0 is the least significant), as 1 for +1 and 0 for -1; the unused
    high bits of a row's last byte are 0. Every row starts on a new byte, so
    the C code finds output channel ``c`` at ``c * ceil(n / 8)``.
    """
    rows, n = signs.shape
    if not bool(((signs == 1) | (signs == -1)).all()):
        raise ValueError("pack_signs takes +1 and -1 only; binarize the weights first (sign(W), 0 -> +1)")
    # TODO: return a (rows, ceil(n / 8)) torch.uint8 tensor with bit (i % 8) of byte (i // 8) set
    #       exactly when signs[:, i] == +1 (hint: pad the bits with zeros to a multiple of 8, reshape to
    #       (rows, bytes, 8) and add up bit * 2**position).
    # BEGIN SOLUTION
    nbytes = (n + 7) // 8
    bits = torch.zeros(rows, nbytes * 8, dtype=torch.int64)
    bits[:, :n] = (signs == 1).to(torch.int64)
    weights = 2 ** torch.arange(8, dtype=torch.int64)
    return (bits.reshape(rows, nbytes, 8) * weights).sum(dim=2).to(torch.uint8)
    # END SOLUTION
    # STUB: return torch.zeros(rows, (n + 7) // 8, dtype=torch.uint8)


def unpack_signs(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The inverse of :func:`pack_signs`: ``(rows, ceil(n / 8))`` uint8 -> ``(rows, n)`` float +1/-1."""
    positions = torch.arange(n)
    bits = (packed.to(torch.int64)[:, positions // 8] >> (positions % 8)) & 1
    return bits.to(torch.float32) * 2 - 1


class BinaryConv2d(nn.Conv2d):
    """A convolution whose forward pass uses :func:`binarize` of its weights (no bias: BatchNorm follows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, binarize(self.weight), None, self.stride, self.padding)


class BinaryLinear(nn.Linear):
    """A linear layer whose forward pass uses :func:`binarize` of its weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, binarize(self.weight), self.bias)
