"""The methods the staff recipe adds to the handout's pipeline.

* ``cubic_sparsity``: the gradual pruning schedule of Zhu & Gupta (2017);
* ``prune_to``: per-layer magnitude pruning to given sparsities, weight by
  weight (the handout's ``prune_by_percentile``) or whole kernel slices;
* ``distillation_loss``: knowledge distillation (Hinton et al., 2015);
* ``retrain_dropout``: the dropout rate of Han et al. (2015) for a pruned net;
* ``SharedWeights``: training the shared centroids after k-means with the
  cluster assignment fixed (Han et al., 2016, section 3.2);
* ``reorder_hidden_units``: a function-preserving permutation of the fc
  layers' hidden units that shortens the Huffman-coded index gaps;
* ``fit``: one training loop for all of the above (hooks around the step).

Everything works on the handout's ``net.models.AlexNet``, so the result is a
valid submission. Run from ``solutions/`` (``net``, ``util`` and ``pruning``
are top-level modules there).
"""
import contextlib
import io
from typing import Callable, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from grader.reference import reference

util = reference().util

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(images, student_logits, labels)``."""


def cubic_sparsity(progress: float, initial: float, final: float) -> float:
    """Sparsity after a fraction ``progress`` (0..1) of the pruning ramp: Zhu & Gupta's cubic schedule.

    ``s = final + (initial - final) * (1 - progress)**3``: it prunes fast at
    first, while many redundant weights remain, and slowly near the target.
    """
    progress = min(max(progress, 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


def prune_kernels(module: nn.Conv2d, sparsity: float) -> None:
    """Zero the ``sparsity`` percent of kernel slices (one input, one output channel) with the smallest L2 norm."""
    weight = module.weight.data
    norms = weight.flatten(2).norm(dim=2)
    threshold = torch.quantile(norms.flatten(), sparsity / 100.0)
    weight.masked_fill_((norms < threshold)[..., None, None], 0.0)


def prune_to(model: nn.Module, sparsities: Mapping[str, float], kernel_layers: Collection[str] = ()) -> None:
    """Prune each layer named in ``sparsities`` to that many percent zeros (already-zero weights count).

    Layers in ``kernel_layers`` lose whole kernel slices, the others single
    weights (the handout's ``prune_by_percentile``, its printing silenced).
    """
    layers = dict(model.prunable_layers())
    for name in kernel_layers:
        prune_kernels(layers[name], sparsities[name])
    with contextlib.redirect_stdout(io.StringIO()):
        # prune_by_percentile takes the percentage KEPT (the handout's q), so 100 - sparsity.
        model.prune_by_percentile({k: 100.0 - v for k, v in sparsities.items() if k not in kernel_layers})


def sparsity_of(model: nn.Module) -> Dict[str, float]:
    """Percentage of zero weights in each conv and fc layer."""
    return {name: 100.0 * float((m.weight == 0).float().mean()) for name, m in model.prunable_layers()}


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                      alpha: float, temperature: float) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels)``.

    The KL divergence is averaged over the batch; ``T^2`` keeps the soft
    targets' gradients on the scale of the hard ones (Hinton et al., 2015).
    """
    soft = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    return alpha * temperature ** 2 * soft + (1.0 - alpha) * F.cross_entropy(student, labels)


def distilled(teacher: Optional[nn.Module], alpha: float, temperature: float) -> Loss:
    """The training loss: distillation from ``teacher`` (in eval mode), or plain cross-entropy without one."""
    if teacher is None or alpha == 0:
        return lambda images, logits, labels: F.cross_entropy(logits, labels)
    teacher.eval()

    def loss(images: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            targets = teacher(images)
        return distillation_loss(logits, targets, labels, alpha, temperature)
    return loss


def retrain_dropout(model: nn.Module, original: float, layers: Sequence[str] = ("fc1", "fc2")) -> float:
    """Han et al. (2015): ``D_r = D_o * sqrt(C_r / C_o)``, with C the connections left in the layers dropout feeds."""
    modules = dict(model.prunable_layers())
    kept = sum(int(torch.count_nonzero(modules[n].weight)) for n in layers)
    total = sum(modules[n].weight.numel() for n in layers)
    return original * (kept / total) ** 0.5


def fit(model: nn.Module, data: util.ImageSet, device: torch.device, epochs: int, optimizer: torch.optim.Optimizer,
        loss: Loss, scheduler=None, before_step: Optional[Callable[[], None]] = None,
        after_step: Optional[Callable[[], None]] = None, batch_size: int = 128,
        generator: Optional[torch.Generator] = None, progress: bool = True,
        after_epoch: Optional[Callable[[int], None]] = None) -> None:
    """Train ``model`` for ``epochs`` epochs.

    ``before_step`` runs between backward and the optimizer step,
    ``after_step`` after it, ``after_epoch(epoch)`` after each epoch.
    """
    steps = -(-len(data) // batch_size)
    for epoch in range(epochs):
        model.train()
        bar = tqdm(util.batches(data, batch_size, device, train=True, generator=generator), total=steps,
                   desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for images, labels in bar:
            model.zero_grad(set_to_none=True)
            optimizer.zero_grad(set_to_none=True)
            value = loss(images, model(images), labels)
            value.backward()
            if before_step is not None:
                before_step()
            optimizer.step()
            if after_step is not None:
                after_step()
            if scheduler is not None:
                scheduler.step()
        bar.close()
        if after_epoch is not None:
            after_epoch(epoch)


class SharedWeights:
    """The shared layers of a model as centroids and fixed cluster labels, so that the centroids can be trained.

    For each conv and fc layer: the positions of its non-zero weights, the
    sorted distinct non-zero values (the centroids, a trainable tensor) and the
    label of each position. The gradient of a centroid is the sum of the
    gradients of the weights in its cluster (Han et al., 2016); after each step
    ``write`` puts ``centroids[labels]`` back into the weights, so a layer
    never holds more distinct non-zero values than it had centroids and
    pruned weights stay exactly 0.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers: List[Tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for _, module in model.prunable_layers():
            flat = module.weight.data.view(-1)
            positions = torch.nonzero(flat).view(-1)
            centroids, labels = torch.unique(flat[positions], return_inverse=True)
            self.layers.append((module, positions, labels, centroids.clone().requires_grad_(True)))

    def centroids(self) -> List[torch.Tensor]:
        """The trainable centroid tensors, one per layer (give them to an optimizer)."""
        return [centroids for *_, centroids in self.layers]

    def gather_gradients(self) -> None:
        """Set each centroid's gradient to the sum of its weights' gradients."""
        for module, positions, labels, centroids in self.layers:
            grad = module.weight.grad.view(-1)[positions]
            centroids.grad = torch.zeros_like(centroids).index_add_(0, labels, grad)

    @torch.no_grad()
    def write(self) -> None:
        """Rebuild every shared weight from its centroids."""
        for module, positions, labels, centroids in self.layers:
            module.weight.data.view(-1)[positions] = centroids[labels]


def finetune_centroids(model: nn.Module, data: util.ImageSet, device: torch.device, epochs: int, lr: float,
                       loss: Loss, batch_size: int = 128, generator: Optional[torch.Generator] = None,
                       progress: bool = True, after_epoch: Optional[Callable[[int], None]] = None) -> None:
    """Train only the shared centroids and the biases of ``model`` (Adam, cosine decay), weights rebuilt each step."""
    shared = SharedWeights(model)
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    optimizer = torch.optim.Adam(shared.centroids() + biases, lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * -(-len(data) // batch_size)))
    fit(model, data, device, epochs, optimizer, loss, scheduler, before_step=shared.gather_gradients,
        after_step=shared.write, batch_size=batch_size, generator=generator, progress=progress,
        after_epoch=after_epoch)


@torch.no_grad()
def reorder_hidden_units(model: nn.Module, pairs: Sequence[Tuple[str, str]] = (("fc1", "fc2"), ("fc2", "fc3"))) -> None:
    """Permute the hidden units between consecutive fc layers, the units with the most non-zero weights first.

    Unit ``i`` of ``producer`` is row ``i`` of its weight and bias and column
    ``i`` of ``consumer``'s weight; permuting all three together leaves the
    network's function unchanged. The reference format codes a column of an
    fc weight (CSC) as gaps between the rows of its non-zeros, so putting the
    dense rows together makes the gaps, and their Huffman codes, shorter.
    """
    layers = dict(model.prunable_layers())
    for producer, consumer in pairs:
        p, c = layers[producer], layers[consumer]
        order = torch.argsort(torch.count_nonzero(p.weight, dim=1), descending=True, stable=True)
        p.weight.copy_(p.weight[order])
        p.bias.copy_(p.bias[order])
        c.weight.copy_(c.weight[:, order])
