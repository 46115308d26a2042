"""ONNX and ONNX Runtime (deploy/onnx_int8.py): export, calibration reader, INT8 QDQ, agreement (10 points).

The float model that ``quantize_onnx`` gets is written here with ``onnx.helper``
(a conv, ReLU, flatten and a fully connected layer), so its outputs are known
exactly and no export runs on the judge's side.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grader.suites.common import fail_if
from grader.suites.deploy.common import forward, images, model_arrays, trained_like

pytestmark = pytest.mark.part("onnx")

FILE = "deploy/onnx_int8.py"
FILTERS, SIDE, CLASSES = 4, 8, 10


def float_model(seed: int):
    """``(onnx bytes, torch function computing the same)`` of a small conv net on 3x8x8 images."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 0.3, (FILTERS, 3, 3, 3)).astype(np.float32) * np.array([1, 0.1, 3, 0.5],
                                                                                  dtype=np.float32)[:, None, None, None]
    conv_b = rng.normal(0, 0.1, FILTERS).astype(np.float32)
    fc_w = rng.normal(0, 0.1, (CLASSES, FILTERS * SIDE * SIDE)).astype(np.float32)
    fc_b = rng.normal(0, 0.1, CLASSES).astype(np.float32)
    nodes = [helper.make_node("Conv", ["images", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(a, n) for a, n in ((conv_w, "conv_w"), (conv_b, "conv_b"), (fc_w, "fc_w"),
                                                     (fc_b, "fc_b"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8

    def compute(x: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(F.conv2d(x, torch.from_numpy(conv_w), torch.from_numpy(conv_b), padding=1))
        return F.linear(torch.flatten(hidden, 1), torch.from_numpy(fc_w), torch.from_numpy(fc_b))
    return model.SerializeToString(), compute


def small_images(seed: int, count: int) -> torch.Tensor:
    return torch.randn(count, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.points(3, todo=f"{FILE}: export_onnx")
def test_export_onnx(student):
    """export_onnx writes one self-contained file that ONNX Runtime runs at any batch size, with the model's logits."""
    model = trained_like(50)
    example, x = images(50, 2), images(51, 5)
    answer, data = student.deploy("export_onnx", {**model_arrays(model), "example": example.numpy(),
                                                  "images": x.numpy()})
    problems = []
    if answer.get("files") != ["model.onnx"]:
        problems.append(f"expected exactly one file, model.onnx, found {answer.get('files')} "
                        "(use external_data=False: every weight inside the one file)")
    with torch.no_grad():
        want = forward(dict(model.named_parameters()), x)
    got = data.get("logits", np.zeros(0))
    if got.shape != tuple(want.shape):
        problems.append(f"on a batch of 5 (the example had 2), ONNX Runtime gave logits of shape {got.shape}: "
                        "the batch dimension must be dynamic")
    elif not np.allclose(got, want.numpy(), rtol=1e-4, atol=1e-5):
        problems.append(f"ONNX Runtime's logits differ from the model's by up to "
                        f"{float(np.abs(got - want.numpy()).max()):.3g}")
    fail_if(problems, "export_onnx(model, example, path):")


@pytest.mark.points(2, todo=f"{FILE}: BatchReader.get_next")
def test_batch_reader(student):
    """BatchReader.get_next hands out every batch once, in order, under the input's name, then None."""
    batches = small_images(60, 12).reshape(3, 4, 3, SIDE, SIDE)
    answer, data = student.deploy("batch_reader", {"batches": batches.numpy()}, input_name="pixels")
    calls = answer.get("calls")
    problems = []
    if calls != [["pixels"]] * 3 + [None]:
        problems.append(f"expected three dicts {{'pixels': batch}} then None, got {calls}")
    else:
        for i in range(3):
            if not np.array_equal(data.get(f"call{i}:pixels"), batches[i].numpy()):
                problems.append(f"call {i + 1} did not hand out batch {i + 1}")
    fail_if(problems, "BatchReader(3 batches, 'pixels').get_next(), called until it returns None:")


def quantized(student, seed: int):
    onnx_bytes, compute = float_model(seed)
    batches, x = small_images(seed, 32).reshape(4, 8, 3, SIDE, SIDE), small_images(seed + 1, 64)
    answer, data = student.deploy("quantize_onnx", {"file:float.onnx": np.frombuffer(onnx_bytes, np.uint8),
                                                    "batches": batches.numpy(), "images": x.numpy()})
    return answer, data.get("logits", np.zeros(0)), compute(x)


@pytest.mark.points(2, todo=f"{FILE}: quantize_onnx")
def test_quantize_onnx_qdq_per_channel(student):
    """quantize_onnx writes QuantizeLinear/DequantizeLinear (QDQ) with INT8 weights, one scale per output channel."""
    answer, _, _ = quantized(student, 70)
    ops, weights = answer.get("ops") or [], answer.get("int8_weights") or []
    problems = [f"no {op} node: use QuantFormat.QDQ" for op in ("QuantizeLinear", "DequantizeLinear")
                if op not in ops]
    conv = [w for w in weights if w.get("dims") == [FILTERS, 3, 3, 3]]
    if not conv:
        problems.append("the conv's weight is not stored as INT8 (weight_type=QuantType.QInt8)")
    elif conv[0].get("scale_dims") != [FILTERS]:
        problems.append(f"the conv's weight has scales of shape {conv[0].get('scale_dims')}, expected "
                        f"[{FILTERS}]: one per output channel (per_channel=True)")
    fail_if(problems, f"The INT8 model (operators {ops}):")


@pytest.mark.points(1, todo=f"{FILE}: quantize_onnx")
def test_quantize_onnx_agrees(student):
    """The calibrated INT8 model agrees with the float one on 64 images (top-1 and logits)."""
    _, got, want = quantized(student, 71)
    if got.shape != tuple(want.shape):
        fail_if([f"logits of shape {got.shape}, expected {tuple(want.shape)}"], "The INT8 model:")
    same = float((got.argmax(1) == want.numpy().argmax(1)).mean())
    diff = float(np.abs(got - want.numpy()).max())
    allowed = 0.1 * float(want.abs().max())
    problems = [] if same >= 0.9 and diff <= allowed else [
        f"top-1 agreement {same:.3f} (at least 0.9 expected), largest logit difference {diff:.3g} "
        f"(at most {allowed:.3g} expected); was the calibration reader handed every batch?"]
    fail_if(problems, "The INT8 model does not follow the float one:")


@pytest.mark.points(2, todo=f"{FILE}: agreement")
def test_agreement(student):
    """agreement gives the top-1 agreement (a fraction) and the largest absolute logit difference."""
    reference = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0], [0.0, 0.5, 0.4], [2.0, 2.5, -1.0]], dtype=np.float32)
    logits = np.array([[1.5, 2.2, 0.0], [2.0, 2.5, 1.0], [0.0, 0.6, 0.4], [2.0, 1.5, -4.0]], dtype=np.float32)
    answer, _ = student.deploy("agreement", {"reference": reference, "logits": logits})
    got = answer.get("returned") or {}
    want = {"top1_agreement": 0.5, "max_abs_diff": 3.0}
    problems = [f"{key}: expected {value}, got {got.get(key)!r}" for key, value in want.items()
                if not isinstance(got.get(key), (int, float)) or not np.isclose(got[key], value, atol=1e-6)]
    fail_if(problems, "agreement(reference, logits) on 4 images:")
