"""Tiny ONNX models built with ``onnx.helper`` for the deployable-model leaderboard's tests.

``colour_classifier`` reads the mean colour of the image and picks the
nearest class colour of ``tests/tinycifar.py`` (each class has its own mean
grey level there), so it scores far above the gate on the tiny test set
without any training. ``conv_net`` is a small conv + linear model whose
bit-operations are easy to count by hand, in float or in the QDQ format.
"""
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], np.float32)
CLASS_GREYS = np.linspace(20, 235, 10) / 255.0


def image_input(batch="batch") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 32, 32])


def logits_output(batch="batch", classes: int = 10) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])


def make(nodes, initializers, inputs=None, outputs=None, opset: int = OPSET, **kwargs) -> onnx.ModelProto:
    """A model of ``nodes`` with the default image input and logits output unless others are given."""
    graph = helper.make_graph(nodes, "tiny", inputs or [image_input()], outputs or [logits_output()],
                              initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kwargs)


def colour_classifier(shuffle: int = 0) -> onnx.ModelProto:
    """Mean colour -> nearest class grey, as a linear layer: logit_k = sum_c 2 n_kc m_c - n_kc^2.

    ``shuffle`` rolls the class order (1: every prediction wrong, an accuracy near 0)."""
    normalised = (CLASS_GREYS[:, None] - MEAN[None, :]) / STD[None, :]       # (10, 3)
    weight = np.roll(2 * normalised, shuffle, axis=0).astype(np.float32)
    bias = np.roll(-(normalised ** 2).sum(axis=1), shuffle).astype(np.float32)
    nodes = [helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1)]
    return make(nodes, [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")])


def conv_net(qdq: bool = False, channels: int = 4, seed: int = 0) -> onnx.ModelProto:
    """images -> Conv 3x3 (``channels``, pad 1) -> Relu -> GlobalAveragePool -> Flatten -> Gemm (10).

    MACs: the conv ``channels * 32 * 32 * 27``, the Gemm ``10 * channels``. With ``qdq`` the conv's input is
    quantised to uint8 and its weight stored as int8 behind a DequantizeLinear (the QDQ format); the Gemm stays
    float."""
    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 0.2, (channels, 3, 3, 3)).astype(np.float32)
    fc_w = rng.normal(0, 0.2, (10, channels)).astype(np.float32)
    inits = [numpy_helper.from_array(fc_w, "fc_w")]
    nodes = []
    if qdq:
        scale = np.float32(np.abs(conv_w).max() / 127)
        inits += [numpy_helper.from_array(np.round(conv_w / scale).astype(np.int8), "conv_w_q"),
                  numpy_helper.from_array(np.array(scale, np.float32), "w_scale"),
                  numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
                  numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
                  numpy_helper.from_array(np.array(128, np.uint8), "x_zero")]
        nodes += [helper.make_node("QuantizeLinear", ["images", "x_scale", "x_zero"], ["x_q"]),
                  helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
                  helper.make_node("DequantizeLinear", ["conv_w_q", "w_scale", "w_zero"], ["conv_w"]),
                  helper.make_node("Conv", ["x_dq", "conv_w"], ["conv"], pads=[1, 1, 1, 1])]
    else:
        inits.append(numpy_helper.from_array(conv_w, "conv_w"))
        nodes.append(helper.make_node("Conv", ["images", "conv_w"], ["conv"], pads=[1, 1, 1, 1]))
    nodes += [helper.make_node("Relu", ["conv"], ["relu"]),
              helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], transB=1)]
    return make(nodes, inits)


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model`` to ``path`` as one file (no check: hostile models are saved the same way)."""
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path


def with_nodes(model: onnx.ModelProto, nodes: Sequence[onnx.NodeProto],
               initializers: Optional[Sequence[onnx.TensorProto]] = None) -> onnx.ModelProto:
    """A copy of ``model`` whose graph has ``nodes`` (and ``initializers``, when given) instead."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    if initializers is not None:
        del copy.graph.initializer[:]
        copy.graph.initializer.extend(initializers)
    return copy
