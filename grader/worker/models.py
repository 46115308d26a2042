"""The small models and the optimizer the suites hand to the student's code, on both sides of the box.

The judge builds them to draw the weights it sends; the worker builds the
same classes (on the student's ``PruningModule`` where the test needs it)
and loads those weights into them. Nothing here is secret: it is the
homework's AlexNet at a toy size, so tests run in milliseconds.
"""
import functools
from typing import Callable, Dict, Mapping, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from grader.homework import CONV_LAYERS, FC_LAYERS, LAYERS

# The homework's layers with the same names but tiny sizes (a student who
# hard-codes the layer names still gets every layer). Output channels differ
# from input channels in most layers, so a transposed slice order shows.
CONV_CHANNELS = (4, 6, 5, 4, 4)
FC_WIDTHS = (12, 8)
NUM_CLASSES = 10

# Very different weight scales per layer: one threshold for the whole model
# (instead of one per layer) prunes some layers far too much, others not at all.
CONV_SCALES = (1.0, 0.05, 3.0, 0.2, 0.5)
FC_SCALES = (0.01, 2.0, 0.1)
BIAS_FACTOR = 5.0
"""Biases are this many times larger than their layer's weights, so a std taken from the bias shows."""


def _sizes() -> Dict[str, Tuple[Callable[[], nn.Module], float]]:
    """Each layer's constructor and weight scale. The convolutions run on 32x32 images: the first has stride 2,
    and the first, second and last are followed by 2x2 max-pooling (``forward`` below)."""
    convs, fcs = CONV_LAYERS, FC_LAYERS
    made, channels, side = {}, 3, 32
    for i, name in enumerate(convs):
        out = CONV_CHANNELS[i % len(CONV_CHANNELS)]
        made[name] = (functools.partial(nn.Conv2d, channels, out, kernel_size=3, stride=1 + (i == 0), padding=1),
                      CONV_SCALES[i % len(CONV_SCALES)])
        channels, side = out, side // (2 if i == 0 else 1) // (2 if _pooled(i, len(convs)) else 1)
    features = channels * side * side
    for j, name in enumerate(fcs):
        out = NUM_CLASSES if j == len(fcs) - 1 else FC_WIDTHS[j % len(FC_WIDTHS)]
        made[name] = functools.partial(nn.Linear, features, out), FC_SCALES[j % len(FC_SCALES)]
        features = out
    return made


def _pooled(index: int, count: int) -> bool:
    return index in (0, 1, count - 1)


CONV_SHAPE = (6, 4, 3, 2)
"""Kn, Ch, H, W of the weight-sharing tests' conv layer: all different, so a wrong order of the positions shows."""


def small_alexnet(base: type = nn.Module, seed: int = 0, trainable: bool = False) -> nn.Module:
    """The homework's model at a toy size (same layer names, ~2,000 weights) that runs on 32x32 images.

    ``base`` is the class it derives from (the student's ``PruningModule``
    for the pruning tests). Weights are drawn from ``seed``: per-layer scales
    of ``CONV_SCALES``/``FC_SCALES``, or He initialisation when ``trainable`` is set.
    """
    sizes = _sizes()

    class SmallAlexNet(base):
        def __init__(self) -> None:
            super().__init__()
            for name, (make, _) in sizes.items():
                setattr(self, name, make())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for i, name in enumerate(CONV_LAYERS):
                x = F.relu(getattr(self, name)(x))
                x = F.max_pool2d(x, 2) if _pooled(i, len(CONV_LAYERS)) else x
            x = torch.flatten(x, 1)
            for name in FC_LAYERS[:-1]:
                x = F.relu(getattr(self, name)(x))
            return getattr(self, FC_LAYERS[-1])(x)

    model = SmallAlexNet()
    rng = np.random.default_rng(seed)
    for name in LAYERS:
        layer = getattr(model, name)
        fan_in = layer.weight[0].numel()
        scale = (2.0 / fan_in) ** 0.5 if trainable else sizes[name][1]
        layer.weight.data = normal(rng, scale, layer.weight.shape)
        layer.bias.data = normal(rng, 0.1 if trainable else BIAS_FACTOR * scale, layer.bias.shape)
    return model


class ConvAndFc(nn.Module):
    """One conv and one fc layer, enough for apply_weight_sharing."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(CONV_SHAPE[1], CONV_SHAPE[0], kernel_size=CONV_SHAPE[2:])
        self.fc1 = nn.Linear(5, 7)


def normal(rng: np.random.Generator, scale: float, shape) -> torch.Tensor:
    """A float32 tensor of normal values with standard deviation ``scale``."""
    return torch.from_numpy(rng.normal(0.0, scale, tuple(shape)).astype(np.float32))


def correct_prune(module: nn.Module, threshold: float) -> None:
    """A correct ``_prune``, given to the model when a test grades only the threshold and the layers."""
    module.weight.data[module.weight.data.abs() < threshold] = 0.0


def load_weights(model: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    """Replace each named parameter of ``model`` by a copy of ``weights[name]``."""
    for name, p in model.named_parameters():
        p.data = torch.from_numpy(np.array(weights[name]))


class SGD:
    """Plain SGD with optional momentum and weight decay, as ``torch.optim.SGD`` computes it.

    A stand-in for ``train``: creating the first ``torch.optim`` optimizer
    imports torch's compiler stack, seconds of CPU per graded submission.
    ``buffers`` (momentum, by parameter index) can be handed over, so a
    test can take a step on one side of the box and go on on the other.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 buffers: Dict[int, torch.Tensor] = None) -> None:
        self.params, self.lr, self.momentum, self.weight_decay = list(params), lr, momentum, weight_decay
        self.buffers: Dict[int, torch.Tensor] = dict(buffers or {})

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            step = p.grad + self.weight_decay * p
            if self.momentum:
                self.buffers[i] = step.clone() if i not in self.buffers else self.buffers[i].mul_(self.momentum).add_(step)
                step = self.buffers[i]
            p.sub_(self.lr * step)
