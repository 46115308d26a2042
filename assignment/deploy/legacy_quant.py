"""PROVIDED: the one door to ``torch.ao.quantization``, which torch 2.14 marks as deprecated.

PyTorch moves its quantisation to torchao, but in torchao 0.18 the fast CPU
INT8 paths cover Linear layers only and need ``torch.compile``. The older
``torch.ao.quantization`` (FX graph mode here) still quantises convolutions
and Linears to real INT8 kernels (fbgemm/x86 for Intel and AMD CPUs, qnnpack
for ARM) and runs them eagerly, so this homework keeps it, behind this small
module: its deprecation warnings are silenced here, and nowhere else needs to
import it. If a later torch removes it, only this file changes.

Nothing to do in this file.
"""
import contextlib
import copy
import warnings
from typing import Iterator, Tuple

import torch
import torch.nn as nn

BACKENDS = ("x86", "fbgemm", "qnnpack")
"""Quantised CPU engines: x86 and fbgemm for desktop CPUs, qnnpack for ARM (it also runs, slowly, on x86)."""


# Running a converted model warns (once per process) that quantised tensors are deprecated too.
warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the deprecation and observer warnings that preparing and converting print by the hundred."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def use_backend(backend: str) -> None:
    """Run quantised kernels on ``backend`` (one of ``BACKENDS``) from now on."""
    if backend not in BACKENDS or backend not in torch.backends.quantized.supported_engines:
        raise ValueError(f"quantisation backend {backend!r} is not available here; this torch offers "
                         f"{[b for b in BACKENDS if b in torch.backends.quantized.supported_engines]}")
    torch.backends.quantized.engine = backend


def prepare_static(model: nn.Module, example: torch.Tensor, backend: str) -> nn.Module:
    """A copy of ``model`` (in eval mode) with observers that record activation ranges: run data through it next.

    Activations get one scale per tensor (UINT8); weights (INT8) one scale per
    output channel with x86 and fbgemm, one per tensor with qnnpack: each
    backend's default.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx
    use_backend(backend)
    with _quiet():
        return prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping(backend), (example,))


def convert_static(prepared: nn.Module) -> nn.Module:
    """The INT8 model made from an observed copy: weights and activations quantised with the ranges seen.

    It converts a copy prepared for training (``prepare_qat``) the same way; put that one in eval mode first.
    """
    from torch.ao.quantization.quantize_fx import convert_fx
    with _quiet():
        return convert_fx(prepared)


def prepare_qat(model: nn.Module, example: torch.Tensor, backend: str) -> nn.Module:
    """A copy of ``model`` (in train mode) that *simulates* INT8 while it trains: quantisation-aware training.

    Every weight and activation passes through a fake-quantiser: it rounds the
    value to the INT8 grid (with the scale its observer currently holds) and
    turns it back into a float, so the forward pass sees the rounding errors
    the INT8 model will make and training learns around them. Gradients flow
    through the rounding as if it were not there (the straight-through
    estimator). The observers keep updating their ranges while training runs
    until ``freeze_observers`` stops them. Same scales per backend as ``prepare_static``.
    """
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    use_backend(backend)
    with _quiet():
        return prepare_qat_fx(copy.deepcopy(model).train(), get_default_qat_qconfig_mapping(backend), (example,))


def freeze_observers(prepared: nn.Module) -> None:
    """Stop every observer of a copy made by ``prepare_qat``: the scales and zero points stay as they are now.

    The fake-quantisers keep rounding with those fixed scales, so training that
    goes on fits the weights to the very grid the INT8 model will use.
    """
    from torch.ao.quantization import disable_observer
    prepared.apply(disable_observer)


def fake_quant_scales(prepared: nn.Module) -> Iterator[Tuple[str, torch.Tensor]]:
    """``(name, scale)`` of every fake-quantiser of a copy made by ``prepare_qat``, in the model's order."""
    for name, module in prepared.named_modules():
        if hasattr(module, "scale") and hasattr(module, "observer_enabled"):
            yield name, module.scale.detach().clone()


def quantize_dynamic(model: nn.Module, layer_types: Tuple[type, ...] = (nn.Linear,),
                     dtype: torch.dtype = torch.qint8) -> nn.Module:
    """A copy of ``model`` whose layers of ``layer_types`` hold INT8 weights and quantise activations on the fly."""
    from torch.ao.quantization import quantize_dynamic as dynamic
    with _quiet():
        return dynamic(copy.deepcopy(model).eval(), set(layer_types), dtype=dtype)


def observed_ranges(prepared: nn.Module) -> Iterator[Tuple[str, float, float]]:
    """``(name, min, max)`` of every activation observer of a prepared model (inf, -inf before any data)."""
    for name, module in prepared.named_modules():
        if hasattr(module, "min_val") and hasattr(module, "max_val") and module.min_val.numel() == 1:
            yield name, float(module.min_val), float(module.max_val)
