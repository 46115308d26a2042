"""Low rank (deploy/lowrank.py): truncated SVD, rank by energy, a Conv2d as two convs (8 points)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grader.suites.common import fail_if

pytestmark = pytest.mark.part("lowrank")

FILE = "deploy/lowrank.py"


def matrix(seed: int, shape) -> np.ndarray:
    """A float32 matrix with clearly separated singular values (so the best rank-r approximation is unique)."""
    rng = np.random.default_rng(seed)
    m, n = shape
    u, _ = np.linalg.qr(rng.normal(size=(m, m)))
    v, _ = np.linalg.qr(rng.normal(size=(n, n)))
    s = 2.0 ** -np.arange(min(m, n), dtype=float) * 10
    return (u[:, :len(s)] * s @ v[:, :len(s)].T).astype(np.float32)


@pytest.mark.points(3, todo=f"{FILE}: truncated_svd")
def test_truncated_svd_is_optimal(student):
    """left @ right has the asked shapes and rank, and its error is the Eckart-Young optimum sqrt(sum of s[r:]**2)."""
    problems = []
    for seed, shape, rank in ((1, (7, 5), 2), (2, (4, 9), 3), (3, (6, 6), 1)):
        w = matrix(seed, shape)
        _, data = student.deploy("truncated_svd", {"matrix": w}, rank=rank)
        left, right = data.get("left", np.zeros(0)), data.get("right", np.zeros(0))
        if left.shape != (shape[0], rank) or right.shape != (rank, shape[1]):
            problems.append(f"matrix {shape}, rank {rank}: expected factors of shapes {(shape[0], rank)} and "
                            f"{(rank, shape[1])}, got {left.shape} and {right.shape}")
            continue
        s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
        optimum = float(np.sqrt((s[rank:] ** 2).sum()))
        error = float(np.linalg.norm(w.astype(np.float64) - left.astype(np.float64) @ right.astype(np.float64)))
        if not abs(error - optimum) <= 1e-4 * s[0] + 1e-3 * optimum:
            problems.append(f"matrix {shape}, rank {rank}: ||W - left @ right|| is {error:.6g}, the best possible "
                            f"(Eckart-Young) is {optimum:.6g}: keep the {rank} LARGEST singular values with their "
                            "own vectors (columns of U, rows of Vh)")
    fail_if(problems, "truncated_svd(matrix, rank):")


@pytest.mark.points(2, todo=f"{FILE}: rank_for_energy")
def test_rank_for_energy(student):
    """rank_for_energy gives the smallest rank whose singular values hold the asked share of sum(s**2)."""
    s = np.array([4.0, 2.0, 2.0, 1.0], dtype=np.float32)  # energies 16, 4, 4, 1 of 25
    cases = {0.5: 1, 0.64: 1, 0.65: 2, 0.8: 2, 0.9: 3, 0.96: 3, 0.97: 4, 1.0: 4}
    problems = []
    for energy, want in cases.items():
        answer, _ = student.deploy("rank_for_energy", {"s": s}, energy=energy)
        if answer.get("value") != want:
            problems.append(f"energy {energy}: expected rank {want}, got {answer.get('value')!r}")
    fail_if(problems, f"rank_for_energy(s={s.tolist()}, energy):")


@pytest.mark.points(3, todo=f"{FILE}: factorize_conv")
def test_factorize_conv(student):
    """factorize_conv gives a kxk conv with r filters (stride, padding kept) and a 1x1 conv with the bias,
    computing the conv of the best rank-r approximation of the filters."""
    rng = np.random.default_rng(7)
    out, channels, k, rank, stride, padding = 6, 3, 3, 2, 2, 1
    weight = matrix(8, (out, channels * k * k)).reshape(out, channels, k, k)
    bias = rng.normal(size=out).astype(np.float32)
    answer, data = student.deploy("factorize_conv", {"weight": weight, "bias": bias}, rank=rank, stride=stride,
                                  padding=padding)
    layers = answer.get("layers") or [{}, {}]
    want_shapes = {"0.weight": (rank, channels, k, k), "1.weight": (out, rank, 1, 1), "1.bias": (out,)}
    problems = [f"{name}: expected shape {shape}, got {data[name].shape if name in data else 'none'}"
                for name, shape in want_shapes.items() if name not in data or data[name].shape != shape]
    if layers[0].get("stride") != [stride, stride] or layers[0].get("padding") != [padding, padding]:
        problems.append(f"the first conv must keep the layer's stride {stride} and padding {padding}, "
                        f"it has {layers[0].get('stride')} and {layers[0].get('padding')}")
    if layers[0].get("bias"):
        problems.append("the first conv must have no bias (the second one adds the layer's bias)")
    fail_if(problems, "factorize_conv(conv, rank) must return nn.Sequential(kxk conv, 1x1 conv):")
    x = torch.from_numpy(rng.normal(size=(2, channels, 9, 9)).astype(np.float32))
    u, s, vh = np.linalg.svd(weight.reshape(out, -1).astype(np.float64), full_matrices=False)
    best = torch.from_numpy(((u[:, :rank] * s[:rank]) @ vh[:rank]).reshape(weight.shape).astype(np.float32))
    want = F.conv2d(x, best, torch.from_numpy(bias), stride=stride, padding=padding)
    first = F.conv2d(x, torch.from_numpy(data["0.weight"]), None, stride=stride, padding=padding)
    got = F.conv2d(first, torch.from_numpy(data["1.weight"]), torch.from_numpy(data["1.bias"]))
    if not torch.allclose(want, got, rtol=1e-3, atol=1e-4):
        fail_if([f"outputs differ by up to {(want - got).abs().max().item():.3g}"],
                "The two convs do not compute the conv of the best rank-r approximation of the filters "
                "(view the weight as (out, in * k * k), one row per filter):")
