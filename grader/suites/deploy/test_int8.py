"""INT8 in PyTorch (deploy/int8.py): calibration, static quantisation, dynamic Linears, QAT (10 points).

The judge runs the reference on its side with the same weights and batches
(torch's quantised kernels are deterministic on one thread) and compares.
Quantisation-aware training is graded the same way: the same batches, the
same optimizer (the suites' SGD, torch.optim's for ``quantize_qat``), one
thread on both sides, so the reference's weights and logits are the target.
"""
import numpy as np
import pytest
import torch

from grader.homework import CONV_LAYERS, FC_LAYERS, LAYERS
from grader.suites.common import fail_if
from grader.suites.deploy.common import images, model_arrays, trained_like
from grader.worker.models import NUM_CLASSES, SGD

pytestmark = pytest.mark.part("int8")

FILE = "deploy/int8.py"
BACKEND = "x86"


def calibration(seed: int, count: int = 3):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 32, 32, generator=generator) for _ in range(count)]


def request_arrays(model, batches, x=None):
    arrays = {**model_arrays(model), "batches": torch.stack(batches).numpy()}
    if x is not None:
        arrays["images"] = x.numpy()
    return arrays


def labelled(seed: int, count: int = 3):
    """``count`` training batches of 8 random images with random labels."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 32, 32, generator=generator), torch.randint(0, NUM_CLASSES, (8,), generator=generator))
            for _ in range(count)]


def labelled_arrays(model, batches, x=None):
    arrays = request_arrays(model, [images for images, _ in batches], x)
    arrays["labels"] = torch.stack([labels for _, labels in batches]).numpy()
    return arrays


def agreement_problems(what: str, want: torch.Tensor, got: np.ndarray, tolerance: float) -> list:
    if got.shape != tuple(want.shape) or not np.isfinite(got).all():
        return [f"{what}: expected finite logits of shape {tuple(want.shape)}, got {got.shape}"]
    diff = float(np.abs(got - want.numpy()).max())
    if diff > tolerance:
        return [f"{what}: the logits differ from the expected ones by up to {diff:.4g} (allowed {tolerance:.3g})"]
    return []


def int8_weight_problems(model, data) -> list:
    """What is wrong with the INT8 weights the worker sent back: every layer INT8, one scale per output channel."""
    problems = []
    for name in LAYERS:
        weight, scale = data.get(f"int:{name}"), data.get(f"scale:{name}")
        out = getattr(model, name).weight.shape[0]
        if weight is None or weight.dtype != np.int8:
            problems.append(f"{name}: its weight is not INT8 (found {None if weight is None else weight.dtype})")
        elif scale is None or scale.shape != (out,):
            problems.append(f"{name}: expected {out} per-channel scales, got {None if scale is None else scale.shape}")
    return problems


@pytest.mark.points(2, todo=f"{FILE}: calibrate")
def test_calibrate_records_ranges(student, reference):
    """calibrate runs every batch through the observed model, so every observer holds the data's range."""
    legacy = reference("deploy/legacy_quant.py")
    model, batches = trained_like(40), calibration(40)
    answer, data = student.deploy("calibrate", request_arrays(model, batches), backend=BACKEND)
    prepared = legacy.prepare_static(model, batches[0], BACKEND)
    with torch.no_grad():
        for batch in batches:
            prepared(batch)
    want = np.array([[low, high] for _, low, high in legacy.observed_ranges(prepared)])
    got = data.get("ranges", np.zeros((0, 2)))
    problems = []
    if answer.get("returned") != len(batches):
        problems.append(f"calibrate returned {answer.get('returned')!r}, not the number of batches run ({len(batches)})")
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-6):
        unseen = int((~np.isfinite(got)).any(axis=1).sum()) if got.ndim == 2 else 0
        problems.append(f"the observers' (min, max) ranges are not those of the {len(batches)} batches"
                        + (f" ({unseen} observers saw no data at all)" if unseen else ""))
    fail_if(problems, f"calibrate(prepared, batches) with {len(batches)} batches of 4 images:")


@pytest.mark.points(2, todo=f"{FILE}: quantize_static")
def test_quantize_static(student, reference):
    """quantize_static gives INT8 weights (per-channel scales) in every layer and the reference's logits."""
    int8 = reference("deploy/int8.py")
    model, batches, x = trained_like(41), calibration(41), images(41)
    _, data = student.deploy("quantize_static", request_arrays(model, batches, x), backend=BACKEND)
    problems = int8_weight_problems(model, data)
    with torch.no_grad():
        want = int8.quantize_static(model, batches, BACKEND)(x)
    problems += agreement_problems("logits of the INT8 model", want, data.get("logits", np.zeros(0)), 1e-3)
    fail_if(problems, "quantize_static(model, batches) (prepare, calibrate on every batch, convert):")


@pytest.mark.points(2, todo=f"{FILE}: quantize_linears")
def test_quantize_linears(student):
    """quantize_linears makes the Linear layers' weights INT8 and leaves the convs in float32."""
    model, x = trained_like(42), images(42)
    _, data = student.deploy("quantize_linears", {**model_arrays(model), "images": x.numpy()})
    problems = [f"{name}: its weight is not INT8" for name in FC_LAYERS
                if data.get(f"int:{name}") is None or data[f"int:{name}"].dtype != np.int8]
    problems += [f"{name}: a conv must stay float32" for name in CONV_LAYERS
                 if f"int:{name}" in data or f"float:{name}" not in data]
    with torch.no_grad():
        want = model(x)
    problems += agreement_problems("logits against the float model", want, data.get("logits", np.zeros(0)),
                                   0.05 * float(want.abs().max()))
    fail_if(problems, "quantize_linears(model):")


QAT_LR, QAT_MOMENTUM = 0.05, 0.9
"""A large step, so that a pass that trains differently from the reference shows in the weights and logits."""


@pytest.mark.points(2, todo=f"{FILE}: train_qat")
def test_train_qat_takes_one_step_per_batch(student, reference):
    """train_qat trains the fake-quantised model: one SGD step on the cross-entropy of each batch, in order."""
    legacy, int8 = reference("deploy/legacy_quant.py"), reference("deploy/int8.py")
    model, batches = trained_like(43), labelled(43)
    answer, data = student.deploy("train_qat", labelled_arrays(model, batches), backend=BACKEND, lr=QAT_LR,
                                  momentum=QAT_MOMENTUM)
    prepared = legacy.prepare_qat(model, batches[0][0], BACKEND)
    want_losses = int8.train_qat(prepared, batches, SGD(prepared.parameters(), lr=QAT_LR, momentum=QAT_MOMENTUM))
    problems = []
    losses = answer.get("losses")
    if not isinstance(losses, list) or len(losses) != len(batches) \
            or not all(isinstance(v, float) for v in losses):
        problems.append(f"train_qat returned {losses!r}, not one loss (a float) per batch ({len(batches)})")
    elif not np.allclose(losses, want_losses, rtol=1e-4, atol=1e-5):
        problems.append(f"the losses {np.round(losses, 4).tolist()} are not the expected "
                        f"{np.round(want_losses, 4).tolist()} (cross-entropy of each batch, before its step)")
    if answer.get("training") is not True:
        problems.append("the model (handed over in eval mode) is not in train mode after train_qat: "
                        "call prepared.train() first")
    wrong = [name for name, p in prepared.named_parameters()
             if data.get(name) is None or data[name].shape != tuple(p.shape)
             or not np.allclose(data[name], p.detach().numpy(), rtol=1e-4, atol=1e-6)]
    if wrong:
        problems.append(f"after the pass, the weights of {', '.join(wrong[:4])}{' ...' if len(wrong) > 4 else ''} "
                        "are not those of one optimizer step per batch (zero_grad, backward, then step)")
    scales = dict(legacy.fake_quant_scales(prepared))
    if answer.get("fake_quantizers") != list(scales) or not all(
            f"scale:{name}" in data and np.allclose(data[f"scale:{name}"], scale.numpy(), rtol=1e-4)
            for name, scale in scales.items()):
        problems.append("the fake-quantisers' scales are not those the observers record during this pass "
                        "(every batch must go through the prepared model)")
    fail_if(problems, f"train_qat(prepared, batches, optimizer) with {len(batches)} batches of 8 images "
                      f"(SGD, lr {QAT_LR}, momentum {QAT_MOMENTUM}):")


@pytest.mark.points(2, todo=f"{FILE}: quantize_qat")
def test_quantize_qat(student, reference):
    """quantize_qat prepares, trains (observers frozen for the last epoch) and converts: INT8 weights and the
    reference's logits."""
    int8 = reference("deploy/int8.py")
    model, batches, x, epochs = trained_like(44), labelled(44), images(44), 2
    answer, data = student.deploy("quantize_qat", labelled_arrays(model, batches, x), backend=BACKEND,
                                  epochs=epochs, lr=QAT_LR)
    problems = int8_weight_problems(model, data)
    if answer.get("changed_input_model"):
        problems.append(f"the model passed in was changed ({', '.join(answer['changed_input_model'][:4])}): "
                        "train the prepared copy, not the original")
    quantized = int8.quantize_qat(model, batches, epochs, QAT_LR, BACKEND)  # trains: not under no_grad
    with torch.no_grad():
        want = quantized(x)
    problems += agreement_problems("logits of the INT8 model", want, data.get("logits", np.zeros(0)), 1e-3)
    fail_if(problems, f"quantize_qat(model, batches, epochs={epochs}, lr={QAT_LR}) (prepare_qat, SGD with momentum "
                      "0.9 on the prepared copy, train every epoch with the observers frozen for the last, convert):")
