"""The staff recipe (staff/): its methods on small models, and one quick end-to-end run on tiny data."""
import json
import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
import pytest
import torch
import torch.nn as nn

import util
from net.huffmancoding import huffman_encode_fc
from net.quantization import apply_weight_sharing
from staff.compress import (SharedWeights, cubic_sparsity, distillation_loss, finetune_centroids, prune_to,
                            reorder_hidden_units, retrain_dropout, sparsity_of)
from tests.conftest import REPO
from tests.tinycifar import write_tiny_cifar


@pytest.fixture(scope="module")
def tiny_train(tmp_path_factory):
    root = write_tiny_cifar(tmp_path_factory.mktemp("cifar"), n_train=64, n_test=16)
    return util.load_cifar10(str(root), train=True, download=False)


# ---------------------------------------------------------------- schedule

def test_cubic_schedule_starts_at_initial_ends_at_target_and_rises():
    values = [cubic_sparsity(t / 20, 10.0, 95.0) for t in range(21)]
    assert values[0] == pytest.approx(10.0) and values[-1] == pytest.approx(95.0)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert cubic_sparsity(0.5, 0.0, 80.0) == pytest.approx(80.0 * (1 - 0.5 ** 3))
    # fast first, slow last (the point of the cubic schedule)
    assert values[1] - values[0] > values[-1] - values[-2]
    assert cubic_sparsity(-1, 0, 50) == 0 and cubic_sparsity(2, 0, 50) == 50


# ---------------------------------------------------------------- distillation

def test_distillation_loss_matches_a_hand_computation():
    student = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    teacher = torch.tensor([[1.0, 1.5, -0.5], [0.5, -1.0, 2.0]])
    labels = torch.tensor([0, 2])
    alpha, T = 0.6, 3.0

    def softmax(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    s, t = student.double().numpy(), teacher.double().numpy()
    p_teacher, p_student = softmax(t / T), softmax(s / T)
    kl = np.mean(np.sum(p_teacher * (np.log(p_teacher) - np.log(p_student)), axis=1))
    ce = np.mean(-np.log(softmax(s)[np.arange(2), labels.numpy()]))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert distillation_loss(student, teacher, labels, alpha, T).item() == pytest.approx(expected, rel=1e-5)
    # only the hard term at alpha=0, and nothing to learn from an identical teacher at alpha=1
    assert distillation_loss(student, teacher, labels, 0.0, T).item() == pytest.approx(ce, rel=1e-5)
    assert distillation_loss(student, student, labels, 1.0, T).item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- pruning helpers

def test_prune_to_reaches_each_layers_sparsity_weights_or_kernels(small_model):
    targets = {"conv_a": 50.0, "conv_b": 75.0, "fc_a": 90.0}
    prune_to(small_model, targets, kernel_layers=["conv_b"])
    reached = sparsity_of(small_model)
    for name, target in targets.items():
        assert reached[name] == pytest.approx(target, abs=1.0)
    assert reached["fc_b"] == 0.0
    slices = small_model.conv_b.weight.flatten(2)
    empty = (slices == 0).all(dim=2)
    assert torch.equal(empty, (slices == 0).any(dim=2)), "kernel pruning zeroes whole slices only"


def test_retrain_dropout_follows_han_et_al():
    class TwoFc(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(10, 10), nn.Linear(10, 10)

        def prunable_layers(self):
            return [("fc1", self.fc1), ("fc2", self.fc2)]

    model = TwoFc()
    assert retrain_dropout(model, 0.5) == pytest.approx(0.5)
    with torch.no_grad():
        model.fc1.weight.view(-1)[:75] = 0
        model.fc2.weight.view(-1)[:75] = 0
    assert retrain_dropout(model, 0.5) == pytest.approx(0.25)


# ---------------------------------------------------------------- centroid fine-tuning

def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    class One(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def prunable_layers(self):
            return [("fc", self.fc)]

    model = One()
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[0.5, 0.0, -1.0], [0.5, -1.0, 0.0]]))
    shared = SharedWeights(model)
    model.fc.weight.grad = torch.tensor([[1.0, 10.0, 2.0], [3.0, 4.0, 20.0]])
    shared.gather_gradients()
    (centroids,) = shared.centroids()
    assert centroids.tolist() == [-1.0, 0.5]
    assert centroids.grad.tolist() == [2.0 + 4.0, 1.0 + 3.0]  # the zeros' gradients (10, 20) go nowhere


@pytest.mark.parametrize("bits", [1, 2])
def test_centroid_finetuning_keeps_the_sharing_and_the_zeros(small_model, tiny_train, bits):
    small_model.prune_by_percentile(40.0)
    apply_weight_sharing(small_model, bits=bits)
    before = {name: m.weight.detach().clone() for name, m in small_model.prunable_layers()}
    finetune_centroids(small_model, tiny_train, torch.device("cpu"), epochs=1, lr=0.05,
                       loss=lambda images, logits, labels: nn.functional.cross_entropy(logits, labels),
                       batch_size=16, generator=torch.Generator().manual_seed(0), progress=False)
    moved = False
    for name, module in small_model.prunable_layers():
        old, new = before[name], module.weight.detach()
        assert torch.all(new[old == 0] == 0), f"{name}: a pruned weight moved"
        assert torch.unique(new[new != 0]).numel() <= 2 ** bits
        # the cluster assignment is fixed: equal weights stay equal
        for value in torch.unique(old[old != 0]):
            assert torch.unique(new[old == value]).numel() == 1
        moved |= not torch.equal(old, new)
    assert moved, "the centroids did not change"


# ---------------------------------------------------------------- reordering hidden units

def test_reordering_hidden_units_keeps_the_function_and_shortens_the_gaps():
    torch.manual_seed(0)
    fc1, fc2, fc3 = nn.Linear(8, 64), nn.Linear(64, 64), nn.Linear(64, 10)
    with torch.no_grad():
        keep = torch.zeros(64, 1)
        keep[[5, 20, 41, 63]] = 1  # a few live units, scattered
        fc1.weight.mul_(keep)
        fc2.weight.mul_(keep * (torch.rand(64, 64) < 0.5))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = fc1, fc2, fc3

        def prunable_layers(self):
            return [("fc1", self.fc1), ("fc2", self.fc2), ("fc3", self.fc3)]

        def forward(self, x):
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    model = Mlp()
    x = torch.randn(5, 8)
    expected = model(x).detach()

    def gap_bytes():
        with tempfile.TemporaryDirectory() as folder:
            return huffman_encode_fc(model.fc2.weight.detach().numpy(), "fc2", folder)

    before = gap_bytes()
    reorder_hidden_units(model)
    assert torch.allclose(model(x), expected, atol=1e-6)
    assert gap_bytes() < before
    assert torch.count_nonzero(model.fc2.weight[4:]) == 0, "the live units come first"


# ---------------------------------------------------------------- the whole recipe

@pytest.mark.heavy
def test_recipe_runs_end_to_end_on_tiny_data_and_writes_a_valid_submission(tmp_path):
    data = write_tiny_cifar(tmp_path / "data", n_train=80, n_test=40)
    out = tmp_path / "out"
    work = tmp_path / "work"
    result = subprocess.run(
        ["bash", str(REPO / "staff" / "run_gpu.sh"), str(data), str(out), "--quick", "--device", "cpu",
         "--bit-retries", "0", "--batch-size", "64"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHON=sys.executable, WORK=str(work), PYTHONDONTWRITEBYTECODE="1",
                 SENSITIVITY_FLAGS="--subset 20 --sparsities 99 --bits 2 --no-confirm"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == ["config", "dense", "prune", "share", "finetune", "reorder", "final"]
    final = rows[-1]
    assert final["decoded_bit_identical"] is True and final["rate"] > 100
    assert (out / "table.txt").read_text().splitlines()[-1].startswith("total")
    assert (out / "encodings.tar.gz").stat().st_size > 10_000
    with tarfile.open(out / "sensitivity.tar.gz") as archive:  # the scans of the teacher, run beside
        names = archive.getnames()
        assert "sensitivity/sensitivity.csv" in names, archive.extractfile("sensitivity/log.txt").read()

    # the model is a submission the leaderboard accepts, at the rate the recipe reported
    from grader.measure import measure

    class NoEvaluation:
        key = "none"

        def prepare(self):
            pass

        def __call__(self, model, student_id):
            return 0, 1

    measured = measure(work / "staff_model.ptmodel", "staff", NoEvaluation())
    assert not measured.problem, measured.problem
    assert measured.compressed_bytes == final["compressed_bytes"]
