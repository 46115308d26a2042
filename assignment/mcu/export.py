"""From a trained binary ``TinyNet`` to integers and a C header that a microcontroller runs bit for bit.

**The arithmetic.** Activations between layers are 7-bit unsigned integers
``q`` (0..127) standing for ``q * s`` with one scale ``s`` per layer,
calibrated on training images (the 99.9th percentile of the layer's pooled
output maps to 127). The input is ``pixel - 128`` with ``s = 1/64``. A
binary layer adds or subtracts its int8 inputs (``acc``, an exact integer),
and its scale ``alpha``, BatchNorm and the two activation scales fold into
one affine map per output channel, applied in fixed point::

    v = acc * M[c] + B[c]                      (int32, never overflows: see _fixed_point)
    q = 0 if v <= 0 else min(v >> shift, 127)  (ReLU, round - B holds the half -, clip)

and a 2x2 max-pool of the ``q``. The classifier's logits are ``v`` itself.
Every step is integer, so :func:`integer_logits` (numpy, int64) and the C
code in ``mcu/infer.c`` (int32) compute the same numbers exactly; the float
model differs from both by the rounding of the activations, which
:func:`calibrate` keeps small and ``mcu_train.py`` measures.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
import torch
import torch.nn.functional as F

from mcu.binary import channel_scales, pack_signs
from mcu.facts import ACTIVATION_MAX, INPUT_OFFSET, INPUT_SCALE
from mcu.model import TinyNet, to_input

INT32_MAX = 2 ** 31 - 1
MAX_SHIFT = 24
CALIBRATION_PERCENTILE = 99.9


@dataclass
class IntLayer:
    """One layer in integers: packed signs, the per-channel multiplier and bias, the shift, the shapes."""
    kind: str
    """"conv" (3x3, padding 1, then ReLU and 2x2 max-pool) or "fc" (logits)."""
    in_shape: tuple
    out_channels: int
    fan_in: int
    packed: np.ndarray
    """uint8 (out_channels, ceil(fan_in / 8)): ``pack_signs`` of the weights."""
    multiplier: np.ndarray
    bias: np.ndarray
    shift: int


@torch.no_grad()
def calibrate(model: TinyNet, images: torch.Tensor) -> List[float]:
    """The activation scale of every conv block's pooled output, from uint8 ``images`` (float model)."""
    model.eval()
    scales, x = [], to_input(images)
    for conv, norm in zip(model.convs, model.norms):
        x = F.max_pool2d(F.relu(norm(conv(x))), 2)
        top = float(np.percentile(x.numpy().ravel(), CALIBRATION_PERCENTILE))
        scales.append(max(top, 1e-6) / ACTIVATION_MAX)
    return scales


def _fixed_point(scale: np.ndarray, offset: np.ndarray, max_abs_acc: int, rounding: bool) -> tuple:
    """Integers ``M = round(scale * 2**shift)``, ``B = round(offset * 2**shift)`` (+ half when rounding).

    ``shift`` is the largest (at most ``MAX_SHIFT``) for which ``|acc * M + B|``
    stays below 2**31 for every ``|acc| <= max_abs_acc``: the C code's int32
    arithmetic then never overflows and equals numpy's int64.
    """
    for shift in range(MAX_SHIFT, -1, -1):
        multiplier = np.round(scale * 2.0 ** shift).astype(np.int64)
        bias = np.round(offset * 2.0 ** shift).astype(np.int64) + (1 << shift >> 1 if rounding else 0)
        if int(np.abs(multiplier).max()) * max_abs_acc + int(np.abs(bias).max()) <= INT32_MAX:
            return multiplier.astype(np.int32), bias.astype(np.int32), shift
    raise ValueError("the layer's scales are too large for int32 arithmetic; retrain with BatchNorm")


@torch.no_grad()
def integerize(model: TinyNet, calibration_images: torch.Tensor) -> List[IntLayer]:
    """The integer network equivalent (up to activation rounding) to the binary ``model``."""
    if not model.binary:
        raise ValueError("only a binary TinyNet (binary=True) can be exported: its weights must be +1/-1")
    model.eval()
    scales = calibrate(model, calibration_images)
    layers, s_in, width, side = [], 1.0 / INPUT_SCALE, model.in_channels, model.resolution
    max_input = INPUT_OFFSET
    for conv, norm, s_out in zip(model.convs, model.norms, scales):
        weight = conv.weight.detach()
        alpha = channel_scales(weight).double().numpy()
        gain = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).double().numpy()
        shift_mean = (norm.bias.double() - norm.running_mean.double() * torch.from_numpy(gain)).numpy()
        multiplier, bias, shift = _fixed_point(alpha * gain * s_in / s_out, shift_mean / s_out,
                                               weight[0].numel() * max_input, rounding=True)
        layers.append(IntLayer("conv", (width, side, side), conv.out_channels, weight[0].numel(),
                               _packed(weight), multiplier, bias, shift))
        s_in, width, side, max_input = s_out, conv.out_channels, side // 2, ACTIVATION_MAX
    weight = model.fc.weight.detach()
    multiplier, bias, shift = _fixed_point(channel_scales(weight).double().numpy() * s_in,
                                           model.fc.bias.double().numpy(), weight.shape[1] * ACTIVATION_MAX,
                                           rounding=False)
    layers.append(IntLayer("fc", (weight.shape[1],), weight.shape[0], weight.shape[1], _packed(weight),
                           multiplier, bias, shift))
    return layers


def _packed(weight: torch.Tensor) -> np.ndarray:
    signs = torch.where(weight >= 0, 1.0, -1.0).reshape(weight.shape[0], -1)
    return pack_signs(signs).numpy()


def _signs(layer: IntLayer) -> np.ndarray:
    """(out, fan_in) int64 +1/-1 from the packed bits (bit i % 8 of byte i // 8)."""
    positions = np.arange(layer.fan_in)
    bits = (layer.packed[:, positions // 8].astype(np.int64) >> (positions % 8)) & 1
    return bits * 2 - 1


def input_codes(images: torch.Tensor) -> np.ndarray:
    """uint8 images (N, C, H, W) -> the int8 codes the board reads (``pixel - 128``), as int64."""
    return images.numpy().astype(np.int64) - INPUT_OFFSET


def integer_logits(layers: List[IntLayer], images: torch.Tensor) -> np.ndarray:
    """(N, classes) int64 logits of the integer network on uint8 ``images``: what the C code must print."""
    x = input_codes(images)
    for layer in layers:
        signs = _signs(layer)
        if layer.kind == "fc":
            acc = x.reshape(len(x), -1) @ signs.T
            return acc * layer.multiplier.astype(np.int64) + layer.bias.astype(np.int64)
        c, h, w = layer.in_shape
        # float64 holds these integer sums exactly (|acc| < 2**53), so the convolution may use torch
        acc = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(signs.reshape(-1, c, 3, 3)).double(),
                       padding=1).numpy().astype(np.int64)
        v = acc * layer.multiplier.astype(np.int64)[:, None, None] + layer.bias.astype(np.int64)[:, None, None]
        q = np.where(v <= 0, 0, np.minimum(np.maximum(v, 0) >> layer.shift, ACTIVATION_MAX))
        x = q.reshape(len(q), layer.out_channels, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    raise ValueError("the network has no fc layer")


def integer_predict(layers: List[IntLayer], images: torch.Tensor) -> np.ndarray:
    """Predicted classes (first largest logit on ties, like the C code)."""
    return integer_logits(layers, images).argmax(axis=1)


def arena_bytes(layers: List[IntLayer]) -> int:
    """The C code's one activation buffer: the largest int8 input + output of a layer (the logits are apart)."""
    sizes = []
    for layer in layers:
        c, *rest = layer.in_shape
        out = layer.out_channels * (rest[0] // 2) * (rest[1] // 2) if layer.kind == "conv" else 0
        sizes.append(int(np.prod(layer.in_shape)) + out)
    return max(sizes)


def _array(kind: str, name: str, values: np.ndarray, per_line: int = 16) -> str:
    items = [str(int(v)) for v in values.ravel()]
    body = ",\n".join("    " + ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))
    return f"static const {kind} {name}[{len(items)}] MCU_FLASH = {{\n{body}\n}};\n"


def header(layers: List[IntLayer]) -> str:
    """The text of ``mcu_model.h``: every array ``const`` (and ``PROGMEM`` on AVR) and the layer table."""
    lines = ["/* Generated by mcu/export.py: a binary TinyNet in integers. Include after mcu/infer.h. */",
             f"#define MCU_ARENA_BYTES {arena_bytes(layers)}",
             f"#define MCU_LAYER_COUNT {len(layers)}",
             f"#define MCU_INPUT_BYTES {int(np.prod(layers[0].in_shape))}",
             f"#define MCU_CLASSES {layers[-1].out_channels}", "#ifndef MCU_SIZES_ONLY", ""]
    table = []
    for i, layer in enumerate(layers):
        lines.append(_array("uint8_t", f"mcu_w{i}", layer.packed))
        lines.append(_array("int32_t", f"mcu_m{i}", layer.multiplier, 8))
        lines.append(_array("int32_t", f"mcu_b{i}", layer.bias, 8))
        c, *rest = layer.in_shape
        h, w = (rest[0], rest[1]) if layer.kind == "conv" else (1, 1)
        table.append(f"    {{{1 if layer.kind == 'conv' else 0}, {c}, {h}, {w}, {layer.out_channels}, "
                     f"{layer.fan_in}, {layer.packed.shape[1]}, {layer.shift}, mcu_w{i}, mcu_m{i}, mcu_b{i}}}")
    lines.append("static const mcu_layer mcu_layers[MCU_LAYER_COUNT] MCU_FLASH = {\n" + ",\n".join(table) + "\n};")
    lines.append("#endif")
    return "\n".join(lines) + "\n"


def write_header(layers: List[IntLayer], path: Path) -> Path:
    """Write :func:`header` to ``path`` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header(layers))
    return path
