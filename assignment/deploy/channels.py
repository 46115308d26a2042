"""Channel pruning: remove whole filters, so the model gets smaller *and* faster.

Part 1 set single weights to zero. The tensors stayed dense float32, so the
pruned model computes exactly as much as before. Here a whole output channel
of a convolution (one filter) or a whole hidden unit of a fully connected
layer goes at once, and the layer is rebuilt without it: its weight loses a
row, its bias an entry, and every layer that *reads* that channel (its
consumer) loses the matching input. The result is an ordinary, smaller dense
AlexNet that any runtime speeds up.

Which channels go? Those whose filter has the smallest L1 (or L2) norm: a
filter of small weights contributes little to the next layer. If the removed
channels were all zero, the smaller model computes exactly what the big one
did (a zero filter with a zero bias outputs ReLU(0) = 0, which the consumer
multiplies by weights that are now gone).

Consumers in this AlexNet (``net/models.py``): conv ``i`` feeds conv ``i+1``;
the last conv feeds ``fc1`` through max-pooling and ``torch.flatten``, which
lays channel ``c`` out as ``side * side`` consecutive features
``c * side * side ... (c + 1) * side * side - 1``; ``fc1`` feeds ``fc2``,
``fc2`` feeds ``fc3``. The last layer (``fc3``, the classes) is never pruned.

Pruning all at once hurts accuracy; pruning gradually, a little more after
each round of fine-tuning, hurts less. ``linear_schedule``,
``exponential_schedule`` and ``cubic_schedule`` say how much of a layer to
keep at each step.
"""
from typing import Dict, List, Mapping, Tuple

import torch
import torch.nn as nn

NORMS = ("l1", "l2")


def weight_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(name, layer)`` of every ``nn.Conv2d`` and ``nn.Linear`` child, in the order ``forward`` uses them."""
    return [(name, layer) for name, layer in model.named_children() if isinstance(layer, (nn.Conv2d, nn.Linear))]


def consumer_of(model: nn.Module, name: str) -> Tuple[str, nn.Module]:
    """The layer that reads the output channels of layer ``name``: the next weight layer."""
    layers = weight_layers(model)
    names = [n for n, _ in layers]
    if name not in names:
        raise ValueError(f"{name!r} is not a conv or fc layer of the model; its layers are {names}")
    index = names.index(name)
    if index == len(layers) - 1:
        raise ValueError(f"{name} is the last layer (its outputs are the classes): it cannot be pruned")
    return layers[index + 1]


# --------------------------------------------------------------------------- ranking


def filter_scores(weight: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """One score per output channel of ``weight`` (shape ``(out, ...)``): the L1 or L2 norm of its filter."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    # TODO: flatten each filter (`weight.reshape(weight.shape[0], -1)`: one row
    #       per output channel) and return, for every row, the sum of the
    #       absolute values (norm "l1") or the square root of the sum of the
    #       squares (norm "l2"): a float tensor of shape (out,).
    raise NotImplementedError("TODO deploy/channels.py: filter_scores")


def channels_to_keep(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """The indices of the ``keep`` fraction of channels with the largest scores, in increasing order.

    ``keep`` is a fraction from 0 to 1; at least one channel is always kept.
    The number kept is ``max(1, round(keep * n))``; ties go to the lower index.
    """
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"the fraction of channels to keep must be from 0 to 1, got {keep!r}")
    count = max(1, round(keep * scores.numel()))
    # TODO: take the `count` largest scores (`torch.sort(scores, descending=True,
    #       stable=True)` keeps ties in index order) and return their indices
    #       sorted in increasing order (so the kept channels keep their order),
    #       as a torch.long tensor.
    raise NotImplementedError("TODO deploy/channels.py: channels_to_keep")


# --------------------------------------------------------------------------- rebuilding the layers


def smaller_conv(conv: nn.Conv2d, out_index: torch.Tensor, in_index: torch.Tensor) -> nn.Conv2d:
    """A copy of ``conv`` with only the output channels ``out_index`` and the input channels ``in_index``."""
    made = nn.Conv2d(len(in_index), len(out_index), conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     dilation=conv.dilation, bias=conv.bias is not None)
    made.weight.data = conv.weight.data[out_index][:, in_index].clone()
    if conv.bias is not None:
        made.bias.data = conv.bias.data[out_index].clone()
    return made.to(conv.weight.device)


def smaller_linear(linear: nn.Linear, out_index: torch.Tensor, in_index: torch.Tensor) -> nn.Linear:
    """A copy of ``linear`` with only the outputs ``out_index`` and the inputs ``in_index``."""
    made = nn.Linear(len(in_index), len(out_index), bias=linear.bias is not None)
    made.weight.data = linear.weight.data[out_index][:, in_index].clone()
    if linear.bias is not None:
        made.bias.data = linear.bias.data[out_index].clone()
    return made.to(linear.weight.device)


def flattened_features(channels: torch.Tensor, side_area: int) -> torch.Tensor:
    """The inputs of ``fc1`` that come from the conv ``channels``, behind ``torch.flatten``.

    Flattening a ``(C, side, side)`` activation puts channel ``c`` at the
    ``side_area = side * side`` features starting at ``c * side_area``.
    """
    # TODO: return, in increasing order, every feature index f = c * side_area + p
    #       for each kept channel c of `channels` and each position p from 0
    #       to side_area - 1 (a torch.long tensor of len(channels) * side_area).
    #       Hint: `channels[:, None] * side_area + torch.arange(side_area)`, flattened.
    raise NotImplementedError("TODO deploy/channels.py: flattened_features")


def remove_channels(model: nn.Module, name: str, keep_index: torch.Tensor) -> None:
    """Rebuild layer ``name`` with only its output channels ``keep_index``, and repair its consumer.

    The model is changed in place: ``name`` and the layer after it are
    replaced by smaller copies. Outputs of the model do not change when the
    removed channels were all zero (weights and bias).
    """
    layer = getattr(model, name)
    consumer_name, consumer = consumer_of(model, name)
    keep_index = torch.as_tensor(keep_index, dtype=torch.long).to("cpu")
    everything = torch.arange(layer.weight.shape[1])
    # TODO: 1. replace layer `name` by its copy keeping the outputs `keep_index`
    #          and all its inputs: `smaller_conv` or `smaller_linear`
    #          (with `everything` as the input index), set with `setattr(model, name, ...)`;
    #       2. repair the consumer, keeping all its outputs
    #          (`torch.arange(consumer.weight.shape[0])`) and only the inputs
    #          that read a kept channel:
    #          - a conv after a conv, or a Linear after a Linear: input index `keep_index`;
    #          - fc1 after the last conv: the flattened features of the kept channels,
    #            `flattened_features(keep_index, side_area)` where
    #            side_area = consumer.in_features // layer.out_channels
    #            (the positions per channel behind the flatten).
    raise NotImplementedError("TODO deploy/channels.py: remove_channels")


def prune_channels(model: nn.Module, keep: Mapping[str, float], norm: str = "l1") -> Dict[str, int]:
    """Remove the lowest-norm channels of the layers named in ``keep``; return ``{layer: channels left}``.

    ``keep`` maps a layer name (``"conv3"``, ``"fc1"``...) to the fraction of
    its output channels to keep. Layers are pruned in model order, each
    ranked by its own (already repaired) weights.
    """
    names = [name for name, _ in weight_layers(model)]
    unknown = sorted(set(keep) - set(names[:-1]))
    if unknown:
        raise ValueError(f"cannot prune {unknown}: the prunable layers are {names[:-1]} (the last one is the classes)")
    left = {}
    for name in names:
        if name in keep:
            scores = filter_scores(getattr(model, name).weight, norm)
            remove_channels(model, name, channels_to_keep(scores, keep[name]))
            left[name] = getattr(model, name).weight.shape[0]
    return left


# --------------------------------------------------------------------------- gradual schedules
#
# Each schedule is a pure function of the step: the fraction of a layer to
# keep after `step` of `steps` pruning steps, going from 1.0 (step 0) to
# `final` (step `steps` and after).


def _progress(step: int, steps: int) -> float:
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    return min(max(step, 0), steps) / steps


def linear_schedule(step: int, steps: int, final: float) -> float:
    """Keep-fraction falling in equal steps from 1 to ``final``: ``1 - (1 - final) * t`` with ``t = step / steps``."""
    t = _progress(step, steps)
    # TODO: return 1 - (1 - final) * t.
    raise NotImplementedError("TODO deploy/channels.py: linear_schedule")


def exponential_schedule(step: int, steps: int, final: float) -> float:
    """Keep-fraction shrinking by the same factor every step: ``final ** t``."""
    if not 0.0 < final <= 1.0:
        raise ValueError(f"the exponential schedule needs 0 < final <= 1, got {final!r}")
    t = _progress(step, steps)
    # TODO: return final ** t (each step keeps the same fraction of what the previous one kept).
    raise NotImplementedError("TODO deploy/channels.py: exponential_schedule")


def cubic_schedule(step: int, steps: int, final: float) -> float:
    """Zhu and Gupta's schedule (2017): prune fast while much is redundant, slowly near the end.

    ``final + (1 - final) * (1 - t) ** 3`` with ``t = step / steps``.
    """
    t = _progress(step, steps)
    # TODO: return final + (1 - final) * (1 - t) ** 3.
    raise NotImplementedError("TODO deploy/channels.py: cubic_schedule")


SCHEDULES = {"linear": linear_schedule, "exponential": exponential_schedule, "cubic": cubic_schedule}
