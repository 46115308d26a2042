"""Small deterministic arrays for the suites, and the wording of their failure messages.

The suites' models (``small_alexnet``, ``ConvAndFc``, ``SGD``) live in
``grader/worker/models.py``, because the worker builds the same ones in the box.
"""
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn



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


def unchanged_problems(names: Iterable[str], before: Dict[str, torch.Tensor], after: Dict[str, torch.Tensor],
                       what: str) -> List[str]:
    """A message for every parameter of ``names`` that differs from ``before``."""
    return [f"{name} changed ({(after[name] != before[name]).sum().item()} values), "
            f"but {what}" for name in names if not torch.equal(after[name], before[name])]


def std_band(weight: torch.Tensor, s: float) -> Tuple[float, float]:
    """``s`` times the population and the sample std of ``weight``: numpy's and torch's defaults."""
    values = weight.double()
    low, high = (s * values.std(unbiased=False).item(), s * values.std(unbiased=True).item())
    return low * (1 - 1e-6), high * (1 + 1e-6)


def keep_band(weight: torch.Tensor, keep: float) -> Tuple[float, float]:
    """Thresholds for ``prune_by_percentile(keep)``: keep ``keep`` percent of ``weight``, prune the rest.

    The handout's rule: the threshold is the ``(100 - keep)``-th percentile of ``|weight|``.
    """
    return percentile_band(weight, 100.0 - keep)


def percentile_band(weight: torch.Tensor, q: float) -> Tuple[float, float]:
    """Thresholds for pruning ``q`` percent of ``weight`` (the q-th percentile), allowing one weight more or less.

    Weights below ``low`` must go and weights from ``high`` up must stay,
    so "prune the k smallest" with k rounded either way is accepted too.
    """
    magnitudes = np.sort(weight.abs().double().numpy().reshape(-1))
    count = int((magnitudes < np.percentile(magnitudes, q)).sum())
    low = magnitudes[count - 1] if count >= 1 else 0.0
    high = magnitudes[count + 1] if count + 1 < magnitudes.size else np.inf
    return float(low), float(high)
