"""What the worker can be asked to do with the student's code: one function per request, data in, data out.

Each request names an operation of ``OPERATIONS`` and carries everything it
needs (weights, masks, files) as arrays; the answer carries what the
student's code produced (weights, gradients, files, a returned number) and
nothing else. The judge, outside the box, decides what that data is worth.

A request runs in a fresh process forked for it (see ``serve.py``), so
anything the student's code patches or leaves behind dies with it.
"""
import importlib
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np
import torch
import torch.nn as nn

from grader.homework import DEPLOY_PARTS, DEPLOY_STUDENT_FILES, MCU_PARTS, MCU_STUDENT_FILES, PARTS, STUDENT_FILES
from grader.worker.models import SGD, ConvAndFc, correct_prune, load_weights, small_alexnet

Arrays = Dict[str, np.ndarray]
Answer = Tuple[dict, Arrays]
STUDENT = Path(os.environ.get("GRADER_STUDENT_DIR", "/box/student"))
"""The assembled submission: the student's files and the provided ones."""
MAX_FILES_BYTES = 32 << 20
FILE_PREFIX = "file:"


class StudentError(Exception):
    """The student's code could not be imported or raised; ``str()`` is the message for the student."""


def describe_exception(error: BaseException) -> str:
    """``Type: message (net/prune.py, line 12, in _prune)``: the last line of the student's code in the traceback."""
    text = f"{type(error).__name__}: {error}".rstrip(": ")
    root = STUDENT.resolve()
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if Path(frame.filename).resolve().is_relative_to(root)]
    if frames:
        frame = frames[-1]
        text += f" ({Path(frame.filename).resolve().relative_to(root)}, line {frame.lineno}, in {frame.name})"
    return text


HOMEWORKS = ((DEPLOY_STUDENT_FILES, DEPLOY_PARTS), (MCU_STUDENT_FILES, MCU_PARTS), (STUDENT_FILES, PARTS))
"""``(student files, parts)`` of Part 2, the microcontroller track and Part 1."""


def missing_file(relative: str) -> str:
    """What a student reads when a test needs a file they did not hand in."""
    files, parts = next(((files, parts) for files, parts in HOMEWORKS if relative in files), HOMEWORKS[-1])
    todos = [todo.split(": ", 1)[1] for part in parts for todo in part.todos if todo.startswith(relative + ":")]
    holds = f" (it holds the TODOs {', '.join(todos)})" if todos else ""
    return (f"{relative} is missing from your submission{holds}: hand it in with the rest "
            f"({', '.join(files)}) to get these points")


def load(dotted: str):
    """Import the student's ``dotted`` module (``"net.prune"``, ``"pruning"``...) or raise ``StudentError``."""
    relative = dotted.replace(".", "/") + ".py"
    if not (STUDENT / relative).is_file():
        raise StudentError(missing_file(relative))
    try:
        return importlib.import_module(dotted)
    except SystemExit as stop:
        raise StudentError(f"importing {relative} called exit({stop.code!r}); "
                           "a module must not exit when it is imported") from None
    except BaseException as error:  # noqa: B902 - a student module can raise anything
        hint = ' (keep the script\'s work under `if __name__ == "__main__":`)' if relative == "pruning.py" else ""
        raise StudentError(f"importing {relative} failed: {describe_exception(error)}{hint}") from None


def call(function: Callable, *args, **kwargs):
    """``function(*args, **kwargs)``; anything it raises becomes a ``StudentError`` saying what and where."""
    try:
        return function(*args, **kwargs)
    except BaseException as error:  # noqa: B902 - SystemExit and KeyboardInterrupt are the student's too
        raise StudentError(f"your code raised {describe_exception(error)}") from None


def state(model: nn.Module, prefix: str = "") -> Arrays:
    """Every parameter of ``model`` as a numpy array, by name."""
    return {prefix + name: p.detach().cpu().numpy().copy() for name, p in model.named_parameters()}


def gradients(model: nn.Module) -> Arrays:
    """The gradients that exist, by parameter name (a missing one was set to None)."""
    return {"grad:" + name: p.grad.detach().cpu().numpy().copy()
            for name, p in model.named_parameters() if p.grad is not None}


def picked(arrays: Arrays, prefix: str) -> Arrays:
    return {name[len(prefix):]: value for name, value in arrays.items() if name.startswith(prefix)}


def masks(arrays: Arrays) -> Dict[str, torch.Tensor]:
    return {name: torch.from_numpy(value.astype(bool)) for name, value in picked(arrays, "mask:").items()}


def plain(value):
    """A value the answer's JSON header can hold: a number stays a number, anything else becomes its repr."""
    if isinstance(value, (bool, int, float)) or value is None:
        return value if not isinstance(value, float) or np.isfinite(value) else repr(value)
    if isinstance(value, (np.integer, np.floating)):
        return plain(value.item())
    return {"repr": repr(value)[:200], "type": type(value).__name__}


def read_files(folder: Path) -> Arrays:
    """The regular files at the top of ``folder``, as ``file:<name>`` uint8 arrays."""
    files, total = {}, 0
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
            if total > MAX_FILES_BYTES:
                raise StudentError(f"your code wrote more than {MAX_FILES_BYTES >> 20} MB of files")
            files[FILE_PREFIX + path.name] = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    return files


def write_files(arrays: Arrays, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in picked(arrays, FILE_PREFIX).items():
        (folder / Path(name).name).write_bytes(data.astype(np.uint8).tobytes())
    return folder


def as_array(value, what: str) -> np.ndarray:
    try:
        array = np.asarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
    except Exception:  # noqa: BLE001
        array = None
    if array is None or array.dtype.kind not in "biuf":
        raise StudentError(f"{what} returned {plain(value)!r}, not an array of numbers")
    return array


# --------------------------------------------------------------------------- the operations

PRUNE_METHODS = ("_prune", "prune_by_std", "prune_by_percentile")


def prune(request: dict, arrays: Arrays) -> Answer:
    """Load the weights into a small model on the student's ``PruningModule`` and call one pruning method."""
    module = load("net.prune")
    model = small_alexnet(module.PruningModule)
    load_weights(model, arrays)
    if request.get("correct_prune"):
        model._prune = correct_prune
    method, args = request["method"], list(request.get("args", []))
    if method not in PRUNE_METHODS:
        raise ValueError(f"unknown pruning method {method!r}")
    if method == "_prune":
        args[0] = getattr(model, args[0])
    call(getattr(model, method), *args)
    return {}, state(model)


def constant(request: dict, arrays: Arrays) -> Answer:
    """The value of a module-level name of a student module (e.g. ``DEFAULT_PRUNE_RATE``)."""
    module = load(request["module"])
    if not hasattr(module, request["name"]):
        raise StudentError(f"{request['module'].replace('.', '/')}.py has no {request['name']}")
    return {"value": plain(getattr(module, request["name"]))}, {}


def trainable_model(arrays: Arrays) -> nn.Module:
    model = small_alexnet(trainable=True)
    load_weights(model, arrays)
    for name, p in model.named_parameters():
        grad = arrays.get("grad:" + name)
        p.grad = None if grad is None else torch.from_numpy(np.array(grad))
    return model


def zero_pruned_gradients(request: dict, arrays: Arrays) -> Answer:
    model = trainable_model(arrays)
    call(load("pruning").zero_pruned_gradients, model, masks(arrays))
    return {}, {**state(model), **gradients(model)}


def zero_pruned_weights(request: dict, arrays: Arrays) -> Answer:
    model = trainable_model(arrays)
    call(load("pruning").zero_pruned_weights, model, masks(arrays))
    return {}, state(model)


def train(request: dict, arrays: Arrays) -> Answer:
    """The student's ``train`` on the given images, with the suites' SGD (its momentum handed over)."""
    retrain, util = load("pruning"), load("util")
    model = trainable_model(arrays)
    buffers = {int(i): torch.from_numpy(np.array(b)) for i, b in picked(arrays, "momentum:").items()}
    optimizer = SGD(model.parameters(), buffers=buffers, **request["optimizer"])
    data = util.ImageSet(torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"]))
    call(retrain.train, model, data, optimizer, request["epochs"], torch.device("cpu"),
         batch_size=request["batch_size"], generator=torch.Generator().manual_seed(0), progress=False)
    return {}, {**state(model), **gradients(model)}


def share_weights(request: dict, arrays: Arrays) -> Answer:
    model = ConvAndFc()
    load_weights(model, arrays)
    call(load("net.quantization").apply_weight_sharing, model, request["bits"])
    return {}, state(model)


def encode_conv(request: dict, arrays: Arrays) -> Answer:
    folder = Path("out")
    folder.mkdir()
    returned = call(load("net.huffmancoding").huffman_encode_conv, arrays["param"], request["name"], folder)
    return {"returned": plain(returned)}, read_files(folder)


def decode_conv(request: dict, arrays: Arrays) -> Answer:
    folder = write_files(arrays, Path("in"))
    param = np.zeros(request["shape"], dtype=request["dtype"])
    decoded = call(load("net.huffmancoding").huffman_decode_conv, param, request["name"], folder)
    return {}, {"decoded": as_array(decoded, "huffman_decode_conv")}


def encode_model(request: dict, arrays: Arrays) -> Answer:
    model = small_alexnet()
    load_weights(model, arrays)
    folder = Path("out")
    folder.mkdir()
    report = call(load("net.huffmancoding").huffman_encode_model, model, folder)
    compressed = call(lambda: report.compressed_bytes)
    return {"compressed_bytes": plain(compressed)}, read_files(folder)


def decode_model(request: dict, arrays: Arrays) -> Answer:
    folder = write_files(arrays, Path("in"))
    model = small_alexnet()
    load_weights(model, picked(arrays, "weight:"))
    decoded = call(load("net.huffmancoding").huffman_decode_model, model, folder)
    if not isinstance(decoded, nn.Module):
        raise StudentError(f"huffman_decode_model returned {plain(decoded)!r}, not the model")
    return {}, state(decoded)


OPERATIONS = {function.__name__: function for function in (
    prune, constant, zero_pruned_gradients, zero_pruned_weights, train, share_weights,
    encode_conv, decode_conv, encode_model, decode_model)}
"""Part 1's operations; Part 2's (``deploy_ops.py``) and the microcontroller track's (``mcu_ops.py``) are added
below."""


def _add_track_operations() -> None:
    from grader.worker import deploy_ops, mcu_ops
    OPERATIONS.update(deploy_ops.OPERATIONS)
    OPERATIONS.update(mcu_ops.OPERATIONS)


_add_track_operations()


def answer(request: dict, arrays: Arrays) -> Answer:
    """Run one request; a failure of the student's code is an answer too (``{"error": message}``)."""
    try:
        operation = OPERATIONS[request.get("op")]
    except (KeyError, TypeError):
        return {"error": f"unknown request {request.get('op')!r}"}, {}
    try:
        return operation(request, arrays)
    except StudentError as error:
        return {"error": str(error)}, {}
    except Exception as error:  # noqa: BLE001 - our own code failing on what the student's code left behind
        return {"error": f"your code left something the grader could not use: {describe_exception(error)}"}, {}


def student_path() -> None:
    """Put the submission first on ``sys.path``, so ``import net.prune`` finds the student's file."""
    if str(STUDENT) not in sys.path:
        sys.path.insert(0, str(STUDENT))
