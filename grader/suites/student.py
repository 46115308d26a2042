"""The student's code as the suites see it: requests to the box, answers that are data and nothing else.

The suites never import student code. A test asks for something ("prune
these weights with your ``prune_by_std(0.5)``") through :class:`Student`;
the worker in the box (``grader/worker/ops.py``) runs it and sends back
arrays and numbers, which arrive here as torch tensors and plain values.
Whatever the student's code patches inside its box changes only that data,
and the test judges the data against what it computed itself.

A failure of the student's code (an import error, an exception, a crash,
a hang) raises :class:`StudentCodeError` with the message for the student.
"""
import time
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from grader.box import Box, BoxFailure
from grader.homework import PRINTED_CHARACTERS
from grader.worker.protocol import Arrays

Tensors = Dict[str, torch.Tensor]
SAFE_NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class StudentCodeError(AssertionError):
    """The student's code could not be used; the message says why, in the student's terms."""


def arrays_of(model: nn.Module, prefix: str = "") -> Arrays:
    """Every parameter of ``model`` as a numpy array, by name."""
    return {prefix + name: p.detach().numpy().copy() for name, p in model.named_parameters()}


def tensors(arrays: Arrays, prefix: str = "") -> Tensors:
    return {name[len(prefix):]: torch.from_numpy(np.array(value)) for name, value in arrays.items()
            if name.startswith(prefix) and ":" not in name[len(prefix):]}


class Student:
    """The judge's handle on one submission's code, running in ``box``."""

    def __init__(self, box: Box, timeout: float) -> None:
        self.box, self.timeout = box, timeout
        self.begin_test()

    def begin_test(self) -> None:
        """A new test: its own time limit and its own record of what the student's code printed."""
        self.deadline, self.kept, self.dropped = time.monotonic() + self.timeout, "", 0

    @property
    def printed(self) -> str:
        """The first ``PRINTED_CHARACTERS`` characters the student's code printed during this test."""
        return self.kept + (f"\n... ({self.dropped} more characters)" if self.dropped else "")

    def _record_printed(self, answer: dict) -> None:
        text, more = str(answer.get("printed", "")), answer.get("printed_more", 0)
        room = max(PRINTED_CHARACTERS - len(self.kept), 0)
        self.kept += text[:room]
        self.dropped += max(len(text) - room, 0) + (more if isinstance(more, int) and more > 0 else 0)

    def ask(self, request: dict, arrays: Optional[Arrays] = None, context: str = "") -> Tuple[dict, Arrays]:
        """Send one request; return the answer, or raise ``StudentCodeError`` saying what went wrong."""
        try:
            answer, data = self.box.request(request, arrays or {}, self.deadline)
        except BoxFailure as failure:
            if str(failure) == "timeout":
                raise StudentCodeError(f"stopped after {self.timeout:g} seconds; these checks take well under a "
                                       "second, so your code is probably stuck in a loop") from None
            raise StudentCodeError(f"{failure}") from None
        self._record_printed(answer)
        if answer.get("ended"):
            raise StudentCodeError(f"the process running your code {str(answer['ended'])[:300]} during this test")
        if "error" in answer:
            message = str(answer["error"])[:2000]
            if context and message.startswith("your code raised"):
                message = f"{context}: {message}"
            raise StudentCodeError(message)
        return answer, data

    # ------------------------------------------------------------------ net/prune.py

    def prune(self, weights: Mapping[str, torch.Tensor], method: str, *args, correct_prune: bool = False) -> Tensors:
        """The weights after ``model.<method>(*args)`` on a small model of the student's ``PruningModule``.

        For ``_prune`` the first argument is a layer name. With
        ``correct_prune`` the model's ``_prune`` is replaced by a correct one.
        """
        request = {"op": "prune", "method": method, "args": list(args), "correct_prune": correct_prune}
        _, data = self.ask(request, {name: w.numpy() for name, w in weights.items()})
        return self._parameters(data, weights)

    def constant(self, module: str, name: str):
        """The value of ``module.name`` (a number, or ``{"repr", "type"}`` for anything else)."""
        answer, _ = self.ask({"op": "constant", "module": module, "name": name})
        return answer.get("value")

    # ------------------------------------------------------------------ pruning.py

    def zero_pruned_gradients(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> Tuple[Tensors, Tensors]:
        """``(weights, gradients)`` after the student's ``zero_pruned_gradients(model, masks)``."""
        _, data = self.ask({"op": "zero_pruned_gradients"}, self._model_arrays(model, masks))
        return self._parameters(data, dict(model.named_parameters())), tensors(data, "grad:")

    def zero_pruned_weights(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> Tensors:
        _, data = self.ask({"op": "zero_pruned_weights"}, self._model_arrays(model, masks))
        return self._parameters(data, dict(model.named_parameters()))

    def train(self, model: nn.Module, optimizer, images: np.ndarray, labels: np.ndarray, epochs: int,
              batch_size: int) -> Tuple[Tensors, Tensors]:
        """``(weights, gradients)`` after the student's ``train`` with the suites' SGD ``optimizer``."""
        arrays = self._model_arrays(model, {})
        arrays.update({f"momentum:{i}": b.numpy() for i, b in optimizer.buffers.items()})
        arrays.update(images=images, labels=labels)
        request = {"op": "train", "epochs": epochs, "batch_size": batch_size,
                   "optimizer": {"lr": optimizer.lr, "momentum": optimizer.momentum,
                                 "weight_decay": optimizer.weight_decay}}
        _, data = self.ask(request, arrays)
        return self._parameters(data, dict(model.named_parameters())), tensors(data, "grad:")

    # ------------------------------------------------------------------ net/quantization.py

    def share_weights(self, model: nn.Module, bits: int) -> Tensors:
        """The weights after the student's ``apply_weight_sharing(model, bits)``."""
        _, data = self.ask({"op": "share_weights", "bits": bits}, arrays_of(model))
        return self._parameters(data, dict(model.named_parameters()))

    # ------------------------------------------------------------------ net/huffmancoding.py

    def encode_conv(self, param: np.ndarray, name: str, context: str) -> Tuple[object, Dict[str, bytes]]:
        """``(what huffman_encode_conv returned, {file name: bytes} it wrote)``."""
        answer, data = self.ask({"op": "encode_conv", "name": name}, {"param": param}, context)
        return answer.get("returned"), files_of(data)

    def decode_conv(self, shape, name: str, files: Mapping[str, bytes], context: str) -> np.ndarray:
        request = {"op": "decode_conv", "name": name, "shape": list(shape), "dtype": "float32"}
        _, data = self.ask(request, file_arrays(files), context)
        return data.get("decoded", np.zeros(0, dtype=np.float32))

    def encode_model(self, model: nn.Module, context: str) -> Tuple[object, Dict[str, bytes]]:
        """``(report.compressed_bytes, files)`` of the student's ``huffman_encode_model``."""
        answer, data = self.ask({"op": "encode_model"}, arrays_of(model), context)
        return answer.get("compressed_bytes"), files_of(data)

    def decode_model(self, model: nn.Module, files: Mapping[str, bytes], context: str) -> Tensors:
        """The parameters of the model the student's ``huffman_decode_model(model, folder)`` returned."""
        _, data = self.ask({"op": "decode_model"}, {**arrays_of(model, "weight:"), **file_arrays(files)}, context)
        return tensors(data)

    # ------------------------------------------------------------------ Part 2: deploy/

    def deploy(self, op: str, arrays: Optional[Arrays] = None, context: str = "", **fields) -> Tuple[dict, Arrays]:
        """``(answer, arrays)`` of the Part 2 operation ``deploy_<op>`` of ``grader/worker/deploy_ops.py``
        (each calls one function of the student's ``deploy/`` and answers with what it computed)."""
        return self.ask({"op": f"deploy_{op}", **fields}, arrays or {}, context)

    # ------------------------------------------------------------------ the microcontroller track: mcu/

    def mcu(self, op: str, arrays: Optional[Arrays] = None, context: str = "", **fields) -> Tuple[dict, Arrays]:
        """``(answer, arrays)`` of the operation ``mcu_<op>`` of ``grader/worker/mcu_ops.py`` (each calls one
        function of the student's ``mcu/`` and answers with what it computed)."""
        return self.ask({"op": f"mcu_{op}", **fields}, arrays or {}, context)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _model_arrays(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> Arrays:
        arrays = arrays_of(model)
        arrays.update({f"grad:{n}": p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None})
        arrays.update({f"mask:{n}": m.numpy() for n, m in masks.items()})
        return arrays

    @staticmethod
    def _parameters(data: Arrays, expected: Mapping[str, torch.Tensor]) -> Tensors:
        """The returned parameters by name; an answer that lacks one of ``expected`` fails the test."""
        got = tensors(data)
        missing = [name for name in expected if name not in got]
        if missing:
            raise StudentCodeError(f"the answer from your code's box lacks {', '.join(missing[:4])}: "
                                   "it was not produced by the grader's worker")
        return {name: got[name] for name in expected}


def shown(value) -> str:
    """How a value the student's code returned reads in a message (the worker sends a repr for non-numbers)."""
    return str(value.get("repr")) if isinstance(value, dict) else repr(value)


def files_of(data: Arrays) -> Dict[str, bytes]:
    """The files an answer carries, by name; names that could mean a path are dropped."""
    files = {}
    for key, value in data.items():
        name = key[len("file:"):]
        if key.startswith("file:") and 0 < len(name) <= 100 and set(name) <= SAFE_NAME_CHARACTERS \
                and not name.startswith("."):
            files[name] = value.astype(np.uint8).tobytes()
    return files


def file_arrays(files: Mapping[str, bytes]) -> Arrays:
    return {f"file:{name}": np.frombuffer(data, dtype=np.uint8) for name, data in files.items()}


def write_files(files: Mapping[str, bytes], folder: Path) -> Path:
    """Write ``files`` (names checked by ``files_of``) into ``folder``, for the reference decoder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder
