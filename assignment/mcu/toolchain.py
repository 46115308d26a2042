"""Compile the exported C and measure it: host ``gcc`` for agreement with Python, ``avr-gcc``,
``avr-size`` and ``simavr`` for the real flash, RAM and cycles of one inference on an ATmega328P.

Everything runs in a temporary folder from the C files next to this module
(``infer.c``, ``host_main.c``, ``avr_main.c``) and a header written by
``mcu/export.py``. A missing tool raises :class:`ToolMissing` with what to
install; the AVR numbers are only ever read from the tools, never estimated.
"""
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch

from homework import MCU_BOARDS

from .export import IntLayer, write_header

HERE = Path(__file__).resolve().parent
HOST_FLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"]
AVR_FLAGS = ["-std=gnu99", "-Os", "-mmcu=atmega328p", "-DF_CPU=16000000UL", "-Wall", "-Wextra", "-Werror"]
AVR_TOOLS = ("avr-gcc", "avr-size", "simavr")
COMPILE_TIMEOUT_S = 300.0
"""Seconds a compiler may take on one header (a UNO-sized model takes about one)."""


class ToolMissing(RuntimeError):
    """A compiler or simulator is not installed; the message says which package provides it."""


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        package = {"gcc": "gcc", "avr-gcc": "gcc-avr avr-libc", "avr-size": "binutils-avr",
                   "simavr": "simavr"}[name]
        raise ToolMissing(f"{name} is not installed (Debian/Ubuntu: apt-get install {package})")
    return found


def avr_available() -> bool:
    """True when ``avr-gcc``, ``avr-size`` and ``simavr`` are all on the PATH."""
    return all(shutil.which(name) for name in AVR_TOOLS)


def _compile(compiler: str, flags: List[str], sources: Sequence[str], header: Path, out: Path,
             extra: Sequence[str] = ()) -> Path:
    command = [_tool(compiler), *flags, *extra, f"-I{HERE}", f"-I{header.parent}",
               f'-DMCU_MODEL="{header.name}"', *[str(HERE / name) for name in sources], "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    if done.returncode:
        raise RuntimeError(f"{compiler} failed on the exported model:\n{done.stderr[-3000:]}")
    return out


def host_logits(layers: List[IntLayer], images: torch.Tensor) -> np.ndarray:
    """The C code's (N, classes) logits on uint8 ``images``, compiled with the host ``gcc``; checks its classes."""
    with tempfile.TemporaryDirectory() as folder:
        header = write_header(layers, Path(folder) / "mcu_model.h")
        binary = _compile("gcc", HOST_FLAGS, ["infer.c", "host_main.c"], header, Path(folder) / "mcu_host")
        done = subprocess.run([str(binary)], input=images.contiguous().numpy().astype(np.uint8).tobytes(),
                              capture_output=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"the host build of the model exited with {done.returncode}")
    rows = np.array([line.split() for line in done.stdout.decode().splitlines()], dtype=np.int64)
    if rows.shape != (len(images), layers[-1].out_channels + 1):
        raise RuntimeError(f"the host build printed {rows.shape} numbers for {len(images)} images")
    if not (rows[:, 0] == rows[:, 1:].argmax(axis=1)).all():
        raise RuntimeError("the C code's predicted class is not the first largest of its own logits")
    return rows[:, 1:]


@dataclass(frozen=True)
class AvrMeasurement:
    """What the ATmega328P build really uses, from ``avr-size`` (deployable build) and ``simavr`` (one inference)."""
    text: int
    data: int
    bss: int
    stack: int
    """Bytes of stack one inference used in simavr (RAM painted beforehand), in the measuring build."""
    cycles: int
    predicted: int

    @property
    def flash(self) -> int:
        """Program flash: code and constants (.text) plus the initial values of .data."""
        return self.text + self.data

    @property
    def sram(self) -> int:
        """Static RAM (.data + .bss) plus the measured stack."""
        return self.data + self.bss + self.stack

    def fits(self, board_name: str = "uno") -> bool:
        board = MCU_BOARDS[board_name]
        return self.flash <= board.flash_bytes and self.sram <= board.sram_bytes

    def report(self, macs: int) -> str:
        board = MCU_BOARDS["uno"]
        return (f"ATmega328P, measured: flash {self.flash:,} of {board.flash_bytes:,} B (avr-size text "
                f"{self.text:,} + data {self.data:,}); SRAM {self.sram:,} of {board.sram_bytes:,} B (data "
                f"{self.data} + bss {self.bss:,} + stack {self.stack}); {self.cycles:,} cycles in simavr = "
                f"{1000 * self.cycles / board.clock_hz:.1f} ms at 16 MHz, {self.cycles / macs:.2f} cycles/MAC; "
                f"{'FITS' if self.fits() else 'does NOT fit'} the UNO")


def avr_measure(layers: List[IntLayer], image: torch.Tensor, timeout: float = 300.0) -> AvrMeasurement:
    """Build for the ATmega328P, read ``avr-size``, run one inference on ``image`` (uint8 C,H,W) in ``simavr``."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        header = write_header(layers, folder / "mcu_model.h")
        pixels = ", ".join(str(int(v)) for v in image.reshape(-1).tolist())
        (folder / "mcu_image.h").write_text(
            f"static const uint8_t mcu_image[{image.numel()}] PROGMEM = {{{pixels}}};\n")
        deployable = _compile("avr-gcc", AVR_FLAGS, ["infer.c", "avr_main.c"], header, folder / "mcu.elf")
        sizes = subprocess.run([_tool("avr-size"), "-A", str(deployable)], capture_output=True, text=True,
                               check=True, timeout=COMPILE_TIMEOUT_S).stdout
        section = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\.(\w+)\s+(\d+)", sizes, re.M)}
        measuring = _compile("avr-gcc", AVR_FLAGS, ["infer.c", "avr_main.c"], header, folder / "mcu_sim.elf",
                             ["-DMCU_SIM"])
        done = subprocess.run([_tool("simavr"), "-m", "atmega328p", "-f", "16000000", str(measuring)],
                              capture_output=True, text=True, timeout=timeout)
    found = re.search(r"cycles=(\d+) class=(\d+) stack=(\d+)", done.stdout + done.stderr)
    if not found:
        raise RuntimeError(f"simavr printed no measurement:\n{(done.stdout + done.stderr)[-2000:]}")
    cycles, predicted, stack = (int(g) for g in found.groups())
    return AvrMeasurement(section.get("text", 0), section.get("data", 0), section.get("bss", 0), stack,
                          cycles, predicted)
