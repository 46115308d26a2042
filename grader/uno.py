"""The deployable-model leaderboard's "fits UNO" column: a student's C header, measured on the real toolchain.

A student may hand in ``<student_id>.h`` beside ``<student_id>.onnx``: the
``mcu_model.h`` that the microcontroller track's ``mcu/export.py`` writes
(docs/MCU.md). Compiling a student's header would be compiling the
student's C (the preprocessor alone can include any file of this machine),
so it is never compiled. It is read as data by the reference
``mcu/export.py: parse_header``, which accepts only the exact text that
``header`` writes for the numbers it holds; the layers it gives are written
again by the reference ``header`` and that text, ours, is built for the
ATmega328P and run once in simavr by the reference ``mcu/toolchain.py``.
"fits" is said only from those numbers: ``avr-size``'s flash and static RAM
plus the stack simavr saw, against ``homework.MCU_BOARDS["uno"]``.

Results are cached in ``cache/uno-<hash>.json`` by the header's hash and
the reference code's, like the ONNX measurements.
"""
import functools
import hashlib
import json
from pathlib import Path

from grader import homework
from grader.files import write_atomic

NOT_HANDED_IN = "n/a"
SOURCES = ("mcu/export.py", "mcu/toolchain.py", "mcu/infer.c", "mcu/infer.h", "mcu/avr_main.c", "homework.py")
"""The reference files a measurement depends on (their bytes are part of the cache key)."""


def header_of(model_path: Path) -> Path:
    """Where a student's header sits: beside the ``.onnx``, with the same name."""
    return Path(model_path).with_suffix(".h")


@functools.lru_cache(maxsize=1)
def _reference():
    """The reference ``mcu/export.py`` and ``mcu/toolchain.py``, and the digest of ``SOURCES`` (once a process)."""
    from grader.reference import PACKAGE, SOLUTIONS, load, module
    package = load(SOLUTIONS, PACKAGE)
    code = hashlib.sha256(b"".join((SOLUTIONS / name).read_bytes() for name in SOURCES)).hexdigest()[:16]
    return module(package, "mcu/export.py"), module(package, "mcu/toolchain.py"), code


def fits_uno(model_path: Path, cache_dir: Path) -> str:
    """The column's text for the student of ``model_path``: ``n/a`` without a header, else what was measured."""
    path = header_of(model_path)
    if not path.exists() and not path.is_symlink():
        return NOT_HANDED_IN
    if path.is_symlink() or not path.is_file():
        return f"invalid header: {path.name} must be a regular file"
    limit = homework.MCU_MAX_HEADER_BYTES
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        return f"invalid header: more than {limit:,} bytes"
    export, toolchain, code = _reference()
    cached = Path(cache_dir) / f"uno-{hashlib.sha256(data).hexdigest()[:32]}-{code}.json"
    if cached.is_file():
        return json.loads(cached.read_text())["fits_uno"]
    if not toolchain.avr_available():
        return "n/a (no AVR toolchain on the grading machine)"  # not cached: a machine with one will measure
    text = measure(data, export, toolchain)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(cached, json.dumps({"fits_uno": text}).encode())
    return text


def measure(data: bytes, export, toolchain) -> str:
    """``yes``/``no`` with the measured flash, SRAM and cycles, or why the header cannot be measured."""
    import torch
    try:
        layers = export.parse_header(data.decode("ascii"))
    except UnicodeDecodeError:
        return "invalid header: not ASCII text (mcu/export.py writes ASCII only)"
    except export.HeaderError as error:
        return f"invalid header (not compiled): {str(error)[:300]}"
    image = torch.zeros(tuple(layers[0].in_shape), dtype=torch.uint8)
    try:
        measured = toolchain.avr_measure(layers, image)
    except Exception as error:  # noqa: BLE001 - a build or simulation failure is this student's cell, not a crash
        return f"not measured: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    board = homework.MCU_BOARDS["uno"]
    return (f"{'yes' if measured.fits('uno') else 'no'}: flash {measured.flash:,} of {board.flash_bytes:,} B, "
            f"SRAM {measured.sram:,} of {board.sram_bytes:,} B, {measured.cycles:,} cycles")
