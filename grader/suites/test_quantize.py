"""Weight sharing: the conv branch of ``apply_weight_sharing`` in net/quantization.py (the 10 quantize points)."""
import numpy as np
import pytest
import torch

from grader.suites.common import fail_if
from grader.worker.models import CONV_SHAPE as SHAPE
from grader.worker.models import ConvAndFc

pytestmark = pytest.mark.part("quantize")

TODO = "net/quantization.py: apply_weight_sharing (conv layers)"
ZERO_FRACTION = 0.4


def share_conv(student, bits: int, seed: int):
    """Run the student's apply_weight_sharing on a pruned conv layer; return its weights before and after."""
    rng = np.random.default_rng(seed)
    model = ConvAndFc()
    for layer in (model.conv2, model.fc1):
        weight = rng.laplace(0.0, 0.1, tuple(layer.weight.shape)).astype(np.float32)
        weight[rng.random(weight.shape) < ZERO_FRACTION] = 0.0
        layer.weight.data = torch.from_numpy(weight)
    before = model.conv2.weight.detach().numpy().copy()
    return before, student.share_weights(model, bits)["conv2.weight"].numpy()


def label(bits: int) -> str:
    return f"conv weight of shape {SHAPE} with {ZERO_FRACTION:.0%} zeros, bits={bits}"


def sharing_problems(before: np.ndarray, after: np.ndarray, bits: int):
    """Problems every correct sharing avoids: a changed shape, or more than 2**bits distinct non-zero values."""
    if after.shape != before.shape:
        return [f"{label(bits)}: the weight's shape changed to {after.shape}"]
    if not np.isfinite(after).all():
        return [f"{label(bits)}: {int((~np.isfinite(after)).sum())} weights are not finite numbers (NaN or inf)"]
    distinct = np.unique(after[after != 0]).size
    if np.array_equal(after, before):
        return [f"{label(bits)}: the weights did not change at all"]
    if distinct > 2 ** bits:
        return [f"{label(bits)}: expected at most {2 ** bits} distinct non-zero values, found {distinct} "
                f"(the layer had {np.unique(before[before != 0]).size})"]
    return []


@pytest.mark.points(2, todo=TODO)
def test_zeros_stay_zero(student):
    """Pruned (zero) conv weights stay 0, unpruned ones stay non-zero, and at most 2**bits values are left."""
    problems = []
    for bits in (2, 3):
        before, after = share_conv(student, bits, seed=20 + bits)
        problems += sharing_problems(before, after, bits)
        if not problems:
            revived = int(((before == 0) & (after != 0)).sum())
            lost = int(((before != 0) & (after == 0)).sum())
            if revived:
                problems.append(f"{label(bits)}: {revived} of the {int((before == 0).sum())} zero weights became "
                                "non-zero (cluster only the non-zero weights and leave the zeros alone)")
            if lost:
                problems.append(f"{label(bits)}: {lost} non-zero weights became 0")
    fail_if(problems, "After apply_weight_sharing(model, bits):")


@pytest.mark.points(3, todo=TODO)
def test_each_weight_keeps_its_position(student):
    """Each conv weight is replaced by the centroid of its own cluster: a larger weight never gets a smaller value."""
    problems = []
    for bits in (2, 3):
        before, after = share_conv(student, bits, seed=30 + bits)
        problems += sharing_problems(before, after, bits)
        if not problems:
            kept = before != 0
            order = np.argsort(before[kept], kind="stable")
            swapped = int((np.diff(after[kept][order]) < 0).sum())
            if swapped:
                problems.append(f"{label(bits)}: sorted by their original value, the shared weights go down "
                                f"{swapped} times; in 1-D k-means each weight gets the centroid of its own cluster, "
                                "so the values must be written back at the positions they were taken from")
    fail_if(problems, "After apply_weight_sharing(model, bits), weights are not where they belong:")


@pytest.mark.points(2, todo=TODO)
def test_number_of_clusters(student):
    """A conv layer with many distinct non-zero weights ends with exactly 2**bits distinct non-zero values."""
    problems = []
    for bits in (2, 3, 4):
        before, after = share_conv(student, bits, seed=40 + bits)
        distinct = np.unique(after[after != 0]).size
        if distinct != 2 ** bits:
            problems.append(f"{label(bits)}: expected exactly {2 ** bits} distinct non-zero values "
                            f"(2**bits clusters), found {distinct}")
    fail_if(problems, "After apply_weight_sharing(model, bits):")


@pytest.mark.points(3, todo=TODO)
def test_matches_linear_init_kmeans(student, reference):
    """The shared conv weights are those of k-means on the non-zero weights with linearly spaced initial centroids."""
    share_values = reference("net/quantization.py").share_values
    problems = []
    for bits in (2, 3):
        before, after = share_conv(student, bits, seed=50 + bits)
        expected = before.copy()
        expected[before != 0] = share_values(before[before != 0], bits)
        if after.shape != expected.shape:
            problems.append(f"{label(bits)}: the weight's shape changed to {after.shape}")
        elif not np.allclose(after, expected, rtol=1e-4, atol=1e-7):
            want, got = np.unique(expected[expected != 0]), np.unique(after[after != 0])
            if want.size == got.size and np.allclose(want, got, rtol=1e-4, atol=1e-7):
                wrong = int((~np.isclose(after, expected, rtol=1e-4, atol=1e-7)).sum())
                problems.append(f"{label(bits)}: the shared values are right, but {wrong} weights got the wrong one")
            else:
                problems.append(f"{label(bits)}: expected the {want.size} shared values {fmt(want)}, "
                                f"got {got.size} distinct values {fmt(got)}")
    fail_if(problems, "Cluster the non-zero weights only, into 2**bits clusters, starting from centroids evenly "
                      "spaced between the smallest and the largest non-zero weight (KMeans with init=those "
                      "centroids, n_init=1):")


def fmt(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(f"{v:.4g}" for v in values[:limit])
    return f"[{shown}{', ...' if values.size > limit else ''}]"
