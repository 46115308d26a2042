"""The small models and the optimizer the suites hand to the student's code, on both sides of the box.

The judge builds them to draw the weights it sends; the worker builds the
same classes (on the student's ``PruningModule`` where the test needs it)
and loads those weights into them. Nothing here is secret: it is the
homework's AlexNet at a toy size, so tests run in milliseconds.
"""
from typing import Dict, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# The eight layers of the homework's AlexNet, with the same names but tiny
# sizes (a student who hard-codes the layer names still gets every layer).
# Kn != Ch in most layers, so a transposed slice order shows.
LAYERS = {
    "conv1": lambda: nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1),  # 32x32 -> 16x16 -> pool 8x8
    "conv2": lambda: nn.Conv2d(4, 6, kernel_size=3, padding=1),            # 8x8 -> pool 4x4
    "conv3": lambda: nn.Conv2d(6, 5, kernel_size=3, padding=1),
    "conv4": lambda: nn.Conv2d(5, 4, kernel_size=3, padding=1),
    "conv5": lambda: nn.Conv2d(4, 4, kernel_size=3, padding=1),            # 4x4 -> pool 2x2
    "fc1": lambda: nn.Linear(16, 12),
    "fc2": lambda: nn.Linear(12, 8),
    "fc3": lambda: nn.Linear(8, 10),
}

# Very different weight scales per layer: one threshold for the whole model
# (instead of one per layer) prunes some layers far too much, others not at all.
WEIGHT_SCALES = {"conv1": 1.0, "conv2": 0.05, "conv3": 3.0, "conv4": 0.2, "conv5": 0.5,
                 "fc1": 0.01, "fc2": 2.0, "fc3": 0.1}
BIAS_FACTOR = 5.0
"""Biases are this many times larger than their layer's weights, so a std taken from the bias shows."""

CONV_SHAPE = (6, 4, 3, 2)
"""Kn, Ch, H, W of the weight-sharing tests' conv layer: all different, so a wrong order of the positions shows."""


def small_alexnet(base: type = nn.Module, seed: int = 0, trainable: bool = False) -> nn.Module:
    """An eight-layer AlexNet look-alike (same layer names, ~2,000 weights) that runs on 32x32 images.

    ``base`` is the class it derives from (the student's ``PruningModule``
    for the pruning tests). Weights are drawn from ``seed``: per-layer scales
    of ``WEIGHT_SCALES``, or He initialisation when ``trainable`` is set.
    """

    class SmallAlexNet(base):
        def __init__(self) -> None:
            super().__init__()
            for name, make in LAYERS.items():
                setattr(self, name, make())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = F.relu(self.conv4(F.relu(self.conv3(x))))
            x = torch.flatten(F.max_pool2d(F.relu(self.conv5(x)), 2), 1)
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    model = SmallAlexNet()
    rng = np.random.default_rng(seed)
    for name in LAYERS:
        layer = getattr(model, name)
        fan_in = layer.weight[0].numel()
        scale = (2.0 / fan_in) ** 0.5 if trainable else WEIGHT_SCALES[name]
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
