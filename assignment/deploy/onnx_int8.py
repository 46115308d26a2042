"""ONNX and ONNX Runtime: one self-contained file that any runtime can run, quantised to INT8.

``torch.onnx.export`` traces the model (with ``torch.export``, the graph
capture that replaces TorchScript) and writes its graph and weights as one
``.onnx`` file. ONNX Runtime runs it without PyTorch, and its
``quantize_static`` rewrites it for INT8: after a calibration pass over a few
batches (read through a ``CalibrationDataReader``) it inserts
``QuantizeLinear``/``DequantizeLinear`` pairs around every conv and matmul
(the *QDQ* format), with one scale per output channel for the weights.
ONNX Runtime fuses each pair with its operator into an INT8 kernel.

A quantised model is only useful if it still predicts what the float one
did: ``agreement`` measures how often the two agree on the top class and
the largest difference between their logits.
"""
from pathlib import Path
from typing import Dict, Iterable, Optional

import numpy as np
import torch
import torch.nn as nn

INPUT, OUTPUT = "images", "logits"
"""The names of the exported graph's input and output."""


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Write ``model`` (in eval mode) to ``path`` as ONE ONNX file whose batch size is free; return ``path``."""
    path = Path(path)
    # TODO: call torch.onnx.export(model.eval(), (example,), path, dynamo=True,
    #       external_data=False (every weight inside the one file),
    #       input_names=[INPUT], output_names=[OUTPUT],
    #       dynamic_shapes=({0: torch.export.Dim("batch")},) (any batch size)),
    #       then return path.
    raise NotImplementedError("TODO deploy/onnx_int8.py: export_onnx")


def session(path: Path, threads: int = 1):
    """An ONNX Runtime session for the model at ``path`` on the CPU, with ``threads`` threads."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, images: torch.Tensor) -> torch.Tensor:
    """The logits the ONNX model at ``path`` computes for ``images``, as a float32 tensor."""
    running = session(path)
    name = running.get_inputs()[0].name
    return torch.from_numpy(running.run(None, {name: images.detach().cpu().numpy().astype(np.float32)})[0])


class BatchReader:
    """Hands ``quantize_static`` one batch at a time: ``{input name: float32 array}``, then ``None``.

    This is the interface of ONNX Runtime's ``CalibrationDataReader`` (it only
    calls ``get_next``), written without deriving from it so that this module
    imports where onnxruntime is not installed.
    """

    def __init__(self, batches: Iterable[torch.Tensor], input_name: str = INPUT) -> None:
        self.input_name = input_name
        self.batches = [b.detach().cpu().numpy().astype(np.float32) for b in batches]
        self.position = 0

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        # TODO: return {self.input_name: the next batch of self.batches} and move
        #       self.position on by one; once every batch was handed out, return None.
        raise NotImplementedError("TODO deploy/onnx_int8.py: BatchReader.get_next")

    def rewind(self) -> None:
        self.position = 0


def quantize_onnx(float_path: Path, int8_path: Path, batches: Iterable[torch.Tensor]) -> Path:
    """Write the INT8 (QDQ, per-channel weights) version of the ONNX model at ``float_path``; return its path."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    reader = BatchReader(batches, session(float_path).get_inputs()[0].name)
    # TODO: call quantize_static(str(float_path), str(int8_path), reader,
    #       quant_format=QuantFormat.QDQ, per_channel=True,
    #       weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8),
    #       then return Path(int8_path).
    raise NotImplementedError("TODO deploy/onnx_int8.py: quantize_onnx")


def agreement(reference: torch.Tensor, logits: torch.Tensor) -> Dict[str, float]:
    """How closely ``logits`` follow ``reference`` (both ``(batch, classes)``).

    ``top1_agreement``: the fraction of images whose top class is the same
    (0 to 1); ``max_abs_diff``: the largest absolute difference of any logit.
    """
    if reference.shape != logits.shape:
        raise ValueError(f"cannot compare logits of shapes {tuple(reference.shape)} and {tuple(logits.shape)}")
    # TODO: return {"top1_agreement": mean of (reference.argmax(1) == logits.argmax(1)) as a float,
    #               "max_abs_diff": the largest |reference - logits| as a float}.
    raise NotImplementedError("TODO deploy/onnx_int8.py: agreement")
