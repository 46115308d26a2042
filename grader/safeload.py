"""Load a student's ``.ptmodel`` without running anything from it.

A ``.ptmodel`` is the zip archive ``torch.save`` writes: a pickle
(``<name>/data.pkl``) plus one raw file per tensor storage. Unpickling an
arbitrary pickle runs arbitrary code, so a submission is read in two steps:

1. **The container** is checked before anything is unpickled: a real zip
   (not truncated), at most ``MAX_ENTRIES`` entries, every entry stored
   uncompressed (``torch.save`` never compresses, so a zip bomb cannot hide
   in it), at most ``MAX_UNPACKED_BYTES`` declared in total, one small
   ``data.pkl``.
2. **The pickle** is read by ``torch.load(weights_only=True)``, which builds
   only tensors, plain containers and the globals allowed explicitly. The
   only extra globals allowed are the three classes a pickled handout model
   names (``net.models.AlexNet``, ``torch.nn.modules.conv.Conv2d``,
   ``torch.nn.modules.linear.Linear``), and each is mapped to an inert
   stand-in that just keeps its attribute dictionary: no method of the
   student's classes, or of ours, runs while loading.

Both a whole pickled model (``torch.save(model)``, what the handout's scripts
write) and a ``state_dict`` are accepted. The tensors found must be exactly
the reference AlexNet's: same names, shapes, float32, finite. Every problem
raises ``SubmissionError`` with a message meant for the student.
"""
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import torch

if tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 6):  # (class, "module.Name") globals
    raise ImportError(f"the leaderboard's safe loader needs torch >= 2.6 (this is torch {torch.__version__})")

MAX_FILE_BYTES = 200 * 2 ** 20
MAX_UNPACKED_BYTES = 200 * 2 ** 20
"""The homework's AlexNet is 81 MB of float32; anything much bigger is not a submission."""
MAX_ENTRIES = 1000
MAX_PICKLE_BYTES = 2 ** 20
"""A pickled AlexNet's ``data.pkl`` is about 4 KB (a state_dict's about 1.5 KB)."""

PathLike = Union[str, Path]


class SubmissionError(Exception):
    """The submitted file cannot be used; the message says why, in the student's terms."""


class PickledObject:
    """Inert stand-in for a class named in a pickle: it only keeps the attribute dictionary."""

    def __init__(self) -> None:
        self.state: Dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise SubmissionError(f"a pickled {type(self).__name__} has an unexpected state")
        self.state = state


class PickledAlexNet(PickledObject):
    """Stands for ``net.models.AlexNet``."""


class PickledConv2d(PickledObject):
    """Stands for ``torch.nn.Conv2d``."""


class PickledLinear(PickledObject):
    """Stands for ``torch.nn.Linear``."""


STAND_INS = [(PickledAlexNet, "net.models.AlexNet"),
             (PickledConv2d, "torch.nn.modules.conv.Conv2d"),
             (PickledLinear, "torch.nn.modules.linear.Linear")]
"""The globals, beyond torch's tensor machinery, that ``torch.save(model)`` of the handout's AlexNet writes."""


def check_container(path: PathLike) -> None:
    """Check that ``path`` is a plausible, bounded ``torch.save`` zip archive, without unpickling it."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise SubmissionError(f"the file is {size:,} bytes; a homework AlexNet is about 81 MB at most")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            starts_like_zip = f.read(4) == b"PK\x03\x04"
        raise SubmissionError("the file is truncated or damaged (its zip directory is missing)" if starts_like_zip
                              else "not a PyTorch file: expected the zip archive that torch.save writes")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise SubmissionError(f"the file is truncated or damaged ({error})") from None
    if len(entries) > MAX_ENTRIES:
        raise SubmissionError(f"the archive holds {len(entries)} entries; torch.save writes a few dozen")
    declared = sum(entry.file_size for entry in entries)
    if declared > MAX_UNPACKED_BYTES:
        raise SubmissionError(f"the archive declares {declared:,} bytes once unpacked (limit "
                              f"{MAX_UNPACKED_BYTES:,}): not a homework model")
    if any(entry.compress_type != zipfile.ZIP_STORED for entry in entries):
        raise SubmissionError("the archive has compressed entries: it was not written by torch.save "
                              "(re-save the model with torch.save(model, path))")
    pickles = [entry for entry in entries if entry.filename.endswith("data.pkl")]
    if len(pickles) != 1:
        raise SubmissionError(f"expected one data.pkl in the archive, found {len(pickles)}")
    if pickles[0].file_size > MAX_PICKLE_BYTES:
        raise SubmissionError(f"data.pkl is {pickles[0].file_size:,} bytes; a homework model's is a few KB")


def _load_error(error: Exception) -> SubmissionError:
    """Turn torch's long loading errors into one sentence."""
    if isinstance(error, SubmissionError):
        return error
    text = str(error)
    found = re.search(r"GLOBAL (\S+)|unrecognized function (\S+)|got (<class '[^']+'>)", text)
    if found:
        what = next(group for group in found.groups() if group)
        return SubmissionError(f"the file refers to {what}, which a model saved by the handout never does; "
                               "it was not loaded (loading it could run code)")
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return SubmissionError(f"the file could not be read as a PyTorch model ({first[:200]})")


def _module_tensors(module: PickledObject, prefix: str = "") -> Dict[str, Any]:
    """The parameters and buffers of a pickled module and its children, by dotted name."""
    found: Dict[str, Any] = {}
    for kind in ("_parameters", "_buffers"):
        table = module.state.get(kind) or {}
        if not isinstance(table, Mapping):
            raise SubmissionError(f"the pickled module {prefix or 'model'} is malformed ({kind})")
        found.update({prefix + name: tensor for name, tensor in table.items() if tensor is not None})
    children = module.state.get("_modules") or {}
    if not isinstance(children, Mapping):
        raise SubmissionError(f"the pickled module {prefix or 'model'} is malformed (_modules)")
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(child, PickledObject):
            raise SubmissionError(f"the submodule {prefix}{name} is not a Conv2d or Linear layer")
        found.update(_module_tensors(child, f"{prefix}{name}."))
    return found


def read_tensors(path: PathLike) -> Dict[str, Any]:
    """Every tensor of a whole pickled AlexNet or of a state_dict in ``path``, by name (not yet checked)."""
    check_container(path)
    try:
        with torch.serialization.safe_globals(STAND_INS):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for damaged or hostile files
        raise _load_error(error) from None
    if isinstance(loaded, PickledAlexNet):
        return _module_tensors(loaded)
    if isinstance(loaded, Mapping) and all(isinstance(key, str) for key in loaded):
        return dict(loaded)
    raise SubmissionError(f"expected a whole AlexNet (torch.save(model)) or its state_dict, "
                          f"found a {type(loaded).__name__}")


def check_tensors(tensors: Mapping[str, Any], expected: Mapping[str, torch.Size]) -> Dict[str, torch.Tensor]:
    """Check ``tensors`` against the reference's names and shapes; return float32 copies in reference order."""
    missing = [name for name in expected if name not in tensors]
    extra = sorted(name for name in tensors if name not in expected)
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra[:8])}{' ...' if len(extra) > 8 else ''}"] if extra else [])
        raise SubmissionError(f"not the homework's AlexNet: {'; '.join(parts)}")
    checked = {}
    for name, shape in expected.items():
        tensor = tensors[name]
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided or tensor.is_quantized:
            raise SubmissionError(f"{name} is not a plain dense tensor")
        if tensor.dtype != torch.float32:
            raise SubmissionError(f"{name} is {tensor.dtype}; the homework's model is float32")
        if tensor.shape != shape:
            raise SubmissionError(f"{name} has shape {tuple(tensor.shape)}; the homework's AlexNet has "
                                  f"{tuple(shape)}")
        if not bool(torch.isfinite(tensor).all()):
            raise SubmissionError(f"{name} contains NaN or Inf values")
        checked[name] = tensor.detach().contiguous().clone()
    return checked


def load_state_dict(path: PathLike, expected: Mapping[str, torch.Size]) -> Dict[str, torch.Tensor]:
    """Read and check the submission at ``path``; return its tensors, ready for ``load_state_dict``."""
    return check_tensors(read_tensors(path), expected)
