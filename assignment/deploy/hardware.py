"""PROVIDED: what the machine offers, as data the optimiser can read (``deploy/optimiser.py``).

A ``HardwareProfile`` holds the facts about a machine that decide which
compression steps can run on it and which are worth trying: its CPU
architecture and cores, the vector instructions it has (AVX2 and AVX-512 VNNI
on x86 speed up INT8 dot products, NEON on ARM), the INT8 engines this torch
offers, its memory and a GPU if there is one, and whether ONNX Runtime is
installed. ``HardwareProfile.detect()`` reads them from the running machine;
a profile can also be written by hand (or read from JSON) to plan for a
machine you are not on.

A profile says what *can* run, never what is *fast*: that is measured. On
the course's 2-core x86 machine, for instance, float16 runs about 8x slower
than float32 (there is no fast half-precision kernel on that CPU), and only a
measurement shows it.

Nothing to do in this file.
"""
import dataclasses
import importlib.util
import os
import platform
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

INTERESTING_FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
                        "amx_int8", "amx_bf16", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve")
"""The CPU features (as ``/proc/cpuinfo`` names them) that matter for the number formats of Part 2."""
INT8_ENGINES = ("x86", "fbgemm", "qnnpack", "onednn")
"""torch's quantised CPU engines, in the order the optimiser tries them."""


@dataclasses.dataclass(frozen=True)
class HardwareProfile:
    architecture: str
    """``platform.machine()``: ``x86_64``, ``aarch64``, ``arm64``, ..."""
    cores: int
    """CPU cores this process may use."""
    features: Tuple[str, ...] = ()
    """The ``INTERESTING_FEATURES`` the CPU has."""
    int8_engines: Tuple[str, ...] = ()
    """The ``INT8_ENGINES`` this torch can run quantised kernels on."""
    memory_bytes: int = 0
    """Physical memory (0: unknown)."""
    gpu: Optional[str] = None
    """The name of the first CUDA device, or ``None``."""
    onnxruntime: bool = False
    """Whether ONNX Runtime can be imported (the ONNX steps need it)."""

    @classmethod
    def detect(cls) -> "HardwareProfile":
        """The profile of the machine this runs on."""
        engines = set(torch.backends.quantized.supported_engines)
        return cls(architecture=platform.machine(), cores=_usable_cores(), features=_cpu_features(),
                   int8_engines=tuple(engine for engine in INT8_ENGINES if engine in engines),
                   memory_bytes=_memory_bytes(),
                   gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                   onnxruntime=importlib.util.find_spec("onnxruntime") is not None)

    @classmethod
    def from_dict(cls, values: Dict[str, object]) -> "HardwareProfile":
        """A profile from ``to_dict``'s form (a JSON file written by hand, say); unknown or missing keys are refused."""
        fields = {field.name: field for field in dataclasses.fields(cls)}
        if not isinstance(values, dict):
            raise ValueError(f"a hardware profile is a JSON object of {', '.join(fields)}, not {type(values).__name__}")
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"a hardware profile has no {', '.join(unknown)}; its keys are {', '.join(fields)}")
        if "architecture" not in values or "cores" not in values:
            raise ValueError("a hardware profile needs at least 'architecture' and 'cores'")
        if not isinstance(values["cores"], int) or values["cores"] < 1:
            raise ValueError(f"cores must be a whole number of at least 1, not {values['cores']!r}")
        odd = sorted(set(values.get("int8_engines", ())) - set(INT8_ENGINES))
        if odd:
            raise ValueError(f"unknown INT8 engines {odd}; the engines are {list(INT8_ENGINES)}")
        return cls(**{key: tuple(value) if key in ("features", "int8_engines") else value
                      for key, value in values.items()})

    def to_dict(self) -> Dict[str, object]:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    def describe(self) -> str:
        """One line, for logs and reports."""
        memory = f"{self.memory_bytes / 2 ** 30:.0f} GiB" if self.memory_bytes else "memory unknown"
        return (f"{self.architecture}, {self.cores} cores, {memory}, features: {' '.join(self.features) or 'none'}; "
                f"INT8 engines: {' '.join(self.int8_engines) or 'none'}; GPU: {self.gpu or 'none'}; "
                f"ONNX Runtime: {'yes' if self.onnxruntime else 'no'}")


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> Tuple[str, ...]:
    """The ``INTERESTING_FEATURES`` in the first ``flags`` (x86) or ``Features`` (ARM) line of ``cpuinfo``."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            present = set(value.split())
            return tuple(feature for feature in INTERESTING_FEATURES if feature in present)
    return ()


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
