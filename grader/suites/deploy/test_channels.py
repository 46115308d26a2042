"""Channel pruning (deploy/channels.py): ranking, removal with repaired consumers, schedules (12 points)."""
import numpy as np
import pytest
import torch

from grader.suites.common import fail_if
from grader.suites.deploy.common import forward, images, model_arrays, shapes, tensors, trained_like

pytestmark = pytest.mark.part("channels")

FILE = "deploy/channels.py"


def zero_channels(model, name: str, channels) -> None:
    """Make the output ``channels`` of layer ``name`` exactly zero (weights and bias)."""
    layer = getattr(model, name)
    layer.weight.data[channels] = 0.0
    layer.bias.data[channels] = 0.0


@pytest.mark.points(2, todo=f"{FILE}: filter_scores")
def test_filter_scores(student):
    """filter_scores gives one L1 or L2 norm per output channel of a conv or fc weight."""
    rng = np.random.default_rng(1)
    problems = []
    for shape in ((6, 4, 3, 2), (7, 5)):
        weight = rng.normal(size=shape).astype(np.float32)
        rows = weight.reshape(shape[0], -1)
        for norm, want in (("l1", np.abs(rows).sum(1)), ("l2", np.sqrt((rows ** 2).sum(1)))):
            _, data = student.deploy("filter_scores", {"weight": weight}, norm=norm)
            got = data.get("out", np.zeros(0))
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4):
                problems.append(f"weight of shape {shape}, norm {norm!r}: expected {np.round(want, 3).tolist()}, "
                                f"got {np.round(got, 3).tolist()}")
    fail_if(problems, "filter_scores(weight, norm): one score per output channel (row), the norm of its filter:")


@pytest.mark.points(2, todo=f"{FILE}: channels_to_keep")
def test_channels_to_keep(student):
    """channels_to_keep keeps the round(keep * n) highest scores, at least one, as increasing indices."""
    scores = np.array([0.5, 3.0, 0.1, 2.0, 2.0, 0.7, 5.0, 0.2], dtype=np.float32)
    cases = {0.5: [1, 3, 4, 6], 0.25: [1, 6], 0.0: [6], 1.0: list(range(8)), 0.3: [1, 6]}
    problems = []
    for keep, want in cases.items():
        _, data = student.deploy("channels_to_keep", {"scores": scores}, keep=keep)
        got = data.get("out", np.zeros(0)).tolist()
        if got != want:
            problems.append(f"keep={keep}: expected {want}, got {got}")
    fail_if(problems, f"channels_to_keep(scores={scores.tolist()}, keep):")


@pytest.mark.points(2, todo=f"{FILE}: flattened_features")
def test_flattened_features(student):
    """flattened_features maps kept channels to fc1's inputs behind torch.flatten (c * side_area + position)."""
    problems = []
    for channels, area in (([1, 3], 4), ([0, 2, 5], 9), ([2], 1)):
        want = [c * area + p for c in channels for p in range(area)]
        _, data = student.deploy("flattened_features", {"channels": np.array(channels)}, side_area=area)
        got = data.get("out", np.zeros(0)).tolist()
        if got != want:
            problems.append(f"channels {channels}, side_area {area}: expected {want}, got {got}")
    fail_if(problems, "flattened_features(channels, side_area):")


def removal_problems(student, model, name: str, keep, x) -> list:
    """Remove the channels of ``name`` outside ``keep`` (all zero first); check shapes and unchanged outputs."""
    removed = [c for c in range(getattr(model, name).weight.shape[0]) if c not in keep]
    zero_channels(model, name, removed)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, data = student.deploy("remove_channels", {**model_arrays(model), "keep": np.array(keep)}, name=name)
    after = tensors(data)
    expected = dict(shapes(before))
    names = [n for n, _ in model.named_children()]
    consumer = names[names.index(name) + 1]
    out_shape = list(expected[f"{name}.weight"])
    out_shape[0] = len(keep)
    expected[f"{name}.weight"], expected[f"{name}.bias"] = tuple(out_shape), (len(keep),)
    in_shape = list(expected[f"{consumer}.weight"])
    per_channel = in_shape[1] // getattr(model, name).weight.shape[0]
    in_shape[1] = len(keep) * per_channel
    expected[f"{consumer}.weight"] = tuple(in_shape)
    got = shapes(after)
    wrong = [f"{n}: expected shape {s}, got {got.get(n)}" for n, s in expected.items() if got.get(n) != s]
    if wrong:
        return [f"after removing {len(removed)} channels of {name} (keeping {keep}): " + w for w in wrong]
    with torch.no_grad():
        want, have = forward(before, x), forward(after, x)
    if not torch.allclose(want, have, rtol=1e-4, atol=1e-5):
        return [f"after removing the all-zero channels {removed} of {name}, the model's outputs changed by up to "
                f"{(want - have).abs().max().item():.3g}: the kept channels (and the consumer's matching inputs) "
                "must stay where they belong"]
    return []


@pytest.mark.points(2, todo=f"{FILE}: remove_channels")
def test_remove_conv_channels(student):
    """Removing all-zero filters of a conv shrinks it and the next conv's inputs; the outputs do not change."""
    x = images(3)
    problems = removal_problems(student, trained_like(31), "conv2", [0, 2, 3, 5], x)
    problems += removal_problems(student, trained_like(32), "conv3", [1, 4], x)
    fail_if(problems, "remove_channels(model, name, keep_index) on a conv followed by a conv:")


@pytest.mark.points(1, todo=f"{FILE}: remove_channels")
def test_remove_channels_before_flatten(student):
    """Removing filters of the last conv repairs fc1's inputs behind the flatten (side x side features each)."""
    problems = removal_problems(student, trained_like(33), "conv5", [0, 3], images(4))
    fail_if(problems, "remove_channels on the last conv (conv5 -> pool -> flatten -> fc1):")


@pytest.mark.points(1, todo=f"{FILE}: remove_channels")
def test_remove_fc_units(student):
    """Removing all-zero hidden units of fc1 shrinks fc1's outputs and fc2's inputs; the outputs do not change."""
    problems = removal_problems(student, trained_like(34), "fc1", [1, 2, 5, 7, 11], images(5))
    problems += removal_problems(student, trained_like(35), "fc2", [0, 6], images(5))
    fail_if(problems, "remove_channels on a fully connected layer:")


@pytest.mark.points(2, todo=f"{FILE}: schedules")
def test_schedules(student):
    """The linear, exponential and cubic schedules give the keep-fraction at fixed steps (clamped to 0..steps)."""
    at, steps, final = [-1, 0, 1, 2, 4, 5], 4, 0.25
    t = np.clip(np.array(at, dtype=float), 0, steps) / steps
    wanted = {"linear_schedule": 1 - (1 - final) * t, "exponential_schedule": final ** t,
              "cubic_schedule": final + (1 - final) * (1 - t) ** 3}
    problems = []
    for name, want in wanted.items():
        answer, _ = student.deploy("schedule", name=name, steps=steps, final=final, at=at)
        got = answer.get("values")
        numbers = isinstance(got, list) and all(isinstance(v, (int, float)) for v in got)
        if not numbers or not np.allclose(np.array(got, dtype=float), want, atol=1e-9):
            problems.append(f"{name}(step, {steps}, {final}) at steps {at}: expected "
                            f"{np.round(want, 6).tolist()}, got {got}")
    fail_if(problems, "The gradual schedules:")
