"""The microcontroller track's worker: runs a submission's ``mcu/`` functions on the judge's inputs, answers data.

``python -m grader.mcu_worker FOLDER REQUEST_DIR [FOLDER REQUEST_DIR ...]`` reads ``REQUEST_DIR/request.json``
(a list of ``{"op", ...}``) and ``request.npz``, imports the ``mcu`` package
from ``FOLDER`` (the student's files plus the provided ones), runs each
operation in turn and writes ``answer.json`` (one entry per operation:
numbers, or ``{"error": ...}``) and ``answer.npz`` (arrays named
``<index>:<name>``). Several pairs are answered one after the other in one
process, the ``mcu`` modules re-imported for each: that is for the staff's
own variants (tests), never for students, whose code could leave the process
changed for the next folder. It judges nothing: ``grader/mcu_suite.py`` compares the
answers with what it computed itself.
"""
import json
import sys
import traceback
from pathlib import Path

import numpy as np


def _describe(error: BaseException, folder: Path) -> str:
    text = f"{type(error).__name__}: {error}".rstrip(": ")[:500]
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve().is_relative_to(folder)]
    if frames:
        text += f" ({Path(frames[-1].filename).resolve().relative_to(folder)}, line {frames[-1].lineno})"
    return text


def _binarize(request, arrays, index):
    import torch
    from mcu.binary import binarize
    weight = torch.from_numpy(arrays[f"{index}:weight"]).requires_grad_(True)
    out = binarize(weight)
    out.backward(torch.from_numpy(arrays[f"{index}:grad"]))
    return {}, {"out": out.detach().numpy(), "grad": weight.grad.numpy()}


def _ste(request, arrays, index):
    import torch
    from mcu.binary import SignSTE
    weight = torch.from_numpy(arrays[f"{index}:weight"]).requires_grad_(True)
    SignSTE.apply(weight).backward(torch.from_numpy(arrays[f"{index}:grad"]))
    return {}, {"grad": weight.grad.numpy()}


def _pack(request, arrays, index):
    import torch
    from mcu.binary import pack_signs
    return {}, {"packed": np.asarray(pack_signs(torch.from_numpy(arrays[f"{index}:signs"])))}


def _budget(request, arrays, index):
    from mcu import budget
    from mcu.facts import BOARDS
    layers = [budget.LayerShape(**dict(layer, in_shape=tuple(layer["in_shape"]), out_shape=tuple(layer["out_shape"])))
              for layer in request["layers"]]
    return {"flash": budget.flash_bytes(layers), "sram": budget.sram_bytes(layers),
            "latency": budget.latency_s(layers, BOARDS[request["board"]])}, {}


def _fit(request, arrays, index):
    import torch
    from mcu.facts import BOARDS
    from mcu.model import TinyNet
    from mcu.prune import fit_to_budget
    torch.manual_seed(request["seed"])
    model = TinyNet(request["channels"])
    with torch.no_grad():
        for norm in model.norms:
            norm.weight.uniform_(0.2, 2.0)
    removed = fit_to_budget(model, BOARDS[request["board"]])
    return {"removed": [[str(name), int(channel)] for name, channel in removed], "channels": model.channels}, {}


OPERATIONS = {"binarize": _binarize, "ste": _ste, "pack": _pack, "budget": _budget, "fit": _fit}


def answer(folder: Path, requests: Path) -> None:
    """Import ``mcu`` from ``folder`` (afresh) and answer the requests in ``requests``."""
    folder = folder.resolve()
    for name in [name for name in sys.modules if name == "mcu" or name.startswith("mcu.")]:
        del sys.modules[name]
    sys.path.insert(0, str(folder))
    try:
        items = json.loads((requests / "request.json").read_text())
        with np.load(requests / "request.npz", allow_pickle=False) as data:
            arrays = dict(data)
        answers, out = [], {}
        for index, request in enumerate(items):
            try:
                numbers, produced = OPERATIONS[request["op"]](request, arrays, index)
                answers.append(numbers)
                out.update({f"{index}:{name}": np.asarray(value) for name, value in produced.items()})
            except BaseException as error:  # noqa: B902 - the student's code may raise anything, exit included
                answers.append({"error": f"your code raised {_describe(error, folder)}"})
        np.savez(requests / "answer.npz", **out)
        (requests / "answer.json").write_text(json.dumps(answers))
    finally:
        sys.path.remove(str(folder))


def main(arguments) -> int:
    import torch
    torch.set_num_threads(1)
    for folder, requests in zip(arguments[::2], arguments[1::2]):
        answer(Path(folder), Path(requests))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
