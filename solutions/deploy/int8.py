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
*Quantisation-aware training* (QAT) goes one step further than calibration:
it fine-tunes a copy whose forward pass already rounds every weight and
activation to INT8 ("fake quantisation"), so the weights learn to live with
the rounding; the INT8 model converted from it loses less accuracy than one
that only saw calibration data.

The PyTorch calls are behind ``deploy/legacy_quant.py`` (provided): read it
first, it explains why.
"""
from typing import Iterable, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from deploy import legacy_quant

CALIBRATION_BATCHES = 8
"""Training batches run through the observed model by default."""
QAT_EPOCHS = 2
"""Passes over the QAT batches by default; the last one runs with the observers frozen."""
QAT_LR = 0.0005
"""Learning rate of quantisation-aware training: a short, gentle fine-tuning of an already trained model."""

Batch = Tuple[torch.Tensor, torch.Tensor]
"""``(images, labels)``: one training batch."""


@torch.no_grad()
def calibrate(prepared: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Run every batch of images through the observed model (eval mode, no gradients); return how many ran."""
    # TODO: put `prepared` in eval mode and call it on every batch of `batches`
    #       (the outputs are not needed: the observers inside record the
    #       ranges as a side effect); return the number of batches run.
    # BEGIN SOLUTION
    prepared.eval()
    count = 0
    for images in batches:
        prepared(images)
        count += 1
    return count
    # END SOLUTION
    # STUB: raise NotImplementedError("TODO deploy/int8.py: calibrate")


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
    # BEGIN SOLUTION
    prepared = legacy_quant.prepare_static(model, batches[0], backend)
    calibrate(prepared, batches)
    return legacy_quant.convert_static(prepared)
    # END SOLUTION
    # STUB: raise NotImplementedError("TODO deploy/int8.py: quantize_static")


def quantize_linears(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers are dynamically quantised to INT8 (the convs stay float)."""
    # TODO: return legacy_quant.quantize_dynamic(model, (nn.Linear,), torch.qint8).
    # BEGIN SOLUTION
    return legacy_quant.quantize_dynamic(model, (nn.Linear,), torch.qint8)
    # END SOLUTION
    # STUB: raise NotImplementedError("TODO deploy/int8.py: quantize_linears")


def train_qat(prepared: nn.Module, batches: Sequence[Batch], optimizer: torch.optim.Optimizer) -> List[float]:
    """One pass of training over ``batches`` through the fake-quantised model; return each batch's loss.

    ``prepared`` comes from ``legacy_quant.prepare_qat``: its forward pass rounds
    like INT8 does, so the gradients tell the weights how to do well *after*
    rounding. ``optimizer`` (anything with ``zero_grad()`` and ``step()``) holds its parameters.
    """
    # TODO: put `prepared` in train mode; then for each (images, labels) of
    #       `batches`, in order: optimizer.zero_grad(), the loss
    #       F.cross_entropy(prepared(images), labels), loss.backward(),
    #       optimizer.step(), and append loss.item() to the list you return.
    # BEGIN SOLUTION
    prepared.train()
    losses = []
    for images, labels in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(prepared(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
    # END SOLUTION
    # STUB: raise NotImplementedError("TODO deploy/int8.py: train_qat")


def quantize_qat(model: nn.Module, batches: Sequence[Batch], epochs: int = QAT_EPOCHS, lr: float = QAT_LR,
                 backend: str = "x86") -> nn.Module:
    """An INT8 copy of ``model`` fine-tuned for ``epochs`` passes over ``batches`` with quantisation simulated.

    The observers keep adjusting the scales while training starts; for the last
    epoch (when there are two or more) they are frozen, so the weights settle on
    the grid the INT8 model will use. ``model`` itself is not changed.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("quantisation-aware training needs at least one batch")
    # TODO: 1. prepared = legacy_quant.prepare_qat(model, batches[0][0], backend);
    #       2. optimizer = torch.optim.SGD(prepared.parameters(), lr=lr, momentum=0.9)
    #          (the parameters of the prepared copy: those are the ones trained);
    #       3. for each epoch in range(epochs): if it is the last one and not the
    #          first, call legacy_quant.freeze_observers(prepared) first; then
    #          train_qat(prepared, batches, optimizer);
    #       4. return legacy_quant.convert_static(prepared.eval()).
    # BEGIN SOLUTION
    prepared = legacy_quant.prepare_qat(model, batches[0][0], backend)
    optimizer = torch.optim.SGD(prepared.parameters(), lr=lr, momentum=0.9)
    for epoch in range(epochs):
        if epoch == epochs - 1 and epoch > 0:
            legacy_quant.freeze_observers(prepared)
        train_qat(prepared, batches, optimizer)
    return legacy_quant.convert_static(prepared.eval())
    # END SOLUTION
    # STUB: raise NotImplementedError("TODO deploy/int8.py: quantize_qat")
