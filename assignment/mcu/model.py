"""The microcontroller network: three binary 3x3 convolutions and one binary linear layer on 16x16 colour images.

Each block is conv (no bias) -> BatchNorm -> ReLU -> 2x2 max-pool, so the
stored activations shrink 4x per block (16x16 -> 8x8 -> 4x4 -> 2x2). On the
board, BatchNorm and the weight scale fold into one integer multiplier and
bias per channel (``mcu/export.py``). ``binary=False`` builds the same shape
with float weights, the reference the binary model is compared with.

Channels are removed whole (structured pruning) by :meth:`TinyNet.remove_channel`:
a pruned network is just a smaller dense one, which is what a
microcontroller can run without index arrays.
"""
from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from homework import MCU_CLASSES, MCU_IN_CHANNELS, MCU_INPUT_OFFSET, MCU_INPUT_SCALE, MCU_RESOLUTION

from .binary import BinaryConv2d, BinaryLinear, channel_scales
from .budget import LayerShape

DEFAULT_CHANNELS = (16, 32, 32)


class TinyNet(nn.Module):
    """``len(channels)`` conv blocks then a linear classifier; binary weights unless ``binary=False``."""

    def __init__(self, channels: Sequence[int] = DEFAULT_CHANNELS, binary: bool = True,
                 resolution: int = MCU_RESOLUTION, in_channels: int = MCU_IN_CHANNELS,
                 classes: int = MCU_CLASSES) -> None:
        super().__init__()
        if resolution % (2 ** len(channels)):
            raise ValueError(f"a {resolution}x{resolution} input cannot be halved {len(channels)} times")
        conv, linear = (BinaryConv2d, BinaryLinear) if binary else (nn.Conv2d, nn.Linear)
        self.binary, self.resolution, self.in_channels = binary, resolution, in_channels
        widths = [in_channels, *channels]
        self.convs = nn.ModuleList(conv(a, b, 3, padding=1, bias=False) for a, b in zip(widths, widths[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm2d(b) for b in channels)
        side = resolution // 2 ** len(channels)
        self.fc = linear(channels[-1] * side * side, classes)

    @property
    def channels(self) -> List[int]:
        return [conv.out_channels for conv in self.convs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = F.max_pool2d(F.relu(norm(conv(x))), 2)
        return self.fc(x.flatten(1))

    def shapes(self) -> List[LayerShape]:
        """The layers as the budget sees them (``mcu/budget.py``): what is stored, weights, MACs."""
        layers, side, width = [], self.resolution, self.in_channels
        for index, conv in enumerate(self.convs):
            out = conv.out_channels
            layers.append(LayerShape(f"conv{index + 1}", (width, side, side), (out, side // 2, side // 2),
                                     out, width * 9, out * side * side * width * 9))
            side, width = side // 2, out
        layers.append(LayerShape("fc", (self.fc.in_features,), (self.fc.out_features,), self.fc.out_features,
                                 self.fc.in_features, self.fc.in_features * self.fc.out_features,
                                 out_value_bytes=4))
        return layers

    def channel_importance(self, index: int) -> torch.Tensor:
        """How much each output channel of conv ``index`` contributes: the size of its output per unit input.

        That is the channel's weight scale times BatchNorm's ``|gamma| / sqrt(var + eps)``
        (for float weights, the mean ``|W|`` of the channel plays the scale's part).
        """
        norm = self.norms[index]
        gain = norm.weight.detach().abs() / torch.sqrt(norm.running_var + norm.eps)
        return channel_scales(self.convs[index].weight.detach()) * gain

    @torch.no_grad()
    def remove_channel(self, index: int, channel: int) -> None:
        """Remove output channel ``channel`` of conv ``index``, and the weights that read it in the next layer."""
        if self.convs[index].out_channels == 1:
            raise ValueError(f"conv{index + 1} has one channel left; removing it would disconnect the network")
        keep = [c for c in range(self.convs[index].out_channels) if c != channel]
        self.convs[index] = _conv_like(self.convs[index], self.convs[index].weight[keep])
        old = self.norms[index]
        norm = nn.BatchNorm2d(len(keep), eps=old.eps, momentum=old.momentum)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(norm, name).data.copy_(getattr(old, name)[keep])
        norm.num_batches_tracked.copy_(old.num_batches_tracked)
        norm.train(old.training)
        self.norms[index] = norm
        if index + 1 < len(self.convs):
            self.convs[index + 1] = _conv_like(self.convs[index + 1], self.convs[index + 1].weight[:, keep])
        else:
            area = self.fc.in_features // (len(keep) + 1)
            columns = [c * area + k for c in keep for k in range(area)]
            fc = type(self.fc)(len(columns), self.fc.out_features)
            fc.weight.data.copy_(self.fc.weight[:, columns])
            fc.bias.data.copy_(self.fc.bias)
            self.fc = fc


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor) -> nn.Conv2d:
    """A conv of ``conv``'s type and padding holding ``weight``."""
    new = type(conv)(weight.shape[1], weight.shape[0], 3, padding=1, bias=False)
    new.weight.data.copy_(weight)
    return new


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> the float model's input ``(pixel - 128) / 64`` (what the board sees as int8)."""
    return (images.float() - MCU_INPUT_OFFSET) / MCU_INPUT_SCALE


def downsample(images: torch.Tensor, resolution: int = MCU_RESOLUTION) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) CIFAR-10 images -> uint8 (N, 3, resolution, resolution): box average, rounded."""
    factor = images.shape[-1] // resolution
    if factor * resolution != images.shape[-1]:
        raise ValueError(f"cannot downsample {images.shape[-1]}x{images.shape[-1]} images to {resolution}")
    return F.avg_pool2d(images.float(), factor).round().clamp(0, 255).to(torch.uint8)
