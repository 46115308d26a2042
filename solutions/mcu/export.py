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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from homework import MCU_ACTIVATION_MAX, MCU_INPUT_OFFSET, MCU_INPUT_SCALE, MCU_MAX_HEADER_BYTES

from .binary import channel_scales, pack_signs
from .model import TinyNet, to_input

INT32_MAX = 2 ** 31 - 1
MAX_SHIFT = 24
MAX_LAYERS = 8
UINT8_MAX, UINT16_MAX = 2 ** 8 - 1, 2 ** 16 - 1
"""The C code's layer fields are uint8 (shapes, shift) and uint16 (fan-in, buffer offsets)."""
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
        scales.append(max(top, 1e-6) / MCU_ACTIVATION_MAX)
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
    layers, s_in, width, side = [], 1.0 / MCU_INPUT_SCALE, model.in_channels, model.resolution
    max_input = MCU_INPUT_OFFSET
    for conv, norm, s_out in zip(model.convs, model.norms, scales):
        weight = conv.weight.detach()
        alpha = channel_scales(weight).double().numpy()
        gain = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).double().numpy()
        shift_mean = (norm.bias.double() - norm.running_mean.double() * torch.from_numpy(gain)).numpy()
        multiplier, bias, shift = _fixed_point(alpha * gain * s_in / s_out, shift_mean / s_out,
                                               weight[0].numel() * max_input, rounding=True)
        layers.append(IntLayer("conv", (width, side, side), conv.out_channels, weight[0].numel(),
                               _packed(weight), multiplier, bias, shift))
        s_in, width, side, max_input = s_out, conv.out_channels, side // 2, MCU_ACTIVATION_MAX
    weight = model.fc.weight.detach()
    multiplier, bias, shift = _fixed_point(channel_scales(weight).double().numpy() * s_in,
                                           model.fc.bias.double().numpy(), weight.shape[1] * MCU_ACTIVATION_MAX,
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
    return images.numpy().astype(np.int64) - MCU_INPUT_OFFSET


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
        q = np.where(v <= 0, 0, np.minimum(np.maximum(v, 0) >> layer.shift, MCU_ACTIVATION_MAX))
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


class HeaderError(ValueError):
    """Layers the C code cannot run as numpy does, or a header :func:`header` did not write; ``str()`` says why."""


def check_layers(layers: Sequence[IntLayer]) -> None:
    """Raise :class:`HeaderError` unless ``mcu/infer.c`` computes exactly :func:`integer_logits` for ``layers``.

    That holds when the layers are conv blocks then one linear layer whose shapes chain, every field fits
    its C type (``mcu_layer`` in ``mcu/infer.h``), the one buffer fits uint16 offsets, and no accumulator
    can leave int32 for any input (signed overflow is undefined in C).
    """
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise HeaderError(f"a network has 1 to {MAX_LAYERS} layers, not {len(layers)}")
    reads, max_input = None, MCU_INPUT_OFFSET
    for i, layer in enumerate(layers):
        where = f"layer {i} ({layer.kind})"
        if layer.kind != ("fc" if i == len(layers) - 1 else "conv"):
            raise HeaderError(f"{where}: the network must be conv layers followed by exactly one fc layer")
        shape = tuple(int(n) for n in layer.in_shape)
        if layer.kind == "fc" and reads is not None:
            reads = (int(np.prod(reads)),)
        if reads is not None and shape != reads:
            raise HeaderError(f"{where} reads shape {shape} but the layer before it writes {reads}")
        if layer.kind == "conv":
            if len(shape) != 3 or min(shape) < 1 or shape[1] % 2 or shape[2] % 2:
                raise HeaderError(f"{where}: a conv input is (channels, even height, even width), not {shape}")
            fan_in, fields = shape[0] * 9, shape
            reads = (layer.out_channels, shape[1] // 2, shape[2] // 2)
        else:
            if len(shape) != 1 or shape[0] < 1:
                raise HeaderError(f"{where}: an fc input is (features,), not {shape}")
            fan_in, fields = shape[0], shape
        row_bytes = (fan_in + 7) // 8
        if layer.fan_in != fan_in or not 1 <= layer.out_channels <= UINT8_MAX or fan_in > UINT16_MAX \
                or max(fields) > UINT8_MAX or row_bytes > UINT8_MAX:
            raise HeaderError(f"{where}: fan-in {layer.fan_in} (expected {fan_in}), {layer.out_channels} outputs "
                              f"and input {shape} must fit the C code's fields (at most {UINT8_MAX} each)")
        _check_array(layer.packed, np.uint8, (layer.out_channels, row_bytes), f"{where}: the packed signs")
        _check_array(layer.multiplier, np.int32, (layer.out_channels,), f"{where}: the multipliers")
        _check_array(layer.bias, np.int32, (layer.out_channels,), f"{where}: the biases")
        if not 0 <= int(layer.shift) <= MAX_SHIFT:
            raise HeaderError(f"{where}: the shift is {layer.shift}, not 0 to {MAX_SHIFT}")
        worst = int(np.abs(layer.multiplier.astype(np.int64)).max()) * fan_in * max_input \
            + int(np.abs(layer.bias.astype(np.int64)).max())
        if worst > INT32_MAX:
            raise HeaderError(f"{where}: acc * M + B can reach {worst:,}, beyond int32")
        max_input = MCU_ACTIVATION_MAX
    if arena_bytes(layers) > UINT16_MAX:
        raise HeaderError(f"the activations need {arena_bytes(layers):,} bytes, more than {UINT16_MAX:,}")


def _check_array(values: np.ndarray, dtype, shape: Tuple[int, ...], what: str) -> None:
    if not isinstance(values, np.ndarray) or values.dtype != dtype or values.shape != shape:
        found = f"{values.dtype} {values.shape}" if isinstance(values, np.ndarray) else type(values).__name__
        raise HeaderError(f"{what} must be {np.dtype(dtype)} of shape {shape}, not {found}")


def header(layers: List[IntLayer]) -> str:
    """The text of ``mcu_model.h``: every array ``const`` (and ``PROGMEM`` on AVR) and the layer table.

    Raises :class:`HeaderError` for layers the C code cannot run exactly (:func:`check_layers`).
    """
    check_layers(layers)
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


_ARRAY = re.compile(r"^static const (uint8_t|int32_t) mcu_([wmb])(\d{1,2})\[(\d{1,7})\] MCU_FLASH = \{\n"
                    r"([-\d, \n]*)\n\};$", re.M)
_ROW = re.compile(r"^    \{([01]), (\d{1,5}), (\d{1,5}), (\d{1,5}), (\d{1,5}), (\d{1,5}), (\d{1,5}), (\d{1,5}), "
                  r"mcu_w(\d{1,2}), mcu_m\9, mcu_b\9\},?$", re.M)
_RANGES = {"uint8_t": (0, UINT8_MAX), "int32_t": (-INT32_MAX - 1, INT32_MAX)}


def parse_header(text: str) -> List[IntLayer]:
    """The layers of a header that :func:`header` wrote, read as numbers; raises :class:`HeaderError` otherwise.

    The text is data, never compiled: it must be exactly what :func:`header` writes for the numbers it holds
    (no other line, directive or character), and those numbers must pass :func:`check_layers`. Who compiles
    it then writes it again from the layers, so a C compiler only ever sees text of this module's making.
    """
    if len(text) > MCU_MAX_HEADER_BYTES:
        raise HeaderError(f"the header has {len(text):,} characters; at most {MCU_MAX_HEADER_BYTES:,} are read")
    if not text.isascii():
        raise HeaderError("the header holds characters that are not ASCII; mcu/export.py writes ASCII only")
    arrays: Dict[Tuple[str, int], np.ndarray] = {}
    for match in _ARRAY.finditer(text):
        kind, letter, index, count, body = match.groups()
        items = [item.strip() for item in body.replace("\n", " ").split(",")]
        if len(items) != int(count) or not all(re.fullmatch(r"-?\d{1,10}", item) for item in items):
            raise HeaderError(f"mcu_{letter}{index} declares {count} values but does not hold that many integers")
        values = np.array([int(item) for item in items], dtype=np.int64)
        low, high = _RANGES[kind]
        if values.min() < low or values.max() > high:
            raise HeaderError(f"mcu_{letter}{index} holds a value outside the range of {kind}")
        arrays[letter, int(index)] = values.astype(np.uint8 if kind == "uint8_t" else np.int32)
    layers = []
    for row, match in enumerate(_ROW.finditer(text)):
        conv, c, h, w, out, fan_in, row_bytes, shift, index = (int(g) for g in match.groups())
        if index != row or any((letter, row) not in arrays for letter in "wmb"):
            raise HeaderError(f"row {row} of the layer table needs the arrays mcu_w{row}, mcu_m{row} and "
                              f"mcu_b{row}, written as mcu/export.py writes them")
        packed = arrays["w", row]
        if out < 1 or row_bytes < 1 or packed.size != out * row_bytes:
            raise HeaderError(f"mcu_w{row} holds {packed.size} bytes, not {out} rows of {row_bytes}")
        layers.append(IntLayer("conv" if conv else "fc", (c, h, w) if conv else (c,), out, fan_in,
                               packed.reshape(out, row_bytes), arrays["m", row], arrays["b", row], shift))
    if not layers:
        raise HeaderError("the header holds no layer table (the rows of mcu_layers that mcu/export.py writes)")
    written = header(layers)
    if written != text:
        theirs, ours = text.splitlines(), written.splitlines()
        line = next((n for n, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
        shown = theirs[line][:80] if line < len(theirs) else "(the end of the text)"
        raise HeaderError(f"the header is not what mcu/export.py writes for its numbers: line {line + 1} is "
                          f"{shown!r}")
    return layers


def write_header(layers: List[IntLayer], path: Path) -> Path:
    """Write :func:`header` to ``path`` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header(layers))
    return path
