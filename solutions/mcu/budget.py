"""Does a network fit a board? Flash, SRAM and latency from the shapes of its layers.

The network runs layer after layer (sequential execution): while layer ``k``
computes, only its input and its output must be in RAM, and the next layer
reuses that memory. So the RAM the activations need is the *largest*
input + output pair of any one layer, not the sum over layers. The weights
never move: they stay in flash, one bit each, with two 4-byte integers per
output channel (the scale and the bias of the integer arithmetic, see
``mcu/export.py``), next to the inference code itself.

Everything here works on :class:`LayerShape` records (plain numbers), so a
budget can be checked by hand; ``mcu.model.TinyNet.shapes()`` makes them
from a model. These are estimates: on an AVR toolchain, ``avr-size`` and
``simavr`` measure the real numbers (``mcu/toolchain.py``), and only those
say "fits".
"""
import math
from dataclasses import dataclass
from typing import Sequence, Tuple

from homework import MCU_CODE_BYTES, MCU_RUNTIME_RESERVE_BYTES, Board

SCALE_BYTES = 4
"""Bytes of one output channel's scale (an int32 fixed-point multiplier)."""
BIAS_BYTES = 4
"""Bytes of one output channel's bias (int32)."""


@dataclass(frozen=True)
class LayerShape:
    """One layer as the budget sees it.

    ``in_shape``/``out_shape`` are what is stored between layers, channels
    first (a conv layer's output is after its 2x2 max-pool). Activations are
    int8 (1 byte each); ``out_value_bytes`` is 4 for the last layer, whose
    logits are int32.
    """
    name: str
    in_shape: Tuple[int, ...]
    out_shape: Tuple[int, ...]
    out_channels: int
    fan_in: int
    """Weights of one output channel (in_channels x 3 x 3 for a conv)."""
    macs: int
    out_value_bytes: int = 1

    @property
    def in_bytes(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_bytes(self) -> int:
        return math.prod(self.out_shape) * self.out_value_bytes

    @property
    def packed_weight_bytes(self) -> int:
        """One bit per weight, every output channel's row starting on a new byte."""
        return self.out_channels * ((self.fan_in + 7) // 8)


def flash_bytes(layers: Sequence[LayerShape], code_bytes: int = MCU_CODE_BYTES) -> int:
    """Flash of the deployed network: packed weights, a scale and a bias per output channel, and the code."""
    # TODO: add up, over the layers, `packed_weight_bytes` + `out_channels` * (SCALE_BYTES + BIAS_BYTES),
    #       then add `code_bytes` once.
    # BEGIN SOLUTION
    return sum(layer.packed_weight_bytes + layer.out_channels * (SCALE_BYTES + BIAS_BYTES)
               for layer in layers) + code_bytes
    # END SOLUTION
    # STUB: return code_bytes


def sram_bytes(layers: Sequence[LayerShape], reserve: int = MCU_RUNTIME_RESERVE_BYTES) -> int:
    """RAM under sequential execution: the largest ``in_bytes + out_bytes`` of one layer, plus ``reserve``."""
    # TODO: return the maximum over the layers of (in_bytes + out_bytes), plus `reserve` (the stack and
    #       the runtime). Not the sum over layers: a layer's input is freed once its output is written.
    # BEGIN SOLUTION
    return max(layer.in_bytes + layer.out_bytes for layer in layers) + reserve
    # END SOLUTION
    # STUB: return reserve


def latency_s(layers: Sequence[LayerShape], board: Board) -> float:
    """Estimated seconds of one inference: total MACs x ``board.cycles_per_mac`` / ``board.clock_hz``."""
    # TODO: return sum(macs) * board.cycles_per_mac / board.clock_hz.
    # BEGIN SOLUTION
    return sum(layer.macs for layer in layers) * board.cycles_per_mac / board.clock_hz
    # END SOLUTION
    # STUB: return 0.0


@dataclass(frozen=True)
class Budget:
    """The estimate for one board: bytes, seconds and whether each memory fits."""
    board: Board
    flash: int
    sram: int
    latency: float
    peak_layer: str
    """The layer whose input + output pair sets the SRAM peak."""

    @property
    def fits_flash(self) -> bool:
        return self.flash <= self.board.flash_bytes

    @property
    def fits_sram(self) -> bool:
        return self.sram <= self.board.sram_bytes

    @property
    def fits(self) -> bool:
        return self.fits_flash and self.fits_sram

    def report(self) -> str:
        def line(what: str, used: int, limit: int) -> str:
            return f"  {what:<6}{used:>10,} of {limit:>10,} bytes ({100 * used / limit:5.1f}%)"
        return "\n".join([
            f"{self.board.name} ({self.board.chip}), estimated:",
            line("flash", self.flash, self.board.flash_bytes),
            line("SRAM", self.sram, self.board.sram_bytes) + f", peak at {self.peak_layer}",
            f"  latency {1000 * self.latency:.1f} ms at {self.board.clock_hz / 1e6:g} MHz",
            f"  {'fits (estimate)' if self.fits else 'does NOT fit'}"])


def check(layers: Sequence[LayerShape], board: Board) -> Budget:
    """The budget of ``layers`` on ``board``."""
    if not layers:
        raise ValueError("the network has no layers")
    peak = max(layers, key=lambda layer: layer.in_bytes + layer.out_bytes)
    return Budget(board, flash_bytes(layers), sram_bytes(layers), latency_s(layers, board), peak.name)
