"""INT8 in PyTorch (deploy/int8.py): calibration, static quantisation, dynamic Linears (6 points).

The judge runs the reference on its side with the same weights and batches
(torch's quantised kernels are deterministic on one thread) and compares.
"""
import numpy as np
import pytest
import torch

from grader.homework import CONV_LAYERS, FC_LAYERS, LAYERS
from grader.suites.common import fail_if
from grader.suites.deploy.common import images, model_arrays, trained_like

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


def agreement_problems(what: str, want: torch.Tensor, got: np.ndarray, tolerance: float) -> list:
    if got.shape != tuple(want.shape) or not np.isfinite(got).all():
        return [f"{what}: expected finite logits of shape {tuple(want.shape)}, got {got.shape}"]
    diff = float(np.abs(got - want.numpy()).max())
    if diff > tolerance:
        return [f"{what}: the logits differ from the expected ones by up to {diff:.4g} (allowed {tolerance:.3g})"]
    return []


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
    problems = []
    for name in LAYERS:
        weight, scale = data.get(f"int:{name}"), data.get(f"scale:{name}")
        out = getattr(model, name).weight.shape[0]
        if weight is None or weight.dtype != np.int8:
            problems.append(f"{name}: its weight is not INT8 (found {None if weight is None else weight.dtype})")
        elif scale is None or scale.shape != (out,):
            problems.append(f"{name}: expected {out} per-channel scales, got {None if scale is None else scale.shape}")
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
