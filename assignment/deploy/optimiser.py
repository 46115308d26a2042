"""A hardware-aware optimiser: measure what Part 2's steps give on this machine, then pick a plan for a target.

    python -m deploy.optimiser --data-dir DATA --model saves/model_after_retraining.ptmodel \
        --target balanced [--max-drop 3] [--max-bytes N] [--max-latency-ms MS] \
        [--structures auto | channels=0.5/0.25+distill=1,...] [--profile machine.json] [--out saves/deploy/optimiser]

Which compression is best depends on the machine and on what you want. INT8
is fast where the CPU has an INT8 engine; float16 halves the file but can run
*slower* than float32 on a CPU without half-precision kernels; removing
channels helps everywhere but costs accuracy. So the optimiser assumes
nothing about speed. It works in two stages:

1. **Formats.** Every number format the machine can run (``plans.candidate_formats``
   of the ``HardwareProfile``) is applied to the starting model and measured
   with ``deploy/report.py``: accuracy, bytes, latency against the starting
   model (the *reference*).
2. **Structure.** Each structural plan (``--structures``: channel pruning,
   low rank, distillation; ``auto`` proposes channel-pruning plans that stage
   1's numbers say could meet the size and latency limits) is built once, then
   measured in each format that
   stage 1 found *useful for the target* (float32 too, if it was): those on
   the Pareto front of accuracy against latency (target ``speed``), against
   bytes (``size``), or either (``accuracy``, ``balanced``). A format that
   measured slower and no more accurate than another is not tried again.

Then it keeps the candidates that meet the constraints and picks the best
for the target; that choice is what you write below. Everything goes to
``OUT/optimiser.json`` and ``optimiser.md`` with a scatter plot,
``optimiser.png``: every candidate, the Pareto fronts, the chosen plan and why.
"""
import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch.nn as nn

import util
from deploy import plans, report
from deploy.hardware import HardwareProfile

Row = Dict[str, object]
"""A measured candidate: ``report.measure``'s dictionary (``name``, ``accuracy`` in percent, ``bytes``,
``latency_ms``, ``latency_ratio`` to the reference, ...) plus its ``plan``, ``format`` and ``stage``."""
TARGETS = ("speed", "size", "accuracy", "balanced")


@dataclasses.dataclass(frozen=True)
class Constraints:
    """Limits a chosen plan must meet; ``None`` means no limit. Every limit is inclusive."""
    max_accuracy_drop: Optional[float] = 3.0
    """Percentage points below the reference's accuracy."""
    max_bytes: Optional[int] = None
    """Bytes of the saved file."""
    max_latency_ms: Optional[float] = None
    """Median milliseconds for one image at ``report.LATENCY_THREADS`` thread."""


CONSTRAINTS = tuple(field.name for field in dataclasses.fields(Constraints))


# --------------------------------------------------------------------------- the decision (your part)


def broken_constraints(row: Row, reference: Row, constraints: Constraints) -> List[str]:
    """The names of the constraints ``row`` breaks, in the order of ``CONSTRAINTS`` (empty: it meets all).

    The accuracy drop is ``reference["accuracy"] - row["accuracy"]``: a row
    more accurate than the reference has a negative drop. A row exactly at a
    limit meets it.
    """
    # TODO: start from an empty list; for each constraint that is not None,
    #       append its name ("max_accuracy_drop", "max_bytes", "max_latency_ms")
    #       when the row goes past it:
    #         - the drop (see above) is greater than max_accuracy_drop,
    #         - row["bytes"] is greater than max_bytes,
    #         - row["latency_ms"] is greater than max_latency_ms.
    #       Return the list.
    raise NotImplementedError("TODO deploy/optimiser.py: broken_constraints")


def ranking_key(row: Row, reference: Row, target: str) -> Tuple[float, ...]:
    """A sort key for ``target``: the best row has the smallest key.

    - ``speed``: the lowest latency ratio; ties go to higher accuracy, then fewer bytes;
    - ``size``: the fewest bytes; ties go to higher accuracy, then the lower latency ratio;
    - ``accuracy``: the highest accuracy; ties go to the lower latency ratio, then fewer bytes;
    - ``balanced``: the lowest geometric mean of the latency ratio and the bytes ratio
      (``row["bytes"] / reference["bytes"]``), so 4x faster and 4x smaller ties with
      16x faster at the same size; ties go to higher accuracy.
    """
    # TODO: return a tuple for each target as described above; negate the
    #       accuracy where higher is better (a smaller key wins). For balanced,
    #       the first entry is math.sqrt(latency_ratio * bytes_ratio).
    #       An unknown target raises ValueError naming the TARGETS.
    raise NotImplementedError("TODO deploy/optimiser.py: ranking_key")


def choose(rows: Sequence[Row], target: str, constraints: Constraints) -> Optional[Row]:
    """The best row for ``target`` among those that break no constraint, or ``None`` if none is left.

    ``rows[0]`` is the reference (the starting model): every drop is measured
    from it. Rows whose keys tie are told apart by their ``name`` (the
    alphabetically first wins), so the choice never depends on their order.
    """
    # TODO: reference = rows[0]; keep the rows for which broken_constraints is
    #       empty; return None if none is kept, else the kept row with the
    #       smallest (ranking_key(row, reference, target), row["name"]).
    raise NotImplementedError("TODO deploy/optimiser.py: choose")


# --------------------------------------------------------------------------- the search (provided)


def useful_formats(format_rows: Sequence[Row], target: str) -> List[str]:
    """The formats of stage 1 worth combining with structural plans: those on the Pareto front(s) of the target."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r} is not one of {', '.join(TARGETS)}")
    costs = {"speed": ("latency_ratio",), "size": ("bytes",)}.get(target, ("latency_ratio", "bytes"))
    on_front = {row["name"] for cost in costs for row in report.pareto_front(format_rows, cost)}
    return [row["format"] for row in format_rows if row["name"] in on_front]


Propose = Callable[[Sequence[Row], Sequence[str]], Sequence[plans.Plan]]
"""Stage 2's structural plans from stage 1's rows and the useful formats (``propose``, or a fixed list)."""


def search(profile: HardwareProfile, structures: Union[Sequence[plans.Plan], Propose], target: str,
           build: plans.Build, measure: plans.Measure, measured: Optional[Dict[str, Row]] = None,
           log=print) -> List[Row]:
    """Stage 1 then stage 2 (see the module's text); the rows in the order measured, the reference first.

    ``build(plan)`` gives a subject and its file, ``measure(name, subject, path)``
    a row: ``plans.build`` and ``report.measure`` in a real run, or anything
    with the same form in a test. ``structures`` is a list of plans or a
    function of stage 1's rows and useful formats that proposes them.
    ``measured`` holds rows from an earlier run by name (a resumed run): those
    plans are neither built nor measured again.
    """
    measured = {} if measured is None else measured
    rows: List[Row] = []

    def run(plan: plans.Plan, fmt: str, stage: int) -> Row:
        name = plans.plan_name(plan)
        if name not in measured:
            subject, path = build(plan)
            measured[name] = {**measure(name, subject, path), "plan": [dataclasses.asdict(step) for step in plan],
                              "format": fmt, "stage": stage}
        rows.append(measured[name])
        log(report.summary_line(rows[-1]))
        return rows[-1]

    log(f"--- stage 1: every format this machine runs ({profile.describe()})")
    format_rows = [run(plans.combined([()], [fmt])[0], fmt, 1) for fmt in plans.candidate_formats(profile)]
    keep = useful_formats(format_rows, target)
    log(f"useful for {target}, as measured: {', '.join(keep)}")
    if callable(structures):
        structures = structures(format_rows, keep)
        log(f"proposed: {', '.join(map(plans.plan_name, structures)) or 'nothing (no plan could meet the limits)'}")
    for structure in structures:
        log(f"--- stage 2: {plans.plan_name(structure)}")
        for fmt, plan in zip(keep, plans.combined([structure], keep)):
            run(plan, fmt, 2)
    return rows


PROPOSED_CHANNELS = ("0.75/0.5", "0.5/0.5", "0.5/0.25", "0.25/0.25")
"""The channel-pruning grid of ``--structures auto`` (conv2-conv5 / fc1-fc2 kept), least removed first."""


def propose(start: nn.Module, constraints: Constraints, epochs: int, count: int) -> Propose:
    """``--structures auto``: up to ``count`` plans of ``PROPOSED_CHANNELS`` (then ``epochs`` of distillation),
    the least pruned first, that could meet ``max_bytes`` and ``max_latency_ms`` in one of the useful formats.

    "Could" is an estimate: the plan's parameters and MACs, counted on a pruned
    copy (no training), times that format's bytes and milliseconds measured in
    stage 1 for the whole model. Keeping the least pruned plans that fit keeps
    the most accuracy; what each plan really gives is measured afterwards.
    """
    def proposals(format_rows: Sequence[Row], useful: Sequence[str]) -> List[plans.Plan]:
        reference, by_format = format_rows[0], {row["format"]: row for row in format_rows}
        chosen: List[plans.Plan] = []
        for keep in PROPOSED_CHANNELS:
            pruned = plans.apply_structure(start, plans.Step("channels", keep), workshop=None)
            params = report.parameter_count(pruned) / reference["parameters"]
            work = report.macs(pruned) / reference["macs"]
            if any((constraints.max_bytes is None or by_format[fmt]["bytes"] * params <= constraints.max_bytes)
                   and (constraints.max_latency_ms is None
                        or by_format[fmt]["latency_ms"] * work <= constraints.max_latency_ms) for fmt in useful):
                chosen.append((plans.Step("channels", keep),) + ((plans.Step("distill", str(epochs)),) if epochs else ()))
            if len(chosen) == count:
                break
        return chosen
    return proposals


def reason(chosen: Optional[Row], rows: Sequence[Row], target: str, constraints: Constraints) -> str:
    """Why ``chosen`` was chosen (or why nothing was), in one paragraph."""
    start = rows[0]
    refused = {row["name"]: broken_constraints(row, start, constraints) for row in rows}
    refused = {name: broken for name, broken in refused.items() if broken}
    limits = ", ".join(f"{name} {value}" for name, value in dataclasses.asdict(constraints).items()
                       if value is not None) or "no constraints"
    out = (f"{len(refused)} of {len(rows)} candidates break a constraint ({limits})"
           + (": " + "; ".join(f"{name} ({', '.join(broken)})" for name, broken in sorted(refused.items()))
              if refused else ""))
    if chosen is None:
        return f"No candidate meets the constraints. {out}."
    drop = start["accuracy"] - chosen["accuracy"]
    gain = (f"{chosen['accuracy']:.2f}% ({abs(drop):.2f} points {'below' if drop > 0 else 'above'} the "
            f"reference's {start['accuracy']:.2f}%), {start['bytes'] / chosen['bytes']:.1f}x smaller, "
            f"{1 / chosen['latency_ratio']:.1f}x faster (latency ratio {chosen['latency_ratio']:.3f})")
    return f"For target {target}, {chosen['name']} ranks first among those left: {gain}. {out}."


class Resumable(dict):
    """Measured rows by name, kept in a JSON-lines file so that a stopped run resumes where it was.

    A line is used only if it was measured with the same ``settings`` (model,
    data, seed, ...); the decision flags (target, constraints) may change
    between runs, since they only choose among the rows.
    """

    def __init__(self, path: Path, settings: Dict[str, object]) -> None:
        super().__init__()
        self.path, self.settings = path, settings
        text = path.read_text() if path.is_file() else ""
        self.cut_short = bool(text) and not text.endswith("\n")
        if text:
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short when a run was stopped
                if isinstance(entry, dict) and entry.get("settings") == settings:
                    super().__setitem__(entry["row"]["name"], entry["row"])

    def __setitem__(self, name: str, row: Row) -> None:
        super().__setitem__(name, row)
        with self.path.open("a") as file:
            file.write("\n" * self.cut_short + json.dumps({"settings": self.settings, "row": row}) + "\n")
        self.cut_short = False


# --------------------------------------------------------------------------- the outputs (provided)


def markdown(result: Dict[str, object]) -> str:
    rows, chosen = result["candidates"], result["chosen"]
    lines = [f"# Optimiser: target {result['target']}", "", f"Machine: {result['profile_line']}", "",
             f"**Chosen: {chosen or 'nothing'}.** {result['reason']}", "",
             "| candidate | accuracy | bytes | smaller | latency ms | latency ratio | faster | front | constraints |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        front = "/".join(key for key in ("latency", "size") if row["name"] in result["pareto_front"][key])
        lines.append(f"| {'**' + row['name'] + '**' if row['name'] == chosen else row['name']} "
                     f"| {row['accuracy']:.2f}% | {row['bytes']:,} | {rows[0]['bytes'] / row['bytes']:.1f}x "
                     f"| {row['latency_ms']:.3f} | {row['latency_ratio']:.3f} | {1 / row['latency_ratio']:.1f}x "
                     f"| {front} | {', '.join(row['broken']) or 'met'} |")
    lines += ["", f"Formats kept for the structural plans (as measured in stage 1): {', '.join(result['useful_formats'])}."]
    return "\n".join(lines) + "\n"


def plot(result: Dict[str, object], path: Path) -> Path:
    """Accuracy against latency ratio; the marker's area grows with the bytes; the chosen plan ringed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["candidates"]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    largest = max(row["bytes"] for row in rows)
    axes.scatter([r["latency_ratio"] for r in rows], [r["accuracy"] for r in rows],
                 s=[20 + 200 * r["bytes"] / largest for r in rows], alpha=0.6)
    for row in rows:
        axes.annotate(row["name"], (row["latency_ratio"], row["accuracy"]), fontsize=6, xytext=(3, 3),
                      textcoords="offset points")
    front = [r for r in rows if r["name"] in result["pareto_front"]["latency"]]
    axes.step([r["latency_ratio"] for r in front], [r["accuracy"] for r in front], where="post", alpha=0.5,
              label="Pareto front (latency)")
    for row in rows:
        if row["name"] == result["chosen"]:
            axes.scatter([row["latency_ratio"]], [row["accuracy"]], s=300, facecolors="none", edgecolors="red",
                         label=f"chosen for {result['target']}")
    axes.set(xscale="log", xlabel=f"latency / reference latency ({report.LATENCY_THREADS} thread)",
             ylabel="test accuracy (%)", title="candidates (marker area: bytes on disk)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def decide(rows: List[Row], profile: HardwareProfile, target: str, constraints: Constraints) -> Dict[str, object]:
    """The optimiser's result as JSON-ready data: every candidate, the fronts, the choice and its reason."""
    chosen = choose(rows, target, constraints)
    for row in rows:
        row["broken"] = broken_constraints(row, rows[0], constraints)
    format_rows = [row for row in rows if row["stage"] == 1]
    return {"target": target, "constraints": dataclasses.asdict(constraints), "profile": profile.to_dict(),
            "profile_line": profile.describe(), "useful_formats": useful_formats(format_rows, target),
            "pareto_front": {"latency": [r["name"] for r in report.pareto_front(rows, "latency_ratio")],
                             "size": [r["name"] for r in report.pareto_front(rows, "bytes")]},
            "chosen": chosen["name"] if chosen else None, "chosen_plan": chosen["plan"] if chosen else None,
            "reason": reason(chosen, rows, target, constraints),
            "candidates": [{key: value for key, value in row.items() if key != "confusion_matrix"} for row in rows]}


def write(result: Dict[str, object], folder: Path) -> List[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "optimiser.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / "optimiser.md").write_text(markdown(result))
    return [folder / "optimiser.json", folder / "optimiser.md", plot(result, folder / "optimiser.png")]


def read_profile(path: Path) -> HardwareProfile:
    """A hardware profile from a JSON file (``HardwareProfile.to_dict``'s form), or a ValueError saying what is wrong."""
    if not path.is_file():
        raise ValueError(f"--profile {path} does not exist; write one from HardwareProfile.detect().to_dict(), "
                         "or leave the flag out to use this machine's")
    try:
        values = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--profile {path} is not JSON ({error})") from None
    return HardwareProfile.from_dict(values)


def main() -> None:
    parser = util.common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the model to start from (a .ptmodel written by torch.save)")
    parser.add_argument("--target", choices=TARGETS, default="balanced")
    parser.add_argument("--max-drop", type=float, default=Constraints.max_accuracy_drop,
                        help="accuracy points below the starting model allowed (a negative value: none)")
    parser.add_argument("--max-bytes", type=int, default=None, help="largest file allowed, in bytes")
    parser.add_argument("--max-latency-ms", type=float, default=None, help="slowest median latency allowed")
    parser.add_argument("--structures", default="auto",
                        help="structural plans for stage 2, comma-separated ('' for none), or auto: up to --plans "
                             f"of the channel grid {', '.join(PROPOSED_CHANNELS)} that could meet the limits")
    parser.add_argument("--plans", type=int, default=2, help="how many plans --structures auto proposes")
    parser.add_argument("--distill-epochs", type=int, default=1, help="distillation after each proposed plan")
    parser.add_argument("--profile", help="a hardware profile as JSON (default: detected from this machine)")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate of distillation")
    parser.add_argument("--latency-rounds", type=int, default=20, help="rounds of 10 interleaved runs per latency")
    parser.add_argument("--out", default="saves/deploy/optimiser", help="folder of the results and built models")
    args = parser.parse_args()
    if args.plans < 1 or args.distill_epochs < 0:
        raise ValueError("--plans must be at least 1 and --distill-epochs at least 0")
    fixed = [] if args.structures == "auto" else \
        [plans.parse_plan(text) for text in args.structures.split(",") if text.strip()]
    if any(step.kind == "format" for plan in fixed for step in plan):
        raise ValueError("--structures holds structural steps only (channels, lowrank, distill); "
                         "the formats are the optimiser's to try")
    profile = HardwareProfile.detect() if not args.profile else read_profile(Path(args.profile))
    constraints = Constraints(None if args.max_drop < 0 else args.max_drop, args.max_bytes, args.max_latency_ms)
    util.set_seed(args.seed)
    start = util.load_model(args.model).eval()
    test_set = util.load_cifar10(args.data_dir, train=False).subset(args.subset)
    out = Path(args.out)
    workshop = plans.Workshop(start, util.load_cifar10(args.data_dir, train=True).subset(args.subset),
                              out / "models", args.batch_size, args.lr, args.seed)
    workshop.folder.mkdir(parents=True, exist_ok=True)

    def measure(name, subject, path):
        return report.measure(name, subject, test_set, start, path, rounds=args.latency_rounds, profile=False)

    structures = propose(start, constraints, args.distill_epochs, args.plans) if args.structures == "auto" else fixed
    choosing_only = ("target", "max_drop", "max_bytes", "max_latency_ms", "structures", "plans", "distill_epochs", "log")
    settings = {key: value for key, value in vars(args).items() if key not in choosing_only}
    settings["model_sha256"] = hashlib.sha256(Path(args.model).read_bytes()).hexdigest()
    rows = search(profile, structures, args.target, lambda plan: plans.build(plan, workshop), measure,
                  Resumable(out / "measured.jsonl", settings))
    result = decide(rows, profile, args.target, constraints)
    written = write(result, out)
    print(f"--- chosen: {result['chosen']}\n{result['reason']}\n" + "\n".join(str(path) for path in written))


if __name__ == "__main__":
    util.run_main(main)
