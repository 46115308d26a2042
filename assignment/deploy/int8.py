"""INT8 in PyTorch: store and compute with 8-bit integers instead of 32-bit floats.

Quantisation maps a float tensor to integers with a *scale* and a
*zero point*: ``x ~ scale * (q - zero_point)``. Weights are known in
advance; each output channel gets its own scale (per-channel), which keeps
small filters precise. Activations are only known when data flows, so
*static* quantisation first runs a few training batches through an
*observed* copy of the model (calibration), records the range of every
activation, and fixes their scales from it; the converted model then runs
INT8 kernels end to end: 4x smaller weights and several times faster on a CPU.
*Dynamic* quantisation skips calibration: it stores INT8 weights for the
Linear layers and measures each activation's range on the fly, which helps
where Linears dominate (AlexNet's fc layers hold most of its weights).

The PyTorch calls are behind ``deploy/legacy_quant.py`` (provided): read it
first, it explains why.
"""
from typing import Iterable

import torch
import torch.nn as nn

from deploy import legacy_quant

CALIBRATION_BATCHES = 8
"""Training batches run through the observed model by default."""


@torch.no_grad()
def calibrate(prepared: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Run every batch of images through the observed model (eval mode, no gradients); return how many ran."""
    # TODO: put `prepared` in eval mode and call it on every batch of `batches`
    #       (the outputs are not needed: the observers inside record the
    #       ranges as a side effect); return the number of batches run.
    raise NotImplementedError("TODO deploy/int8.py: calibrate")


def quantize_static(model: nn.Module, batches: Iterable[torch.Tensor], backend: str = "x86") -> nn.Module:
    """An INT8 copy of ``model`` calibrated on ``batches`` (a list of image tensors) for ``backend``."""
    batches = list(batches)
    if not batches:
        raise ValueError("static quantisation needs at least one calibration batch")
    # TODO: 1. prepared = legacy_quant.prepare_static(model, batches[0], backend);
    #       2. calibrate(prepared, batches);
    #       3. return legacy_quant.convert_static(prepared).
    #       (Calibration is what fixes the activations' scales: convert without it
    #       and every activation gets a meaningless range.)
    raise NotImplementedError("TODO deploy/int8.py: quantize_static")


def quantize_linears(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers are dynamically quantised to INT8 (the convs stay float)."""
    # TODO: return legacy_quant.quantize_dynamic(model, (nn.Linear,), torch.qint8).
    raise NotImplementedError("TODO deploy/int8.py: quantize_linears")
