"""Distillation (deploy/distill.py): the loss on known logits and its temperature scaling (4 points)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grader.suites.common import fail_if

pytestmark = pytest.mark.part("distill")

TODO = "deploy/distill.py: distillation_loss"


def logits(seed: int):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(6, 5, generator=generator) * 3, torch.randn(6, 5, generator=generator) * 3,
            torch.randint(0, 5, (6,), generator=generator))


def expected(student_logits, teacher_logits, labels, temperature, alpha):
    """The loss, written out from its definition: sum p_t (log p_t - log p_s) per image, averaged."""
    p_t = F.softmax(teacher_logits / temperature, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(student_logits / temperature, 1))).sum(1).mean()
    return alpha * temperature ** 2 * kl + (1 - alpha) * F.cross_entropy(student_logits, labels)


@pytest.mark.points(2, todo=TODO)
def test_loss_on_known_logits(student):
    """distillation_loss equals alpha * T**2 * KL(teacher || student at T) + (1 - alpha) * cross-entropy."""
    problems = []
    for seed, temperature, alpha in ((1, 4.0, 0.9), (2, 2.0, 0.5), (3, 1.0, 0.0), (4, 3.0, 1.0)):
        s, t, y = logits(seed)
        want = float(expected(s, t, y, temperature, alpha))
        answer, _ = student.deploy("distillation_loss", {"student": s.numpy(), "teacher": t.numpy(),
                                                         "labels": y.numpy()}, temperature=temperature, alpha=alpha)
        got = answer.get("value")
        if not isinstance(got, float) or not np.isclose(got, want, rtol=1e-4, atol=1e-6):
            problems.append(f"T={temperature}, alpha={alpha}: expected {want:.6g}, got {got!r}")
    fail_if(problems, "distillation_loss(student_logits, teacher_logits, labels, T, alpha) on 6 images, 5 classes:")


@pytest.mark.points(2, todo=TODO)
def test_gradient_reaches_the_student_only(student):
    """The loss back-propagates into the student's logits with the gradient of the definition (T**2 scaling)."""
    s, t, y = logits(5)
    reference = s.clone().requires_grad_(True)
    expected(reference, t, y, 5.0, 0.7).backward()
    _, data = student.deploy("distillation_loss", {"student": s.numpy(), "teacher": t.numpy(), "labels": y.numpy()},
                             temperature=5.0, alpha=0.7)
    grad = data.get("grad", np.zeros(0))
    if grad.shape != tuple(s.shape) or not np.allclose(grad, reference.grad.numpy(), rtol=1e-3, atol=1e-6):
        ratio = (np.abs(grad).sum() / max(float(reference.grad.abs().sum()), 1e-12)) if grad.shape == s.shape else 0
        fail_if([f"the gradient with respect to the student's logits is off (its size is {ratio:.3g} times the "
                 "expected one; the soft term must be multiplied by T**2)"], "With T=5, alpha=0.7:")
