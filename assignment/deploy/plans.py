"""PROVIDED: plans, the sequences of Part 2's steps that the optimiser tries (``deploy/optimiser.py``).

A *plan* is a tuple of ``Step``s applied in order to the starting model:
structural steps first, which change what is computed (``channels``:
remove channels, ``lowrank``: factorise fc1 and fc2, ``distill``: fine-tune
against the starting model), then at most one number format, which changes
how it is computed and stored (``FORMATS``). The empty plan is the starting
model itself, the reference every other plan is compared with.

``candidate_formats(profile)`` lists the formats a machine can run at all:
no INT8 engine, no INT8 in PyTorch; no ONNX Runtime, no ONNX. Whether a
format is *worth* it is left to measurement. ``build`` applies a plan with
your own functions from ``deploy/channels.py``, ``lowrank.py``,
``distill.py``, ``int8.py`` and ``onnx_int8.py``, and saves the result.

Nothing to do in this file.
"""
import copy
import dataclasses
import math
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

import util
from deploy import legacy_quant, report
from deploy.hardware import HardwareProfile

# Your deploy/ modules are imported inside the functions that use them, so that
# the optimiser's decision (deploy/optimiser.py) runs while their TODOs are open.

FLOAT_FORMATS = ("float32", "float16", "bfloat16")
FORMATS = FLOAT_FORMATS + ("int8_dynamic", "int8_static", "onnx", "onnx_int8")
"""Number formats: PyTorch float32/16 and bfloat16, INT8 in PyTorch (Linears only, or static, one per
engine: ``int8_static:x86``), ONNX Runtime in float32 and in INT8."""
STRUCTURAL = ("channels", "lowrank", "distill")
CONV_LAYERS, FC_LAYERS = ("conv2", "conv3", "conv4", "conv5"), ("fc1", "fc2")


@dataclasses.dataclass(frozen=True)
class Step:
    kind: str
    """One of ``STRUCTURAL`` or ``"format"``."""
    value: str
    """``channels``: ``"CONV/FC"`` (the fraction of conv2-conv5's channels and of fc1/fc2's units kept);
    ``lowrank``: the energy kept; ``distill``: epochs; ``format``: one of ``FORMATS`` (``int8_static:ENGINE``)."""

    def label(self) -> str:
        return self.value if self.kind == "format" else f"{self.kind}={self.value}"


Plan = Tuple[Step, ...]


def plan_name(plan: Plan) -> str:
    """``channels=0.5/0.25+distill=1+onnx_int8``; the empty plan is ``reference``."""
    return "+".join(step.label() for step in plan) or "reference"


def parse_plan(text: str) -> Plan:
    """The inverse of ``plan_name``, for plans given on the command line."""
    if text == "reference":
        return ()
    plan = []
    for label in text.split("+"):
        kind, equals, value = label.partition("=")
        step = Step(kind, value) if equals else Step("format", label)
        check_step(step)
        plan.append(step)
    return tuple(plan)


def check_step(step: Step) -> None:
    """Refuse a step that ``build`` could not apply, saying what would be right."""
    if step.kind == "format":
        name, _, engine = step.value.partition(":")
        if name not in FORMATS or (engine and name != "int8_static"):
            raise ValueError(f"unknown number format {step.value!r}; the formats are {', '.join(FORMATS)} "
                             "(int8_static:ENGINE names an INT8 engine)")
        return
    if step.kind not in STRUCTURAL:
        raise ValueError(f"unknown step {step.kind!r}; the steps are {', '.join(STRUCTURAL)} and the formats")
    try:
        numbers = [float(part) for part in step.value.split("/")]
    except ValueError:
        numbers = []
    wanted = {"channels": (2, "two fractions CONV/FC in (0, 1], such as 0.5/0.25"),
              "lowrank": (1, "one energy in (0, 1], such as 0.9"), "distill": (1, "whole epochs, such as 1")}
    count, text = wanted[step.kind]
    good = len(numbers) == count and (all(0 < n <= 1 for n in numbers) if step.kind != "distill"
                                      else numbers[0] >= 0 and numbers[0].is_integer())
    if not good:
        raise ValueError(f"{step.kind}={step.value}: expected {text}")


def candidate_formats(profile: HardwareProfile) -> List[str]:
    """Every number format ``profile``'s machine can run (float32 first): what to measure, not what is fast."""
    formats = list(FLOAT_FORMATS)
    if profile.int8_engines:
        formats.append("int8_dynamic")
        formats += [f"int8_static:{engine}" for engine in profile.int8_engines if engine in legacy_quant.BACKENDS]
    if profile.onnxruntime:
        formats += ["onnx", "onnx_int8"]
    return formats


# --------------------------------------------------------------------------- applying a plan


class Cast(nn.Module):
    """Run ``model`` in ``dtype`` (float16, bfloat16): the input is cast on the way in, the logits back to float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = copy.deepcopy(model).to(dtype).eval(), dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.to(self.dtype)).float()


@dataclasses.dataclass
class Workshop:
    """What ``build`` needs besides the plan: the starting model, data, and where files go."""
    start: nn.Module
    train_set: util.ImageSet
    folder: Path
    batch_size: int = 128
    lr: float = 0.01
    seed: int = 42
    calibration_batches: Optional[int] = None
    """Training batches for INT8 calibration (default: ``int8.CALIBRATION_BATCHES``)."""
    built: Dict[str, nn.Module] = dataclasses.field(default_factory=dict)
    """Structural models already made, by plan name: a plan and its variants in other formats share one."""

    def calibration(self) -> List[torch.Tensor]:
        from deploy import int8
        batches = util.batches(self.train_set, self.batch_size, torch.device("cpu"))
        return [images for images, _ in batches][:self.calibration_batches or int8.CALIBRATION_BATCHES]


def fine_tune(model: nn.Module, teacher: nn.Module, workshop: Workshop, epochs: int) -> None:
    """Distil ``model`` from ``teacher`` for ``epochs`` epochs (SGD, momentum 0.9, cosine learning rate)."""
    from deploy import distill
    optimizer = torch.optim.SGD(model.parameters(), lr=workshop.lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs, 1))
    generator = util.set_seed(workshop.seed)
    for _ in range(epochs):
        distill.distill(model, teacher, util.batches(workshop.train_set, workshop.batch_size, torch.device("cpu"),
                                                     True, generator), optimizer)
        schedule.step()
    model.eval()


def apply_structure(model: nn.Module, step: Step, workshop: Optional[Workshop]) -> nn.Module:
    """A new model: ``model`` changed by one structural step (only ``distill`` needs the ``workshop``)."""
    from deploy import channels, lowrank
    changed = copy.deepcopy(model)
    if step.kind == "channels":
        conv, fc = (float(part) for part in step.value.split("/"))
        channels.prune_channels(changed, {**dict.fromkeys(CONV_LAYERS, conv), **dict.fromkeys(FC_LAYERS, fc)})
        if hasattr(changed, "dropout"):  # fewer hidden units need less dropout (Han et al. 2015: sqrt of the kept)
            changed.dropout = model.dropout * math.sqrt(fc)
    elif step.kind == "lowrank":
        ranks = {}
        for name in FC_LAYERS:
            weight = getattr(changed, name).weight.detach()
            rank = lowrank.chosen_rank(weight, float(step.value))
            if rank * sum(weight.shape) < weight.numel():  # only where the two factors are cheaper
                ranks[name] = rank
        lowrank.low_rank(changed, ranks)
    else:
        fine_tune(changed, workshop.start, workshop, int(float(step.value)))
    return changed.eval()


def structure(plan: Plan, workshop: Workshop) -> nn.Module:
    """The float model of ``plan``'s structural steps, made once per workshop and reused."""
    steps = tuple(step for step in plan if step.kind != "format")
    name = plan_name(steps)
    if name not in workshop.built:
        workshop.built[name] = (apply_structure(structure(steps[:-1], workshop), steps[-1], workshop)
                                if steps else workshop.start.eval())
    return workshop.built[name]


def build(plan: Plan, workshop: Workshop) -> Tuple[report.Subject, Path]:
    """Apply ``plan``; return what to measure (a model or an ONNX file) and the file it was saved to."""
    from deploy import int8, onnx_int8
    for step in plan:
        check_step(step)
    formats = [step.value for step in plan if step.kind == "format"]
    if len(formats) > 1 or (formats and plan[-1].kind != "format"):
        raise ValueError(f"{plan_name(plan)}: a plan has at most one number format, and it comes last")
    model = structure(plan, workshop)
    format_name, _, engine = (formats[0] if formats else "float32").partition(":")
    stem = plan_name(plan).replace("/", "_").replace(":", "-")  # a file name on any system
    if format_name in ("onnx", "onnx_int8"):
        float_path = workshop.folder / f"{stem}{'' if format_name == 'onnx' else '_float'}.onnx"
        onnx_int8.export_onnx(model, torch.zeros(report.EXAMPLE_SHAPE), float_path)
        if format_name == "onnx":
            return float_path, float_path
        int8_path = onnx_int8.quantize_onnx(float_path, workshop.folder / f"{stem}.onnx", workshop.calibration())
        float_path.unlink()
        return int8_path, int8_path
    if format_name in ("float16", "bfloat16"):
        model = Cast(model, getattr(torch, format_name))
    elif format_name == "int8_dynamic":
        model = int8.quantize_linears(model)
    elif format_name == "int8_static":
        model = int8.quantize_static(model, workshop.calibration(), engine or "x86")
    return model, report.save(model, workshop.folder / f"{stem}.pt")


def combined(structures: Iterable[Plan], formats: Sequence[str]) -> List[Plan]:
    """Every structural plan followed by each format (float32 stands for no format step)."""
    return [tuple(steps) + ((Step("format", fmt),) if fmt != "float32" else ())
            for steps in structures for fmt in formats]


Measure = Callable[[str, report.Subject, Path], Dict[str, object]]
Build = Callable[[Plan], Tuple[report.Subject, Optional[Path]]]
