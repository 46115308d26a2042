"""Knowledge distillation: let the dense model teach the small one.

After channel pruning or a low-rank factorisation the model has lost some
accuracy. Fine-tuning it on the labels alone wins part of it back; fine-tuning
it to also match the dense model's (the *teacher's*) outputs wins more,
because the teacher's probabilities say more than a label does ("this cat
looks a bit like a dog"). Hinton, Vinyals and Dean (2015):

    loss = alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T))
         + (1 - alpha) * cross_entropy(student, labels)

A temperature ``T > 1`` softens both distributions so the small
probabilities count. Their gradients shrink like ``1 / T**2``, so the soft
term is multiplied by ``T**2`` to keep its weight independent of ``T``.
"""
from typing import Iterable, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """The loss above, averaged over the batch (a scalar tensor that back-propagates into ``student_logits``)."""
    if temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"need temperature > 0 and 0 <= alpha <= 1, got {temperature!r} and {alpha!r}")
    # TODO: 1. soft = F.kl_div(F.log_softmax(student_logits / T, dim=1),
    #                          F.softmax(teacher_logits / T, dim=1), reduction="batchmean") * T**2
    #          ("batchmean" divides by the batch size, as the KL divergence's definition asks;
    #          the teacher is a fixed target: detach it);
    #       2. hard = F.cross_entropy(student_logits, labels);
    #       3. return alpha * soft + (1 - alpha) * hard.
    raise NotImplementedError("TODO deploy/distill.py: distillation_loss")


def distill(student: nn.Module, teacher: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
            optimizer: torch.optim.Optimizer, temperature: float = 4.0, alpha: float = 0.9) -> float:
    """One pass of fine-tuning ``student`` against ``teacher`` over ``batches``; return the mean loss."""
    teacher.eval()
    student.train()
    total, count = 0.0, 0
    for images, labels in batches:
        with torch.no_grad():
            target = teacher(images)
        loss = distillation_loss(student(images), target, labels, temperature, alpha)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(labels), count + len(labels)
    return total / max(count, 1)
