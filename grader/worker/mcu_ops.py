"""The worker's operations for the microcontroller track (``mcu/``): data in, data out, as in ``ops.py``.

Each operation calls one function of the student's ``mcu/`` files on the
judge's arrays and answers with what it computed: tensors, numbers, the
channels a pruned network kept, or the C header the provided export wrote
with the student's bit packing. The header goes back as bytes of a file;
the judge reads it as data (``mcu/export.py: parse_header``) and compiles
only what it writes again itself. Nothing here decides a score.
"""
from typing import Dict

import numpy as np
import torch

from grader.homework import MCU_BOARDS
from grader.worker.ops import Answer, Arrays, StudentError, as_array, call, load, picked, plain

BUDGET_FUNCTIONS = ("flash_bytes", "sram_bytes", "latency_s")
HEADER = "mcu_model.h"


def _tensor(arrays: Arrays, name: str) -> torch.Tensor:
    return torch.from_numpy(np.array(arrays[name]))


def _board(request: dict):
    if request.get("board") not in MCU_BOARDS:
        raise ValueError(f"unknown board {request.get('board')!r}")
    return MCU_BOARDS[request["board"]]


def _model(request: dict, arrays: Arrays):
    """The provided ``TinyNet`` of ``request["channels"]`` holding the judge's ``state:`` arrays, in eval mode.

    ``TinyNet`` computes with the student's ``mcu/binary.py`` and ``mcu/budget.py``: those are loaded first,
    so that a missing one is named as such.
    """
    load("mcu.binary")
    load("mcu.budget")
    model = load("mcu.model").TinyNet([int(c) for c in request["channels"]])
    state: Dict[str, torch.Tensor] = {name: torch.from_numpy(np.array(value))
                                      for name, value in picked(arrays, "state:").items()}
    model.load_state_dict(state)
    return model.eval()


# --------------------------------------------------------------------------- mcu/binary.py

def binarize(request: dict, arrays: Arrays) -> Answer:
    """``binarize(weight)`` and the gradient reaching ``weight`` from the judge's upstream gradient."""
    weight = _tensor(arrays, "weight").requires_grad_(True)
    out = call(load("mcu.binary").binarize, weight)
    if not isinstance(out, torch.Tensor) or out.shape != weight.shape:
        raise StudentError(f"binarize returned {plain(out)!r}, not a tensor of the weight's shape")
    call(out.backward, _tensor(arrays, "grad"))
    grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
    return {}, {"out": as_array(out, "binarize"), "grad": grad.numpy()}


def ste(request: dict, arrays: Arrays) -> Answer:
    """The gradient ``SignSTE.backward`` passes to ``weight`` for the judge's upstream gradient."""
    weight = _tensor(arrays, "weight").requires_grad_(True)
    out = call(load("mcu.binary").SignSTE.apply, weight)
    call(out.backward, _tensor(arrays, "grad"))
    grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
    return {}, {"grad": as_array(grad, "SignSTE.backward")}


def pack(request: dict, arrays: Arrays) -> Answer:
    return {}, {"packed": as_array(call(load("mcu.binary").pack_signs, _tensor(arrays, "signs")), "pack_signs")}


# --------------------------------------------------------------------------- mcu/budget.py

def budget(request: dict, arrays: Arrays) -> Answer:
    """One budget function (``request["function"]``) of the judge's layer shapes, on one board."""
    module = load("mcu.budget")
    if request["function"] not in BUDGET_FUNCTIONS:
        raise ValueError(f"unknown budget function {request['function']!r}")
    layers = [call(module.LayerShape, **dict(layer, in_shape=tuple(layer["in_shape"]),
                                             out_shape=tuple(layer["out_shape"]))) for layer in request["layers"]]
    function = getattr(module, request["function"])
    args = (layers, _board(request)) if request["function"] == "latency_s" else (layers,)
    return {"value": plain(call(function, *args))}, {}


# --------------------------------------------------------------------------- mcu/prune.py

def fit(request: dict, arrays: Arrays) -> Answer:
    """``fit_to_budget`` on the judge's network: what it removed, in order, and the channels left."""
    model = _model(request, arrays)
    removed = call(load("mcu.prune").fit_to_budget, model, _board(request))
    try:
        pairs = [[str(name), int(channel)] for name, channel in removed]
    except (TypeError, ValueError):
        raise StudentError(f"fit_to_budget returned {plain(removed)!r}, not a list of (layer name, channel)") from None
    return {"removed": pairs, "channels": [int(c) for c in model.channels]}, {}


# --------------------------------------------------------------------------- the export (mcu/export.py, provided)

def export(request: dict, arrays: Arrays) -> Answer:
    """The C header the provided export writes for the judge's network, with the judge's activation scales.

    The scales replace the calibration (which runs the student's ``binarize``) so that only the packing
    of the signs, the student's ``pack_signs``, decides the header's weights.
    """
    exporter = load("mcu.export")
    scales = [float(s) for s in np.array(arrays["scales"], dtype=np.float64)]
    exporter.calibrate = lambda model, images: scales
    model = _model(request, arrays)
    layers = call(exporter.integerize, model, torch.zeros(1, model.in_channels, model.resolution,
                                                          model.resolution, dtype=torch.uint8))
    text = call(exporter.header, layers)
    if not isinstance(text, str):
        raise StudentError(f"the export returned {plain(text)!r}, not the text of a header")
    data = text.encode("utf-8", "replace")
    return {}, {f"file:{HEADER}": np.frombuffer(data, dtype=np.uint8)}


OPERATIONS = {f"mcu_{function.__name__}": function for function in (binarize, ste, pack, budget, fit, export)}
