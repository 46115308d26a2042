"""Small deterministic models and arrays for the suites, and the wording of their failure messages.

Nothing here imports student code: the student's classes are passed in by
the tests (for example the ``PruningModule`` base class of the small model).
"""
from typing import Dict, Iterable, List, Optional, Tuple

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
CONV_LAYERS = [name for name in LAYERS if name.startswith("conv")]
FC_LAYERS = [name for name in LAYERS if name.startswith("fc")]

# Very different weight scales per layer: one threshold for the whole model
# (instead of one per layer) prunes some layers far too much, others not at all.
WEIGHT_SCALES = {"conv1": 1.0, "conv2": 0.05, "conv3": 3.0, "conv4": 0.2, "conv5": 0.5,
                 "fc1": 0.01, "fc2": 2.0, "fc3": 0.1}
BIAS_FACTOR = 5.0
"""Biases are this many times larger than their layer's weights, so a std taken from the bias shows."""


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


def normal(rng: np.random.Generator, scale: float, shape) -> torch.Tensor:
    """A float32 tensor of normal values with standard deviation ``scale``."""
    return torch.from_numpy(rng.normal(0.0, scale, tuple(shape)).astype(np.float32))


def snapshot(model: nn.Module) -> Dict[str, torch.Tensor]:
    """A detached copy of every parameter, by name."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def prune_randomly(model: nn.Module, fraction: float, seed: int) -> Dict[str, torch.Tensor]:
    """Zero a random ``fraction`` of every weight matrix; return the masks of the kept (non-zero) weights."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            masks[name] = torch.rand(p.shape, generator=generator) >= fraction
            p.data[~masks[name]] = 0.0
    return masks


class SGD:
    """Plain SGD with optional momentum and weight decay, as ``torch.optim.SGD`` computes it.

    A stand-in for ``train``: creating the first ``torch.optim`` optimizer
    imports torch's compiler stack, seconds of CPU per graded submission.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.params, self.lr, self.momentum, self.weight_decay = list(params), lr, momentum, weight_decay
        self.buffers: Dict[int, torch.Tensor] = {}

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


def sparse_shared_array(shape: Tuple[int, ...], seed: int, density: float, n_values: int) -> np.ndarray:
    """A float32 array with about ``density`` non-zeros drawn from ``n_values`` distinct values."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 0.1, n_values).astype(np.float32)
    values[values == 0] = 0.5
    array = rng.choice(values, size=shape)
    array[rng.random(shape) >= density] = 0.0
    return array.astype(np.float32)


# ---------------------------------------------------------------------------
# Failure messages
# ---------------------------------------------------------------------------

def fail_if(problems: List[str], headline: str, limit: int = 8) -> None:
    """Fail the test with ``headline`` and the first ``limit`` problems, if there are any."""
    if problems:
        shown = problems[:limit] + ([f"... and {len(problems) - limit} more"] if len(problems) > limit else [])
        raise AssertionError(headline + "\n" + "\n".join(f"  - {p}" for p in shown))


def pruning_problems(name: str, before: torch.Tensor, after: torch.Tensor,
                     low: float, high: Optional[float] = None, rule: str = "") -> List[str]:
    """What is wrong with one pruned weight tensor, in words (empty when nothing is).

    Weights with ``|w| < low`` must be 0, weights with ``|w| >= high`` must
    be unchanged; those in between may be either (this absorbs harmless
    differences such as numpy's and torch's std). Nothing may take any other value.
    """
    high = low if high is None else high
    if tuple(after.shape) != tuple(before.shape):
        return [f"{name}: the weight's shape changed from {tuple(before.shape)} to {tuple(after.shape)}"]
    if after.dtype != before.dtype:
        return [f"{name}: the weight's dtype changed from {before.dtype} to {after.dtype}"]
    magnitude = before.abs()
    must_go, must_stay = magnitude < low, magnitude >= high
    kept = (after != 0).sum().item()
    threshold = f"{low:.6g}" if np.isclose(low, high, rtol=1e-5) else f"about {low:.6g}"
    problems = []
    wrongly_kept = (must_go & (after != 0)).sum().item()
    wrongly_pruned = (must_stay & (after == 0) & (before != 0)).sum().item()
    faults = ([f"{wrongly_kept} weight(s) below it are still non-zero"] if wrongly_kept else []) + \
             ([f"{wrongly_pruned} weight(s) not below it were set to 0"] if wrongly_pruned else [])
    if faults:
        problems.append(f"{name}: threshold {threshold}{rule}: {must_go.sum().item()} of the {before.numel()} "
                        f"weights should become 0 and {must_stay.sum().item()} should stay, but "
                        f"{' and '.join(faults)} ({kept} non-zero left)")
    altered = ((after != before) & (after != 0)).sum().item()
    if altered:
        problems.append(f"{name}: {altered} weight(s) were changed to other non-zero values "
                        "(pruning may only set weights to 0)")
    return problems


def unchanged_problems(names: Iterable[str], before: Dict[str, torch.Tensor], model: nn.Module,
                       what: str) -> List[str]:
    """A message for every parameter of ``names`` that differs from ``before``."""
    params = dict(model.named_parameters())
    return [f"{name} changed ({(params[name].detach() != before[name]).sum().item()} values), "
            f"but {what}" for name in names if not torch.equal(params[name].detach(), before[name])]


def std_band(weight: torch.Tensor, s: float) -> Tuple[float, float]:
    """``s`` times the population and the sample std of ``weight``: numpy's and torch's defaults."""
    values = weight.double()
    low, high = (s * values.std(unbiased=False).item(), s * values.std(unbiased=True).item())
    return low * (1 - 1e-6), high * (1 + 1e-6)


def percentile_band(weight: torch.Tensor, q: float) -> Tuple[float, float]:
    """Thresholds for pruning ``q`` percent of ``weight``, allowing one weight more or less.

    Weights below ``low`` must go and weights from ``high`` up must stay,
    so "prune the k smallest" with k rounded either way is accepted too.
    """
    magnitudes = np.sort(weight.abs().double().numpy().reshape(-1))
    count = int((magnitudes < np.percentile(magnitudes, q)).sum())
    low = magnitudes[count - 1] if count >= 1 else 0.0
    high = magnitudes[count + 1] if count + 1 < magnitudes.size else np.inf
    return float(low), float(high)
