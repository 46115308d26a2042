"""Graph capture (deploy/capture.py): torch.export with a free batch, and the exact-equivalence check (4 points).

The judge never captures anything itself: it compares what the captured graph
computes in the box with its own forward pass of the same weights
(``common.forward``, the same ATen kernels on one thread, so equal to the bit).
For ``check_equivalent`` the worker captures the graph (the student's
function only compares), once from the same weights and once from weights
changed by a tiny amount that only some of the batches can see.
"""
import math

import numpy as np
import pytest
import torch

from grader.homework import LAYERS
from grader.suites.common import fail_if
from grader.suites.deploy.common import forward, images, model_arrays, trained_like

pytestmark = pytest.mark.part("capture")

FILE = "deploy/capture.py"
EXAMPLE_BATCH, RUN_BATCH = 4, 16
NUDGE = 2e-5
"""How much one weight of conv1 changes in the 'changed graph': far below any tolerance a loose check would use."""
OPERATORS = ("aten.conv2d", "aten.relu", "aten.max_pool2d", "aten.linear")


def weights_of(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.points(2, todo=f"{FILE}: capture")
def test_capture_runs_any_batch_and_computes_exactly_the_model(student):
    """capture gives a torch.export program with the model's weights whose graph runs on another batch size
    and computes exactly (bit for bit) what the model computes."""
    model, example, x = trained_like(50), images(50, EXAMPLE_BATCH), images(51, RUN_BATCH)
    answer, data = student.deploy("capture", {**model_arrays(model), "example": example.numpy(), "images": x.numpy()})
    problems = []
    state = sorted(f"{name}.{kind}" for name in LAYERS for kind in ("weight", "bias"))
    if answer.get("state") != state:
        problems.append(f"the program's weights are {answer.get('state')!r}, not the model's {len(state)} "
                        "weights and biases (capture the model you were given)")
    ops = answer.get("ops") or []
    missing = [op for op in OPERATORS if not any(str(found).startswith(op) for found in ops)]
    if missing:
        problems.append(f"the graph holds no {', '.join(missing)}: it is not the model's forward pass")
    if answer.get("run_error"):
        problems.append(f"the captured graph (example of {EXAMPLE_BATCH} images) does not run on {RUN_BATCH} images: "
                        "is the batch dimension free (dynamic_shapes={0: BATCH})? It said: "
                        + str(answer["run_error"])[:300])
    else:
        got, want = data.get("logits", np.zeros(0)), forward(weights_of(model), x)
        if got.shape != tuple(want.shape):
            problems.append(f"on {RUN_BATCH} images the graph gave logits of shape {got.shape}, "
                            f"not {tuple(want.shape)}")
        elif not np.array_equal(got, want.numpy()):
            diff = float(np.abs(got - want.numpy()).max()) if np.isfinite(got).all() else math.inf
            problems.append(f"the graph's logits are not exactly the model's (largest difference {diff:.3g})")
    fail_if(problems, f"capture(model, example) with an example batch of {EXAMPLE_BATCH}:")


def check(student, seed: int, changed: bool):
    """The student's answer for the model against its graph (changed or not) on three batches, the last of
    zeros, and what the judge expects: ``(returned, equal, largest difference)``."""
    model = trained_like(seed)
    weights = weights_of(model)
    captured = {name: value.clone() for name, value in weights.items()}
    if changed:
        captured["conv1.weight"][0, 0, 1, 1] += NUDGE
    batches = [images(seed, 8), images(seed + 1, 8), torch.zeros(8, 3, 32, 32)]
    arrays = {**model_arrays(model), **{f"captured:{name}": value.numpy() for name, value in captured.items()},
              "batches": torch.stack(batches).numpy()}
    answer, _ = student.deploy("check_equivalent", arrays)
    outputs = [(forward(weights, x), forward(captured, x)) for x in batches]
    equal = all(torch.equal(a, b) for a, b in outputs)
    largest = max(float((a - b).abs().max()) for a, b in outputs)
    return answer.get("returned", {}), equal, largest


def report_problems(returned: dict, equal: bool, largest: float) -> list:
    problems = []
    if set(returned) != {"equal", "max_abs_diff"}:
        return [f"returned the keys {sorted(returned)}, not 'equal' and 'max_abs_diff'"]
    if returned["equal"] is not equal:
        problems.append(f"'equal' is {returned['equal']!r}, expected {equal} (torch.equal on every batch: "
                        "exact, no tolerance, the same input for both)")
    diff = returned["max_abs_diff"]
    if not isinstance(diff, (int, float)) or isinstance(diff, bool) \
            or not math.isclose(diff, largest, rel_tol=1e-3, abs_tol=1e-12):
        problems.append(f"'max_abs_diff' is {diff!r}, expected {largest:.6g} (the largest |model - graph| over "
                        "all batches)")
    return problems


@pytest.mark.points(1, todo=f"{FILE}: check_equivalent")
def test_check_equivalent_on_an_exact_capture(student):
    """check_equivalent calls a graph captured from the same weights equal, with a largest difference of 0."""
    returned, equal, largest = check(student, 52, changed=False)
    assert equal and largest == 0.0  # the judge's own premise: the same weights give the same floats
    fail_if(report_problems(returned, equal, largest),
            "check_equivalent(model, graph captured from the same model, 3 batches of 8):")


@pytest.mark.points(1, todo=f"{FILE}: check_equivalent")
def test_check_equivalent_catches_a_tiny_change(student):
    """check_equivalent calls a graph whose conv1 weight changed by 2e-5 not equal, on every batch together."""
    returned, equal, largest = check(student, 53, changed=True)
    assert not equal and 0.0 < largest < 1e-3
    fail_if(report_problems(returned, equal, largest),
            f"check_equivalent(model, graph with one conv1 weight changed by {NUDGE:g}, 3 batches of 8, "
            "the last of zeros, which cannot see the change):")
