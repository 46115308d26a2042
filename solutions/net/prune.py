"""Magnitude pruning: set the smallest weights of every layer to zero.

A pruned weight is simply a weight equal to 0. No masks are stored in the
model; the retraining loop in ``pruning.py`` rebuilds them from the zeros.
Only the weights of ``nn.Conv2d`` and ``nn.Linear`` layers are pruned, never
the biases.
"""
from numbers import Real
from typing import Iterator, Mapping, Tuple, Union

import numpy as np
import torch.nn as nn

DEFAULT_PRUNE_RATE = 95.0
"""The handout's default ``q``: the percentage of each layer's weights that
``prune_by_percentile`` KEEPS (95 keeps 95% and prunes the 5% smallest)."""

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)

KeepPercent = Union[float, Mapping[str, float]]
"""One percentage of weights to keep for every layer, or ``{layer name: percentage}``."""


class PruningModule(nn.Module):
    """Base class of models that can prune their own conv and fc layers."""

    def prunable_layers(self) -> Iterator[Tuple[str, nn.Module]]:
        """Yield ``(name, module)`` for every conv and fc layer, in model order."""
        for name, module in self.named_modules():
            if isinstance(module, PRUNABLE_TYPES):
                yield name, module

    def _prune(self, module: nn.Module, threshold: float) -> None:
        """Zero, in place, the weights of ``module`` whose absolute value is below ``threshold``.

        Weights whose absolute value equals the threshold are kept. The bias is
        not touched.
        """
        # TODO: 1. read the weights from `module.weight.data`;
        #       2. set every weight whose absolute value is strictly less than
        #          `threshold` to 0 and leave the others unchanged;
        #       3. write the result back into `module.weight.data` (same shape,
        #          dtype and device).
        # BEGIN SOLUTION
        weights = module.weight.data
        weights.masked_fill_(weights.abs() < threshold, 0.0)
        # END SOLUTION
        # STUB: pass

    def prune_by_std(self, s: float = 0.25) -> None:
        """Prune every conv and fc layer with threshold ``s`` times the std of its weights.

        The threshold is computed separately for each layer, from that layer's
        weights only. How many weights go depends on their distribution, so
        the compression rate is hard to predict.
        """
        # TODO: for every layer yielded by `self.prunable_layers()` (fc *and*
        #       conv layers), compute `s * std` of that layer's weights (not its
        #       bias), print the layer name and threshold, and call
        #       `self._prune(module, threshold)`.
        # BEGIN SOLUTION
        for name, module in self.prunable_layers():
            threshold = s * module.weight.data.std().item()
            print(f"Pruning {name} with threshold {threshold:.6f}")
            self._prune(module, threshold)
        # END SOLUTION
        # STUB: pass

    def prune_by_percentile(self, q: KeepPercent = DEFAULT_PRUNE_RATE) -> None:
        """Keep the ``q`` percent largest-magnitude weights of every conv and fc layer, zero the rest.

        This is the handout's rule: the threshold of a layer is the
        ``(100 - q)``-th percentile of the absolute values of that layer's
        weights, so ``q`` is the percentage of weights KEPT and about
        ``100 - q`` percent of each layer becomes 0 (``q = 10`` prunes 90%).
        Because every layer is cut at its own percentile, the compression
        rate is predictable.

        ``q`` is either one percentage for all layers or a mapping from layer
        name (``"conv1"``, ``"fc2"``, ...) to percentage; layers missing from
        the mapping are not pruned.
        """
        keep = self._rates_by_layer(q)
        # TODO: for every (name, module) in `self.prunable_layers()` whose
        #       name is in `keep`:
        #       1. compute the threshold as the (100 - keep[name])-th
        #          percentile of the absolute values of *that layer's*
        #          weights, e.g. `np.percentile(magnitudes, 100 - keep[name])`
        #          on `magnitudes = module.weight.data.abs().cpu().numpy()`
        #          (not torch.quantile: it refuses tensors of more than 2**24
        #          elements, and fc2 has exactly 2**24);
        #       2. print the layer name and the threshold;
        #       3. call `self._prune(module, threshold)`.
        #       Check yourself: `q = 30` must leave about 30% of each layer
        #       non-zero, `q = 80` about 80%.
        # BEGIN SOLUTION
        for name, module in self.prunable_layers():
            if name not in keep:
                continue
            magnitudes = module.weight.data.abs().cpu().numpy()
            threshold = float(np.percentile(magnitudes, 100.0 - keep[name]))
            print(f"Pruning {name}: keeping {keep[name]:g}%, threshold {threshold:.6f} "
                  f"(the {100.0 - keep[name]:g}th percentile of |W|)")
            self._prune(module, threshold)
        # END SOLUTION
        # STUB: pass

    def _rates_by_layer(self, q: KeepPercent) -> Mapping[str, float]:
        """Turn ``q`` into a checked ``{layer name: percentage kept}`` mapping (ValueError if it is bad)."""
        names = [name for name, _ in self.prunable_layers()]
        rates = dict(q) if isinstance(q, Mapping) else dict.fromkeys(names, q)
        unknown = sorted(set(rates) - set(names))
        if unknown:
            raise ValueError(f"unknown layer(s) {unknown}; prunable layers are {names}")
        for name, rate in rates.items():
            if isinstance(rate, bool) or not isinstance(rate, Real) or not 0.0 <= float(rate) <= 100.0:
                raise ValueError(f"the percentage of weights to keep in {name} must be a number from 0 to 100, "
                                 f"got {rate!r}")
        return {name: float(rate) for name, rate in rates.items()}
