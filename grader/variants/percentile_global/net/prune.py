# Grader fixture, buggy variant 'percentile_global': prune_by_percentile takes the percentile over all the weights of the model, not per layer.
"""Magnitude pruning: set the smallest weights of every layer to zero.

A pruned weight is simply a weight equal to 0. No masks are stored in the
model; the retraining loop in ``pruning.py`` rebuilds them from the zeros.
Only the weights of ``nn.Conv2d`` and ``nn.Linear`` layers are pruned, never
the biases.
"""
from typing import Iterator, Mapping, Tuple, Union

import numpy as np
import torch.nn as nn

DEFAULT_PRUNE_RATE = 5.0
"""Percentage of the weights of each layer that ``prune_by_percentile`` removes by default."""

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)

PruneRate = Union[float, Mapping[str, float]]


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
        weights = module.weight.data
        weights.masked_fill_(weights.abs() < threshold, 0.0)

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
        for name, module in self.prunable_layers():
            threshold = s * module.weight.data.std().item()
            print(f"Pruning {name} with threshold {threshold:.6f}")
            self._prune(module, threshold)

    def prune_by_percentile(self, q: PruneRate = DEFAULT_PRUNE_RATE) -> None:
        """Prune the ``q`` percent smallest-magnitude weights of every conv and fc layer.

        ``q`` is either one percentage for all layers or a mapping from layer
        name (``"conv1"``, ``"fc2"``, ...) to percentage; layers missing from
        the mapping are not pruned. The threshold of a layer is the q-th
        percentile of the absolute values of that layer's weights, so about q%
        of each layer is removed and the compression rate is predictable.
        """
        rates = self._rates_by_layer(q)
        # TODO: for every (name, module) in `self.prunable_layers()` whose
        #       name is in `rates`, compute the threshold as the `rates[name]`-th
        #       percentile of the absolute values of *that layer's* weights
        #       (np.percentile on a numpy copy, or torch.quantile), print it,
        #       and call `self._prune(module, threshold)`.
        magnitudes = np.concatenate([m.weight.data.abs().cpu().numpy().ravel()
                                     for _, m in self.prunable_layers()])
        for name, module in self.prunable_layers():
            if name not in rates:
                continue
            threshold = float(np.percentile(magnitudes, rates[name]))
            print(f"Pruning {name} at the {rates[name]:g}th percentile: threshold {threshold:.6f}")
            self._prune(module, threshold)

    def _rates_by_layer(self, q: PruneRate) -> Mapping[str, float]:
        """Turn ``q`` into a checked ``{layer name: percentage}`` mapping."""
        names = [name for name, _ in self.prunable_layers()]
        rates = dict(q) if isinstance(q, Mapping) else dict.fromkeys(names, q)
        unknown = sorted(set(rates) - set(names))
        if unknown:
            raise ValueError(f"unknown layer(s) {unknown}; prunable layers are {names}")
        for name, rate in rates.items():
            if not 0.0 <= float(rate) <= 100.0:
                raise ValueError(f"pruning rate for {name} must be between 0 and 100, got {rate}")
        return {name: float(rate) for name, rate in rates.items()}
