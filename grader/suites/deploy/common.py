"""What Part 2's suites share: the small model's weights as request arrays, and a judge-side forward pass."""
from typing import Dict, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from grader.homework import CONV_LAYERS, FC_LAYERS
from grader.worker.models import _pooled, small_alexnet


def model_arrays(model: nn.Module) -> Dict[str, np.ndarray]:
    """The weights of ``model`` as the request arrays ``weight:<name>`` the worker loads."""
    return {f"weight:{name}": p.detach().numpy().copy() for name, p in model.named_parameters()}


def trained_like(seed: int) -> nn.Module:
    """A small AlexNet with He-initialised weights (``small_alexnet(trainable=True)``), in eval mode."""
    return small_alexnet(seed=seed, trainable=True).eval()


def images(seed: int, count: int = 16) -> torch.Tensor:
    """``count`` normalised-looking random 32x32 images."""
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def forward(weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The small AlexNet's forward pass on ``weights`` of any channel counts (the judge's own computation)."""
    for i, name in enumerate(CONV_LAYERS):
        x = F.relu(F.conv2d(x, weights[f"{name}.weight"], weights[f"{name}.bias"], stride=1 + (i == 0), padding=1))
        x = F.max_pool2d(x, 2) if _pooled(i, len(CONV_LAYERS)) else x
    x = torch.flatten(x, 1)
    for name in FC_LAYERS[:-1]:
        x = F.relu(F.linear(x, weights[f"{name}.weight"], weights[f"{name}.bias"]))
    last = FC_LAYERS[-1]
    return F.linear(x, weights[f"{last}.weight"], weights[f"{last}.bias"])


def tensors(data: Mapping[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.array(value)) for name, value in data.items() if ":" not in name}


def shapes(weights: Mapping[str, torch.Tensor]) -> Dict[str, tuple]:
    return {name: tuple(value.shape) for name, value in weights.items()}
