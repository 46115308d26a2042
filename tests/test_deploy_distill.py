"""The distillation loss (solutions/deploy/distill.py) on known logits."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from deploy import distill


def test_known_values():
    labels = torch.tensor([0])
    same = torch.tensor([[2.0, 0.0]])
    assert distill.distillation_loss(same, same, labels, 4.0, 1.0).item() == pytest.approx(0.0, abs=1e-5)
    assert distill.distillation_loss(same, same, labels, 4.0, 0.0).item() == pytest.approx(math.log(1 + math.exp(-2)))
    # student uniform, teacher certain-ish at T=1: KL = sum p log(p / 0.5)
    p = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    kl = float((p * (p / 0.5).log()).sum())
    uniform = torch.tensor([[1.0, 1.0]])
    assert distill.distillation_loss(uniform, same, labels, 1.0, 1.0).item() == pytest.approx(kl, rel=1e-5)


def test_soft_term_is_scaled_by_t_squared():
    generator = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, generator=generator), torch.randn(4, 5, generator=generator)
    labels = torch.tensor([0, 1, 2, 3])
    for temperature in (1.0, 3.0):
        kl = F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1), reduction="batchmean")
        got = distill.distillation_loss(s, t, labels, temperature, 1.0)
        assert got.item() == pytest.approx(float(kl) * temperature ** 2, rel=1e-5)


def test_gradient_flows_to_the_student_only():
    s, t = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    distill.distillation_loss(s, t, torch.tensor([0, 1, 2])).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_distill_pass_runs_and_refuses_bad_settings():
    torch.manual_seed(0)
    student, teacher = nn.Linear(6, 3), nn.Linear(6, 3)
    batches = [(torch.randn(4, 6), torch.randint(0, 3, (4,))) for _ in range(3)]
    loss = distill.distill(student, teacher, batches, torch.optim.SGD(student.parameters(), lr=0.1))
    assert math.isfinite(loss) and loss > 0
    with pytest.raises(ValueError, match="temperature"):
        distill.distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), 0.0)
