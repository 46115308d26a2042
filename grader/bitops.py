"""The deployable-model leaderboard's cost: bit-operations of one image, read from the graph alone.

For every node that multiplies, ``MACs x bits of one operand x bits of the
other``, summed over the graph at batch 1 (shapes from
``onnx.shape_inference``, see ``grader/onnxload.py``). Nothing is run, so the
cost of a file is the same on every machine.

* **MACs.** ``Conv``, ``ConvInteger``, ``QLinearConv``: output elements x
  (input channels / group) x kernel size. ``Gemm``: M x N x K.
  ``MatMul``, ``MatMulInteger``, ``QLinearMatMul``: output elements x K.
  Element-wise products (``Mul``, ``Div``, ``PRelu``,
  ``BatchNormalization``) count one MAC per output element, so a dense
  layer cannot hide in a broadcast ``Mul`` followed by a pooling.
* **Bits** of an operand: those of its element type (float32 32, float16
  16, int8 8, int4 4...). Where the operand comes out of a
  ``DequantizeLinear`` (the QDQ format ONNX Runtime fuses into integer
  kernels), looking through reshaping operators in between, it counts the
  bits of what was dequantised: an int8 weight or an activation quantised
  to uint8 counts 8, though the graph carries it as float32.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import onnx
from onnx import TensorProto

ELEMENT_BITS = {TensorProto.FLOAT: 32, TensorProto.DOUBLE: 64, TensorProto.FLOAT16: 16, TensorProto.BFLOAT16: 16,
                TensorProto.INT8: 8, TensorProto.UINT8: 8, TensorProto.INT16: 16, TensorProto.UINT16: 16,
                TensorProto.INT32: 32, TensorProto.UINT32: 32, TensorProto.INT64: 64, TensorProto.UINT64: 64,
                TensorProto.BOOL: 1}
for _name, _bits in (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("FLOAT8E4M3FN", 8), ("FLOAT8E4M3FNUZ", 8),
                     ("FLOAT8E5M2", 8), ("FLOAT8E5M2FNUZ", 8)):
    if hasattr(TensorProto, _name):
        ELEMENT_BITS[getattr(TensorProto, _name)] = _bits

VIEW_OPS = ("Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze")
"""Operators that move values without changing them: the bits of a dequantised tensor survive them."""
CONVS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
MATMULS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
ELEMENTWISE = {"Mul": (0, 1), "Div": (0, 1), "PRelu": (0, 1), "BatchNormalization": (0, 1)}
"""Each counted operator and the input positions of its two operands (activation, weight)."""


@dataclass(frozen=True)
class NodeCost:
    """One multiplying node's share of the cost."""
    node: str
    op_type: str
    macs: int
    activation_bits: int
    weight_bits: int

    @property
    def bit_ops(self) -> int:
        return self.macs * self.activation_bits * self.weight_bits


class Graph:
    """Types, shapes and producers of an inferred batch-1 model's values."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.types: Dict[str, int] = {}
        self.shapes: Dict[str, Tuple[int, ...]] = {}
        for value in [*graph.input, *graph.value_info, *graph.output]:
            tensor = value.type.tensor_type
            self.types[value.name] = tensor.elem_type
            self.shapes[value.name] = tuple(d.dim_value for d in tensor.shape.dim)
        for tensor in graph.initializer:
            self.types[tensor.name], self.shapes[tensor.name] = tensor.data_type, tuple(tensor.dims)
        self.producers = {output: node for node in graph.node for output in node.output}

    def shape(self, name: str) -> Tuple[int, ...]:
        if name not in self.shapes:
            raise ValueError(f"the shape of {name} is unknown")
        return self.shapes[name]

    def bits(self, name: str) -> int:
        """The bits of value ``name``, looking through views back to a DequantizeLinear (see the module)."""
        source = name
        while source in self.producers and self.producers[source].op_type in VIEW_OPS:
            source = self.producers[source].input[0]
        producer = self.producers.get(source)
        if producer is not None and producer.op_type == "DequantizeLinear":
            source = producer.input[0]
        else:
            source = name
        element = self.types.get(source)
        if element not in ELEMENT_BITS:
            raise ValueError(f"the element type of {source} ({element}) has no bit width")
        return ELEMENT_BITS[element]


def _macs(graph: Graph, node: onnx.NodeProto) -> Optional[Tuple[int, int, int]]:
    """(MACs, activation input, weight input) of a counted node, else None."""
    out = graph.shape(node.output[0])
    if node.op_type in CONVS:
        x, w = CONVS[node.op_type]
        return math.prod(out) * math.prod(graph.shape(node.input[w])[1:]), x, w
    if node.op_type in MATMULS:
        x, w = MATMULS[node.op_type]
        a = graph.shape(node.input[x])
        return math.prod(out) * a[-1], x, w
    if node.op_type == "Gemm":
        a = graph.shape(node.input[0])
        trans_a = next((attribute.i for attribute in node.attribute if attribute.name == "transA"), 0)
        return math.prod(out) * a[0 if trans_a else 1], 0, 1
    if node.op_type in ELEMENTWISE:
        x, w = ELEMENTWISE[node.op_type]
        return math.prod(out), x, w
    return None


def node_costs(model: onnx.ModelProto) -> List[NodeCost]:
    """The cost of every multiplying node of ``model`` (batch 1, shapes inferred), in graph order."""
    graph, costs = Graph(model), []
    for index, node in enumerate(model.graph.node):
        counted = _macs(graph, node)
        if counted is not None:
            macs, x, w = counted
            costs.append(NodeCost(node.name or f"{node.op_type}_{index}", node.op_type, macs,
                                  graph.bits(node.input[x]), graph.bits(node.input[w])))
    return costs


def bit_ops(model: onnx.ModelProto) -> int:
    """The total: sum over the multiplying nodes of MACs x activation bits x weight bits."""
    return sum(cost.bit_ops for cost in node_costs(model))


def table(costs: List[NodeCost]) -> str:
    """A plain-text table of the node costs and their total."""
    lines = [f"{'node':<28} {'op':<20} {'MACs':>14} {'act bits':>8} {'w bits':>6} {'bit-ops':>18}"]
    for cost in costs:
        lines.append(f"{cost.node[:28]:<28} {cost.op_type:<20} {cost.macs:>14,} {cost.activation_bits:>8} "
                     f"{cost.weight_bits:>6} {cost.bit_ops:>18,}")
    lines.append(f"{'total':<28} {'':<20} {sum(c.macs for c in costs):>14,} {'':>8} {'':>6} "
                 f"{sum(c.bit_ops for c in costs):>18,}")
    return "\n".join(lines)
