"""Check a student's ``.onnx`` file with the ``onnx`` library before ONNX Runtime ever sees it.

An ONNX file is a protobuf: parsing it runs nothing, but a *session* could
read other files (external data), call operators of other domains (custom
or contributed kernels), loop (control flow) or allocate whatever a shape
says. So :func:`check_model` refuses, with one sentence each, anything but a
plain feed-forward classifier made of the standard operators of
``homework.ONNX_OPS``:

* the file: a regular file of at most ``ONNX_MAX_BYTES``, not a zip or a
  pickle, a protobuf that parses into a model with a graph;
* the operators: the default ``ai.onnx`` domain only (no ``ai.onnx.ml``:
  trees and other classical models have no use on images; no custom or
  ``com.microsoft`` domain), an opset in ``ONNX_OPSETS``, every node's
  type in the allow-list, no sub-graph attribute, no local function;
* the tensors: every initializer and constant inline (no
  ``data_location: EXTERNAL``, no ``external_data`` entry, no sparse
  tensor), at most ``ONNX_MAX_ELEMENTS`` elements, the data present
  matching the declared shape;
* the graph: ``onnx.checker`` passes; one float input of shape
  ``(1 or free, 3, 32, 32)``; shape inference (strict, with batch 1) gives
  every value a static shape of at most ``ONNX_MAX_ELEMENTS`` elements and
  the one output the shape ``(1, 10)``.

What comes back is a :class:`CheckedModel`: the bytes to give ONNX Runtime
and the inferred batch-1 model that ``grader/bitops.py`` counts.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, TensorProto

from grader.homework import (ONNX_CLASSES, ONNX_INPUT, ONNX_MAX_BYTES, ONNX_MAX_ELEMENTS, ONNX_OPS, ONNX_OPSETS,
                             ONNX_SUFFIX)
from grader.safeload import SubmissionError

PathLike = Union[str, Path]
DEFAULT_DOMAINS = ("", "ai.onnx")
SUBGRAPH_ATTRIBUTES = (AttributeProto.GRAPH, AttributeProto.GRAPHS)
FOUR_BIT = tuple(getattr(TensorProto, name) for name in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, name))
TYPED_FIELDS = {"float_data", "int32_data", "int64_data", "double_data", "uint64_data"}


@dataclass(frozen=True)
class CheckedModel:
    """A model that passed every check."""

    data: bytes
    """The file's bytes, for ``onnxruntime.InferenceSession``."""
    inferred: onnx.ModelProto
    """The model at batch 1 with every value's type and shape inferred (for counting bit-operations)."""
    input_name: str
    free_batch: bool
    """Whether the batch dimension is free (the model can take many images at once)."""


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def parse(data: bytes) -> onnx.ModelProto:
    """The model in ``data``, or ``SubmissionError`` when it is not a serialised ONNX model."""
    if data[:4] == b"PK\x03\x04":
        raise SubmissionError("the file is a zip archive, not an ONNX model: submit the single file "
                              "torch.onnx.export(..., external_data=False) writes")
    if data[:1] == b"\x80":
        raise SubmissionError("the file is a Python pickle (torch.save?), not an ONNX model: export with "
                              "torch.onnx.export")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise SubmissionError(f"not an ONNX model: the protobuf cannot be parsed ({_first_line(error)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise SubmissionError("not an ONNX model: it holds no graph of operators")
    return model


def check_operators(model: onnx.ModelProto) -> None:
    """Default domain only, an opset in range, allowed node types, no functions or sub-graphs."""
    if model.functions:
        raise SubmissionError(f"the model defines {len(model.functions)} local function(s) "
                              f"({model.functions[0].domain}.{model.functions[0].name}); only standard operators "
                              "are allowed")
    low, high = ONNX_OPSETS
    for opset in model.opset_import:
        if opset.domain not in DEFAULT_DOMAINS:
            raise SubmissionError(f"the model imports the operator domain {opset.domain!r}; only the standard "
                                  "ai.onnx operators are allowed (no custom, ai.onnx.ml or contrib operators)")
        if not low <= opset.version <= high:
            nearest = min(max(opset.version, low), high)
            raise SubmissionError(f"the model uses opset {opset.version}; the leaderboard accepts opsets {low} to "
                                  f"{high} (torch.onnx.export(..., opset_version={nearest}))")
    if not any(opset.domain in DEFAULT_DOMAINS for opset in model.opset_import):
        raise SubmissionError("the model imports no opset of the standard ai.onnx domain")
    allowed = set(ONNX_OPS)
    for node in model.graph.node:
        name = node.name or node.op_type
        if node.domain not in DEFAULT_DOMAINS:
            raise SubmissionError(f"node {name} is {node.domain}.{node.op_type}, an operator outside the standard "
                                  "ai.onnx domain; it was not loaded")
        if node.op_type not in allowed:
            raise SubmissionError(f"node {name} is a {node.op_type}, which the leaderboard does not run "
                                  f"(allowed: homework.ONNX_OPS)")
        if any(attribute.type in SUBGRAPH_ATTRIBUTES for attribute in node.attribute):
            raise SubmissionError(f"node {name} carries a sub-graph; control flow is not allowed")


def _tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every tensor stored in the graph: initializers and the tensors of node attributes (Constant values)."""
    yield from model.graph.initializer
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.TENSOR:
                yield attribute.t
            elif attribute.type == AttributeProto.TENSORS:
                yield from attribute.tensors
            elif attribute.type in (AttributeProto.SPARSE_TENSOR, AttributeProto.SPARSE_TENSORS):
                raise SubmissionError(f"node {node.name or node.op_type} holds a sparse tensor; store it dense")


def _present(tensor: TensorProto) -> int:
    """How many stored items the tensor carries (bytes of raw_data, or entries of its typed field)."""
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return sum(len(getattr(tensor, field)) for field in TYPED_FIELDS)


def check_tensor(tensor: TensorProto) -> None:
    """Inline, bounded, and holding exactly the data its shape declares."""
    name = tensor.name or "a constant"
    if tensor.data_location == TensorProto.EXTERNAL or tensor.external_data:
        where = next((entry.value for entry in tensor.external_data if entry.key == "location"), "?")
        raise SubmissionError(f"tensor {name} is stored outside the file (external data at {where!r}); submit one "
                              "self-contained file (torch.onnx.export(..., external_data=False))")
    if any(dim < 0 for dim in tensor.dims):
        raise SubmissionError(f"tensor {name} has a negative dimension")
    count = math.prod(tensor.dims)
    if count > ONNX_MAX_ELEMENTS:
        raise SubmissionError(f"tensor {name} declares {count:,} elements (limit {ONNX_MAX_ELEMENTS:,})")
    if tensor.data_type in (TensorProto.UNDEFINED, TensorProto.STRING):
        raise SubmissionError(f"tensor {name} is not numeric")
    if tensor.HasField("raw_data"):
        if tensor.data_type in FOUR_BIT:
            expected = (count + 1) // 2
        else:
            expected = count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    else:
        expected = count * (2 if tensor.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128) else 1)
        if tensor.data_type in FOUR_BIT:
            expected = (count + 1) // 2
    if _present(tensor) != expected:
        raise SubmissionError(f"tensor {name} declares shape {list(tensor.dims)} but stores {_present(tensor):,} "
                              f"items instead of {expected:,}")


def _dims(value: onnx.ValueInfoProto) -> list:
    """The dims of a tensor value: an int, a symbolic name, or None where unknown."""
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim] \
        if value.type.tensor_type.HasField("shape") else None


def check_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The one image input: float32, (1 or free, 3, 32, 32)."""
    stored = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in stored]
    if len(inputs) != 1:
        raise SubmissionError(f"the graph has {len(inputs)} inputs; it must have one: the images")
    image = inputs[0]
    if not image.type.HasField("tensor_type") or image.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise SubmissionError(f"the input {image.name} must be a float32 tensor")
    dims = _dims(image)
    if dims is None or len(dims) != 4 or tuple(dims[1:]) != ONNX_INPUT or not (dims[0] in (1, None)
                                                                                or isinstance(dims[0], str)):
        raise SubmissionError(f"the input {image.name} has shape {dims}; it must be [batch, "
                              f"{', '.join(map(str, ONNX_INPUT))}] with batch 1 or free")
    if len(model.graph.output) != 1:
        raise SubmissionError(f"the graph has {len(model.graph.output)} outputs; it must have one: the "
                              f"{ONNX_CLASSES} logits")
    return image


def infer_at_batch_one(model: onnx.ModelProto, image: onnx.ValueInfoProto) -> onnx.ModelProto:
    """A copy with the batch fixed to 1 and every value's static shape inferred, each within the limit."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name == image.name:
            value.type.tensor_type.shape.dim[0].Clear()
            value.type.tensor_type.shape.dim[0].dim_value = 1
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError) as error:
        raise SubmissionError(f"the model's shapes cannot be inferred ({_first_line(error)})") from None
    values = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    for node in inferred.graph.node:
        for output in node.output:
            dims = _dims(values[output]) if output in values else None
            if dims is None or not all(isinstance(d, int) for d in dims):
                raise SubmissionError(f"the shape of {output} (from node {node.name or node.op_type}) is not fixed "
                                      f"at batch 1 ({dims}); every shape must follow from the input's")
            if math.prod(dims) > ONNX_MAX_ELEMENTS:
                raise SubmissionError(f"{output} (from node {node.name or node.op_type}) has {math.prod(dims):,} "
                                      f"elements at batch 1 (limit {ONNX_MAX_ELEMENTS:,})")
    output = inferred.graph.output[0]
    if output.type.tensor_type.elem_type != TensorProto.FLOAT or _dims(output) != [1, ONNX_CLASSES]:
        raise SubmissionError(f"the output {output.name} has shape {_dims(output)} at batch 1; it must be the "
                              f"{ONNX_CLASSES} float32 logits of each image ([batch, {ONNX_CLASSES}])")
    return inferred


def check_model(data: bytes) -> CheckedModel:
    """Every check of this module on the bytes of a submission; ``SubmissionError`` names the first problem."""
    if len(data) > ONNX_MAX_BYTES:
        raise SubmissionError(f"the file is {len(data):,} bytes (limit {ONNX_MAX_BYTES:,})")
    model = parse(data)
    check_operators(model)
    if model.graph.sparse_initializer:
        raise SubmissionError("the model has sparse initializers; store every weight dense")
    for tensor in _tensors(model):
        check_tensor(tensor)
    image = check_input(model)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, RuntimeError, ValueError) as error:
        raise SubmissionError(f"the ONNX checker refuses the model ({_first_line(error)})") from None
    inferred = infer_at_batch_one(model, image)
    return CheckedModel(data, inferred, image.name, _dims(image)[0] != 1)


def load(path: PathLike) -> CheckedModel:
    """Read and check the ``.onnx`` submission at ``path`` (a regular file within the size limit)."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        raise SubmissionError(f"{path.name} must be a regular file")
    size = path.stat().st_size
    if size > ONNX_MAX_BYTES:
        raise SubmissionError(f"the file is {size:,} bytes (limit {ONNX_MAX_BYTES:,})")
    if path.suffix.lower() != ONNX_SUFFIX:
        raise SubmissionError(f"{path.name} is not a {ONNX_SUFFIX} file")
    return check_model(path.read_bytes())
