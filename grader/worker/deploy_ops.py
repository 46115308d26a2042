"""The worker's operations for Part 2 (``deploy/``): data in, data out, as in ``ops.py``.

Every operation builds what the student's function needs from the request's
arrays (a small model, a matrix, logits, an ONNX file), calls the student's
function, and answers with what it computed: arrays, numbers, the types and
shapes of the layers it made, and for INT8 and ONNX models the logits they
compute on the judge's images. The judge checks all of it against its own
reference; nothing here decides a score.
"""
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import torch.nn as nn

from grader.worker.models import SGD, load_weights, small_alexnet
from grader.worker.ops import Answer, Arrays, StudentError, as_array, call, load, picked, plain, state, write_files

MAX_READER_CALLS = 16


def _tensor(arrays: Arrays, name: str) -> torch.Tensor:
    return torch.from_numpy(np.array(arrays[name]))


def _model(arrays: Arrays) -> nn.Module:
    model = small_alexnet()
    load_weights(model, picked(arrays, "weight:"))
    return model.eval()


def _batches(arrays: Arrays) -> List[torch.Tensor]:
    return [torch.from_numpy(np.array(b)) for b in arrays["batches"]]


def _labelled(arrays: Arrays) -> List[tuple]:
    """``(images, labels)`` pairs from the arrays ``batches`` and ``labels``."""
    return list(zip(_batches(arrays), (torch.from_numpy(np.array(b)).long() for b in arrays["labels"])))


def _logits(model, images: torch.Tensor, what: str) -> np.ndarray:
    with torch.no_grad():
        out = call(model, images)
    return as_array(out, what).astype(np.float32)


# --------------------------------------------------------------------------- deploy/channels.py

def filter_scores(request: dict, arrays: Arrays) -> Answer:
    scores = call(load("deploy.channels").filter_scores, _tensor(arrays, "weight"), request["norm"])
    return {}, {"out": as_array(scores, "filter_scores")}


def channels_to_keep(request: dict, arrays: Arrays) -> Answer:
    index = call(load("deploy.channels").channels_to_keep, _tensor(arrays, "scores"), request["keep"])
    return {}, {"out": as_array(index, "channels_to_keep")}


def flattened_features(request: dict, arrays: Arrays) -> Answer:
    index = call(load("deploy.channels").flattened_features, _tensor(arrays, "channels").long(),
                 request["side_area"])
    return {}, {"out": as_array(index, "flattened_features")}


def remove_channels(request: dict, arrays: Arrays) -> Answer:
    model = _model(arrays)
    call(load("deploy.channels").remove_channels, model, request["name"], _tensor(arrays, "keep").long())
    return {}, state(model)


def schedule(request: dict, arrays: Arrays) -> Answer:
    function = getattr(load("deploy.channels"), request["name"], None)
    if function is None:
        raise StudentError(f"deploy/channels.py has no {request['name']}")
    values = [plain(call(function, step, request["steps"], request["final"])) for step in request["at"]]
    return {"values": values}, {}


# --------------------------------------------------------------------------- deploy/lowrank.py

def truncated_svd(request: dict, arrays: Arrays) -> Answer:
    returned = call(load("deploy.lowrank").truncated_svd, _tensor(arrays, "matrix"), request["rank"])
    if not isinstance(returned, (tuple, list)) or len(returned) != 2:
        raise StudentError(f"truncated_svd returned {plain(returned)!r}, not a pair (left, right)")
    return {}, {"left": as_array(returned[0], "truncated_svd"), "right": as_array(returned[1], "truncated_svd")}


def rank_for_energy(request: dict, arrays: Arrays) -> Answer:
    rank = call(load("deploy.lowrank").rank_for_energy, _tensor(arrays, "s"), request["energy"])
    return {"value": plain(rank)}, {}


def factorize_conv(request: dict, arrays: Arrays) -> Answer:
    weight = _tensor(arrays, "weight")
    layer = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), stride=request["stride"],
                      padding=request["padding"])
    layer.weight.data, layer.bias.data = weight, _tensor(arrays, "bias")
    made = call(load("deploy.lowrank").factorize_conv, layer, request["rank"])
    if not isinstance(made, nn.Sequential) or len(made) != 2 or not all(isinstance(m, nn.Conv2d) for m in made):
        raise StudentError(f"factorize_conv returned {plain(made)!r}, not nn.Sequential(Conv2d, Conv2d)")
    layers = [{"stride": list(m.stride), "padding": list(m.padding), "dilation": list(m.dilation),
               "groups": m.groups, "bias": m.bias is not None} for m in made]
    return {"layers": layers}, state(made)


# --------------------------------------------------------------------------- deploy/distill.py

def distillation_loss(request: dict, arrays: Arrays) -> Answer:
    student = _tensor(arrays, "student").requires_grad_(True)
    loss = call(load("deploy.distill").distillation_loss, student, _tensor(arrays, "teacher"),
                _tensor(arrays, "labels").long(), request["temperature"], request["alpha"])
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise StudentError(f"distillation_loss returned {plain(loss)!r}, not a scalar tensor")
    call(loss.backward)
    grad = student.grad if student.grad is not None else torch.zeros_like(student)
    return {"value": plain(float(loss.item()))}, {"grad": grad.numpy()}


# --------------------------------------------------------------------------- deploy/int8.py

def quantized_layers(model: nn.Module) -> Arrays:
    """The INT8 weights (``int:<name>``) and their per-channel or per-tensor scales (``scale:<name>``)."""
    found = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if callable(weight) and not isinstance(weight, (nn.Parameter, torch.Tensor)):
            q = weight()
            if isinstance(q, torch.Tensor) and q.is_quantized:
                found[f"int:{name}"] = q.int_repr().numpy()
                per_channel = q.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
                found[f"scale:{name}"] = (q.q_per_channel_scales() if per_channel
                                          else torch.tensor(q.q_scale())).numpy().astype(np.float64)
    return found


def calibrate(request: dict, arrays: Arrays) -> Answer:
    legacy = load("deploy.legacy_quant")
    batches = _batches(arrays)
    prepared = legacy.prepare_static(_model(arrays), batches[0], request["backend"])
    count = call(load("deploy.int8").calibrate, prepared, batches)
    ranges = list(legacy.observed_ranges(prepared))
    return {"returned": plain(count), "observers": [name for name, _, _ in ranges]}, \
        {"ranges": np.array([[low, high] for _, low, high in ranges], dtype=np.float64).reshape(-1, 2)}


def quantize_static(request: dict, arrays: Arrays) -> Answer:
    model = call(load("deploy.int8").quantize_static, _model(arrays), _batches(arrays), request["backend"])
    if not isinstance(model, nn.Module):
        raise StudentError(f"quantize_static returned {plain(model)!r}, not a model")
    return {}, {"logits": _logits(model, _tensor(arrays, "images"), "the quantised model"), **quantized_layers(model)}


def quantize_linears(request: dict, arrays: Arrays) -> Answer:
    model = call(load("deploy.int8").quantize_linears, _model(arrays))
    if not isinstance(model, nn.Module):
        raise StudentError(f"quantize_linears returned {plain(model)!r}, not a model")
    floats = {f"float:{name}": m.weight.detach().numpy() for name, m in model.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and isinstance(m.weight, torch.Tensor)}
    return {}, {"logits": _logits(model, _tensor(arrays, "images"), "the quantised model"),
                **quantized_layers(model), **floats}


def train_qat(request: dict, arrays: Arrays) -> Answer:
    """One pass of the student's train_qat over the batches, with the suites' SGD; the weights and scales after."""
    legacy = load("deploy.legacy_quant")
    batches = _labelled(arrays)
    prepared = legacy.prepare_qat(_model(arrays), batches[0][0], request["backend"])
    optimizer = SGD(prepared.parameters(), lr=request["lr"], momentum=request["momentum"])
    prepared.eval()  # handed over in eval mode: train_qat must switch it to training itself
    losses = call(load("deploy.int8").train_qat, prepared, batches, optimizer)
    if not isinstance(losses, (list, tuple)):
        raise StudentError(f"train_qat returned {plain(losses)!r}, not a list of losses")
    scales = list(legacy.fake_quant_scales(prepared))
    return {"losses": [plain(loss) for loss in losses], "training": bool(prepared.training),
            "fake_quantizers": [name for name, _ in scales]}, \
        {**state(prepared), **{f"scale:{name}": scale.numpy() for name, scale in scales}}


def correct_train_qat(prepared: nn.Module, batches, optimizer) -> List[float]:
    """A correct ``train_qat``, given to the student's ``quantize_qat`` so that its test grades that TODO alone."""
    prepared.train()
    losses = []
    for images, labels in batches:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(prepared(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def quantize_qat(request: dict, arrays: Arrays) -> Answer:
    model = _model(arrays)
    before = state(model)
    int8 = load("deploy.int8")
    int8.train_qat = correct_train_qat
    made = call(int8.quantize_qat, model, _labelled(arrays), request["epochs"], request["lr"], request["backend"])
    if not isinstance(made, nn.Module):
        raise StudentError(f"quantize_qat returned {plain(made)!r}, not a model")
    changed = sorted(name for name, value in state(model).items() if not np.array_equal(value, before[name]))
    return {"changed_input_model": changed}, \
        {"logits": _logits(made, _tensor(arrays, "images"), "the QAT model"), **quantized_layers(made)}


# --------------------------------------------------------------------------- deploy/capture.py

def capture(request: dict, arrays: Arrays) -> Answer:
    """The student's capture on a batch of ``example``; the graph's operators and weights, and what it computes
    on ``images`` (another batch size: the batch must be free)."""
    program = call(load("deploy.capture").capture, _model(arrays), _tensor(arrays, "example"))
    if not isinstance(program, torch.export.ExportedProgram):
        raise StudentError(f"capture returned {plain(program)!r}, not a torch.export.ExportedProgram")
    ops = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    answer = {"ops": ops, "state": sorted(program.state_dict), "run_error": None}
    try:
        with torch.no_grad():
            logits = call(program.module(), _tensor(arrays, "images"))
    except StudentError as error:
        return {**answer, "run_error": str(error)}, {}
    return answer, {"logits": as_array(logits, "the captured graph").astype(np.float32)}


def check_equivalent(request: dict, arrays: Arrays) -> Answer:
    """The student's check of the model (weights ``weight:``) against a graph that the worker captures itself
    from weights ``captured:`` (the same, or changed a little), on the ``batches``."""
    batches = _batches(arrays)
    other = small_alexnet()
    load_weights(other, picked(arrays, "captured:"))
    graph = torch.export.export(other.eval(), (batches[0],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    returned = call(load("deploy.capture").check_equivalent, _model(arrays), graph.module(), batches)
    if not isinstance(returned, dict):
        raise StudentError(f"check_equivalent returned {plain(returned)!r}, not a dict")
    return {"returned": {str(k): plain(v) for k, v in returned.items()}}, {}


# --------------------------------------------------------------------------- deploy/onnx_int8.py

def describe_onnx(path: Path, images: np.ndarray) -> Answer:
    """What the ONNX file at ``path`` holds (its operators and quantised weights) and the logits it computes."""
    import onnx
    import onnxruntime as ort
    graph = onnx.load(str(path)).graph
    initializers = {i.name: i for i in graph.initializer}
    weights = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            data, scale = initializers[node.input[0]], initializers.get(node.input[1])
            if data.data_type == onnx.TensorProto.INT8 and len(data.dims) >= 2:
                weights.append({"dims": list(data.dims), "scale_dims": list(scale.dims) if scale else None})
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    running = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    logits = running.run(None, {running.get_inputs()[0].name: images.astype(np.float32)})[0]
    return {"ops": sorted({node.op_type for node in graph.node}), "int8_weights": weights,
            "input": running.get_inputs()[0].name}, {"logits": np.asarray(logits, dtype=np.float32)}


def export_onnx(request: dict, arrays: Arrays) -> Answer:
    folder = Path("out")
    folder.mkdir()
    call(load("deploy.onnx_int8").export_onnx, _model(arrays), _tensor(arrays, "example"), folder / "model.onnx")
    files = sorted(p.name for p in folder.iterdir())
    if "model.onnx" not in files:
        raise StudentError("export_onnx did not write the file at the path it was given")
    answer, data = describe_onnx(folder / "model.onnx", np.array(arrays["images"]))
    return {**answer, "files": files}, data


def batch_reader(request: dict, arrays: Arrays) -> Answer:
    reader = call(load("deploy.onnx_int8").BatchReader, _batches(arrays), request["input_name"])
    calls: List[object] = []
    out: Dict[str, np.ndarray] = {}
    for i in range(MAX_READER_CALLS):
        item = call(reader.get_next)
        if item is None:
            calls.append(None)
            break
        if not isinstance(item, dict):
            raise StudentError(f"BatchReader.get_next returned {plain(item)!r}, not a dict or None")
        calls.append(sorted(str(k) for k in item))
        for key, value in item.items():
            out[f"call{i}:{key}"] = as_array(value, "BatchReader.get_next")
    return {"calls": calls}, out


def quantize_onnx(request: dict, arrays: Arrays) -> Answer:
    folder = write_files(arrays, Path("in"))
    target = Path("out")
    target.mkdir()
    call(load("deploy.onnx_int8").quantize_onnx, folder / "float.onnx", target / "int8.onnx", _batches(arrays))
    if not (target / "int8.onnx").is_file():
        raise StudentError("quantize_onnx did not write the INT8 model at the path it was given")
    return describe_onnx(target / "int8.onnx", np.array(arrays["images"]))


def agreement(request: dict, arrays: Arrays) -> Answer:
    returned = call(load("deploy.onnx_int8").agreement, _tensor(arrays, "reference"), _tensor(arrays, "logits"))
    if not isinstance(returned, dict):
        raise StudentError(f"agreement returned {plain(returned)!r}, not a dict")
    return {"returned": {str(k): plain(v) for k, v in returned.items()}}, {}


# --------------------------------------------------------------------------- deploy/optimiser.py

def _constraints(module, given: dict):
    return call(module.Constraints, **given)


def broken_constraints(request: dict, arrays: Arrays) -> Answer:
    module = load("deploy.optimiser")
    answers = []
    for case in request["cases"]:
        broken = call(module.broken_constraints, dict(case["row"]), dict(case["reference"]),
                      _constraints(module, case["constraints"]))
        answers.append([str(name) for name in broken] if isinstance(broken, (list, tuple)) else plain(broken))
    return {"broken": answers}, {}


def ranking_order(request: dict, arrays: Arrays) -> Answer:
    """The rows' names sorted by the student's ``ranking_key`` (the name breaking ties), for one target."""
    module = load("deploy.optimiser")
    rows, reference = request["rows"], request["rows"][0]
    keys = [call(module.ranking_key, dict(row), dict(reference), request["target"]) for row in rows]
    try:
        order = sorted(range(len(rows)), key=lambda i: (tuple(keys[i]), rows[i]["name"]))
    except TypeError as error:
        raise StudentError(f"ranking_key's keys cannot be compared or are not tuples: {error}") from None
    return {"order": [rows[i]["name"] for i in order]}, {}


def ranking_key_refuses(request: dict, arrays: Arrays) -> Answer:
    """Whether ``ranking_key`` raises ``ValueError`` for an unknown target, and what its message says."""
    module = load("deploy.optimiser")
    row = request["row"]
    try:
        returned = module.ranking_key(dict(row), dict(row), request["target"])
    except ValueError as error:
        return {"raised": True, "message": str(error)[:500]}, {}
    except BaseException as error:  # noqa: B902 - another exception is an answer too
        return {"raised": False, "message": f"raised {type(error).__name__}, not ValueError"}, {}
    return {"raised": False, "message": f"returned {plain(returned)!r}"}, {}


def choose(request: dict, arrays: Arrays) -> Answer:
    module = load("deploy.optimiser")
    chosen = call(module.choose, [dict(row) for row in request["rows"]], request["target"],
                  _constraints(module, request["constraints"]))
    if chosen is not None and not (isinstance(chosen, dict) and isinstance(chosen.get("name"), str)):
        raise StudentError(f"choose returned {plain(chosen)!r}, not one of the rows (or None)")
    return {"chosen": None if chosen is None else chosen["name"]}, {}


OPERATIONS = {f"deploy_{function.__name__}": function for function in (
    filter_scores, channels_to_keep, flattened_features, remove_channels, schedule,
    truncated_svd, rank_for_energy, factorize_conv, distillation_loss, calibrate, quantize_static,
    quantize_linears, train_qat, quantize_qat, capture, check_equivalent, export_onnx, batch_reader, quantize_onnx,
    agreement, broken_constraints, ranking_order, ranking_key_refuses, choose)}
