"""The microcontroller track's facts, in one place (standard library only, like ``grader/homework.py``).

The handout carries this file as ``mcu/facts.py`` (a link), so the student's
budget check, the staff script and the tests read the same boards, the same
input format and the same TODO list. What is *measured* rather than written
here (flash and static RAM from ``avr-size``, cycles from ``simavr``) comes
from ``mcu/toolchain.py`` at run time; the two constants below that were
measured say how.
"""
from dataclasses import dataclass
from typing import Dict, Tuple

# --------------------------------------------------------------------------- the input

RESOLUTION = 16
"""Images are CIFAR-10 downsampled to 16x16 (2x2 box average of the 32x32 image, rounded), colour."""
CHANNELS = 3
INPUT_OFFSET = 128
"""The deployed input is ``pixel - 128`` as int8; the float model sees ``(pixel - 128) / INPUT_SCALE``."""
INPUT_SCALE = 64.0
ACTIVATION_MAX = 127
"""Activations between layers are 7-bit unsigned integers (0..127) stored as int8: ReLU, then round and clip."""
CLASSES = 10


# --------------------------------------------------------------------------- the boards

@dataclass(frozen=True)
class Board:
    """A target: the memory a model may use and a clock to turn cycles into time.

    ``flash_bytes`` is what a program may occupy (after a bootloader or the
    runtime's partition), ``sram_bytes`` the RAM for data and stack.
    ``cycles_per_mac`` turns a MAC count into a latency estimate; only the
    UNO's was measured (see ``UNO_CYCLES_PER_MAC``), the others are stated
    guesses from their cores (a 32-bit core with a barrel shifter does a
    1-bit-weight MAC in about 3 cycles).
    """
    name: str
    chip: str
    clock_hz: int
    flash_bytes: int
    sram_bytes: int
    cycles_per_mac: float
    avr: bool = False
    """True when the board is built with ``avr-gcc`` (weights in ``PROGMEM``) and simulated by ``simavr``."""


UNO_CYCLES_PER_MAC = 79.0
"""simavr cycles of one inference divided by its MACs: 43,778,048 cycles / 554,240 MACs for channels
(16, 32, 32), avr-gcc 5.4.0 -Os (``mcu/toolchain.py``; docs/MCU.md)."""
RUNTIME_RESERVE_BYTES = 176
"""SRAM the budget sets aside beyond the activations: the stack of one inference (167 bytes measured in
simavr for channels (16, 32, 32), the int32 logits included) rounded up to 16; the build has no .data."""
CODE_BYTES = 1800
"""Flash of the inference code, its layer table and the C runtime on the ATmega328P: avr-size's .text
(4,460 B for channels (16, 32, 32)) minus the weight arrays (2,672 B), rounded up."""

BOARDS: Dict[str, Board] = {
    board.name: board for board in (
        Board("uno", "ATmega328P (AVR, 8-bit)", 16_000_000, 32_256, 2_048, UNO_CYCLES_PER_MAC, avr=True),
        Board("esp32", "ESP32-WROOM-32 (Xtensa LX6, 32-bit)", 240_000_000, 1_310_720, 327_680, 3.0),
        Board("pico", "RP2040 (Cortex-M0+, 32-bit)", 133_000_000, 2_097_152, 270_336, 3.0),
        Board("stm32f103", "STM32F103C8 'Blue Pill' (Cortex-M3, 32-bit)", 72_000_000, 65_536, 20_480, 3.0),
    )
}
"""UNO: 32 KB flash less Optiboot's 512 B, 2 KB SRAM. ESP32: the default partition table's 1.25 MB app slot
and the 320 KB of DRAM left to data. Pico: 2 MB QSPI flash, 264 KB SRAM. STM32F103C8: 64 KB flash, 20 KB SRAM."""
DEFAULT_BOARD = "uno"


# --------------------------------------------------------------------------- the TODOs


@dataclass(frozen=True)
class Todo:
    """One student TODO of the track: where it is, its points in the track's suite, what it is."""
    where: str
    points: float
    what: str


TODOS: Tuple[Todo, ...] = (
    Todo("mcu/binary.py: binarize", 4.0, "sign(W) times the mean |W| of each output channel"),
    Todo("mcu/binary.py: SignSTE.backward", 3.0, "straight-through gradient, zero where |W| > 1"),
    Todo("mcu/binary.py: pack_signs", 3.0, "8 signs per byte, first weight in bit 0, 1 for +1"),
    Todo("mcu/budget.py: flash_bytes", 3.0, "packed weights + scales + biases + code"),
    Todo("mcu/budget.py: sram_bytes", 3.0, "largest input + output pair of one layer + the runtime reserve"),
    Todo("mcu/budget.py: latency_s", 1.0, "MACs x cycles per MAC / clock"),
    Todo("mcu/prune.py: fit_to_budget", 3.0, "drop the weakest channels of the layer at the SRAM peak until it fits"),
)
TRACK_POINTS = sum(todo.points for todo in TODOS)
STUDENT_FILES = ("mcu/binary.py", "mcu/budget.py", "mcu/prune.py")
