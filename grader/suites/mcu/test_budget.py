"""The budget (mcu/budget.py): flash, SRAM and latency of a hand-computable network on two boards (7 points)."""
import math

import numpy as np
import pytest

from grader.homework import MCU_BOARDS, MCU_CODE_BYTES, MCU_RUNTIME_RESERVE_BYTES
from grader.suites.common import fail_if

pytestmark = pytest.mark.part("budget")

BOARDS = ("uno", "esp32")
LAYERS = [dict(name="conv1", in_shape=[3, 8, 8], out_shape=[5, 4, 4], out_channels=5, fan_in=27, macs=8640),
          dict(name="conv2", in_shape=[5, 4, 4], out_shape=[7, 2, 2], out_channels=7, fan_in=45, macs=5040),
          dict(name="fc", in_shape=[28], out_shape=[10], out_channels=10, fan_in=28, macs=280, out_value_bytes=4)]
"""Three layers whose input + output bytes are 272, 108 and 68: the sum (448) and the largest output alone (80)
both differ from the peak."""


def expected(function: str, board: str) -> float:
    """The budget written out from its definition (docs/MCU.md), for ``LAYERS`` on ``board``."""
    if function == "flash_bytes":
        return sum(l["out_channels"] * (math.ceil(l["fan_in"] / 8) + 8) for l in LAYERS) + MCU_CODE_BYTES
    if function == "sram_bytes":
        return max(math.prod(l["in_shape"]) + math.prod(l["out_shape"]) * l.get("out_value_bytes", 1)
                   for l in LAYERS) + MCU_RUNTIME_RESERVE_BYTES
    return sum(l["macs"] for l in LAYERS) * MCU_BOARDS[board].cycles_per_mac / MCU_BOARDS[board].clock_hz


def check(student, function: str, rule: str) -> None:
    problems = []
    for board in BOARDS:
        answer, _ = student.mcu("budget", function=function, layers=LAYERS, board=board,
                                context=f"{function} on {board}")
        got, want = answer.get("value"), expected(function, board)
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            problems.append(f"on {board}: {function} must return a number, got {got!r:.80}")
        elif not np.isclose(float(got), want, rtol=1e-9, atol=1e-12):
            problems.append(f"on {board}: {function} returned {got!r}, expected {want!r}")
    fail_if(problems, f"{function} of a (conv 3x8x8 -> 5, conv 5 -> 7, fc 28 -> 10) network, {rule}:")


@pytest.mark.points(3, todo="mcu/budget.py: flash_bytes")
def test_flash_counts_packed_weights_scales_biases_and_code(student):
    """flash_bytes adds every layer's packed weights and a 4-byte scale and bias per output channel to the code."""
    check(student, "flash_bytes", f"packed weights + 8 bytes an output channel + {MCU_CODE_BYTES} bytes of code")


@pytest.mark.points(3, todo="mcu/budget.py: sram_bytes")
def test_sram_is_the_largest_live_pair_plus_the_reserve(student):
    """sram_bytes is the largest input + output of one layer (sequential execution) plus the runtime reserve."""
    check(student, "sram_bytes", f"the largest input + output of one layer + {MCU_RUNTIME_RESERVE_BYTES} bytes")


@pytest.mark.points(1, todo="mcu/budget.py: latency_s")
def test_latency_is_macs_times_cycles_over_the_clock(student):
    """latency_s is the MACs times the board's cycles per MAC over its clock, in seconds."""
    check(student, "latency_s", "in seconds")
