"""The microcontroller track's hidden suite: one check per TODO of ``mcu_facts.TODOS``, worth its points.

    python -m grader.mcu_suite SUBMISSION_DIR [--json RESULTS_JSON]

``SUBMISSION_DIR`` holds the student's ``mcu/binary.py``, ``mcu/budget.py`` and
``mcu/prune.py`` (``mcu_facts.STUDENT_FILES``). They are copied next to the
reference's provided ``mcu/`` files into a fresh folder, and one worker
process (``grader/mcu_worker.py``) runs every requested function on inputs
built here from fixed seeds and sends back arrays and numbers. This module
alone decides the score, comparing those answers with values it computes
itself (formulas written out below, or the reference solution's answer for
``fit_to_budget``). A check is worth its points or 0.

Not yet done (see docs/MCU.md): the worker runs as a plain subprocess with a
time limit, not inside ``grader/box.py``'s bubblewrap box, and the batch
grader (``python -m grader grade``) does not call this suite yet.
"""
import functools
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from grader.mcu_facts import BOARDS, CODE_BYTES, RUNTIME_RESERVE_BYTES, STUDENT_FILES, TODOS
from grader.variants import Bug

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "solutions"
PROVIDED = ("mcu/__init__.py", "mcu/facts.py", "mcu/model.py")
TIMEOUT_S = 180.0
"""Seconds one worker may take for all the checks of a submission (about 3 s of CPU; generous for loaded machines)."""
POINTS = {todo.where: todo.points for todo in TODOS}
SEED = 2024


@dataclass
class Result:
    todo: str
    score: float
    max_score: float
    output: str


def assemble(submission: Path, work: Path, reference: Path = REFERENCE) -> List[str]:
    """Copy the student's files and the provided ones into ``work``; return the student files that are missing."""
    missing = []
    for relative in STUDENT_FILES:
        source = Path(submission) / relative
        if source.is_file() and not source.is_symlink():
            (work / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, work / relative)
        else:
            missing.append(relative)
    for relative in PROVIDED:
        (work / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(reference / relative, work / relative)
    return missing


Answers = List[Tuple[dict, dict]]


def ask_many(jobs: Sequence[Tuple[Path, Sequence[dict], Dict[str, np.ndarray]]]) -> List[Answers]:
    """Run each job's requests on its folder, all in one worker; one ``(numbers, arrays)`` per request.

    ``numbers`` holds ``"error"`` when that request failed. A student's
    submission must be a job of its own (see ``grader/mcu_worker.py``).
    """
    with tempfile.TemporaryDirectory() as exchange:
        command = [sys.executable, "-m", "grader.mcu_worker"]
        for number, (folder, requests, arrays) in enumerate(jobs):
            (Path(exchange) / str(number)).mkdir()
            (Path(exchange) / str(number) / "request.json").write_text(json.dumps(list(requests)))
            np.savez(Path(exchange) / str(number) / "request.npz", **arrays)
            command += [str(folder), str(Path(exchange) / str(number))]
        try:
            done = subprocess.run(command, cwd=REPO, capture_output=True, timeout=TIMEOUT_S * len(jobs))
            failure = None if done.returncode == 0 else f"the process running your code exited with {done.returncode}"
        except subprocess.TimeoutExpired:
            failure = f"stopped after {TIMEOUT_S * len(jobs):g} seconds; these checks take seconds, so your code is probably stuck"
        return [_read(Path(exchange) / str(number), len(requests), failure)
                for number, (_, requests, _) in enumerate(jobs)]


def _read(folder: Path, count: int, failure: Optional[str]) -> Answers:
    """The answers a worker left in ``folder`` (hostile data: checked), or ``count`` times the failure."""
    try:
        numbers = json.loads((folder / "answer.json").read_text())
        with np.load(folder / "answer.npz", allow_pickle=False) as data:
            produced = dict(data)
        if not isinstance(numbers, list) or len(numbers) != count:
            raise ValueError("the worker's answer is malformed")
    except (OSError, ValueError) as error:
        return [({"error": failure or str(error)}, {})] * count
    return [(entry if isinstance(entry, dict) else {"error": "malformed answer"},
             {name.split(":", 1)[1]: value for name, value in produced.items() if name.startswith(f"{i}:")})
            for i, entry in enumerate(numbers)]


# --------------------------------------------------------------------------- inputs and expectations

def _weights(shape, spread: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(-spread, spread, shape)).astype(np.float32)


def _layers() -> List[dict]:
    """A hand-computable three-layer network (names, shapes, weights per channel, MACs)."""
    return [dict(name="conv1", in_shape=[3, 8, 8], out_shape=[5, 4, 4], out_channels=5, fan_in=27, macs=8640),
            dict(name="conv2", in_shape=[5, 4, 4], out_shape=[7, 2, 2], out_channels=7, fan_in=45, macs=5040),
            dict(name="fc", in_shape=[28], out_shape=[10], out_channels=10, fan_in=28, macs=280, out_value_bytes=4)]


def _expected_budget(board: str) -> dict:
    layers = _layers()
    flash = sum(l["out_channels"] * ((l["fan_in"] + 7) // 8) + 8 * l["out_channels"] for l in layers) + CODE_BYTES
    sizes = [int(np.prod(l["in_shape"])) + int(np.prod(l["out_shape"])) * l.get("out_value_bytes", 1) for l in layers]
    latency = sum(l["macs"] for l in layers) * BOARDS[board].cycles_per_mac / BOARDS[board].clock_hz
    return {"flash": flash, "sram": max(sizes) + RUNTIME_RESERVE_BYTES, "latency": latency}


def _close(value, expected: np.ndarray, what: str) -> Optional[str]:
    value = np.asarray(value)
    if value.shape != expected.shape:
        return f"{what} has shape {tuple(value.shape)}, expected {tuple(expected.shape)}"
    if not np.issubdtype(value.dtype, np.number) or not np.all(np.isfinite(value)):
        return f"{what} must be finite numbers"
    if not np.allclose(value.astype(np.float64), expected, rtol=1e-5, atol=1e-6):
        worst = int(np.argmax(np.abs(value.astype(np.float64) - expected)))
        return (f"{what} is wrong: at flat index {worst} it is {value.ravel()[worst]:.6g}, expected "
                f"{expected.ravel()[worst]:.6g}")
    return None


def _number(answer: dict, key: str, expected: float, what: str) -> Optional[str]:
    value = answer.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{what} must return a number, got {value!r:.80}"
    if not np.isclose(float(value), expected, rtol=1e-9, atol=1e-12):
        return f"{what} returned {value!r}, expected {expected!r} for the test network"
    return None


# --------------------------------------------------------------------------- the checks

CONV = _weights((6, 3, 3, 3), 0.9, SEED)
LINEAR = _weights((5, 7), 0.9, SEED + 1)
WIDE = np.concatenate([_weights((4, 12), 2.0, SEED + 2), np.array([[1.0, -1.0, 1.5, -1.5] * 3], np.float32)])
SIGNS = np.where(_weights((3, 21), 1.0, SEED + 3) >= 0, 1.0, -1.0).astype(np.float32)


def _alpha(weight: np.ndarray) -> np.ndarray:
    return np.abs(weight).reshape(len(weight), -1).mean(axis=1).reshape(-1, *([1] * (weight.ndim - 1)))


def check_binarize(answers) -> Optional[str]:
    for (numbers, produced), weight, name in zip(answers, (CONV, LINEAR), ("a conv weight", "a linear weight")):
        if "error" in numbers:
            return f"binarize on {name}: {numbers['error']}"
        grad = np.full(weight.shape, 0.5, np.float32)
        sign = np.where(weight >= 0, 1.0, -1.0)
        problem = (_close(produced.get("out"), sign * _alpha(weight), f"binarize({name}) (sign times the mean |W| "
                                                                      "of each output channel)")
                   or _close(produced.get("grad"), grad * _alpha(weight),
                             f"the gradient reaching {name} through binarize (the STE times alpha)"))
        if problem:
            return problem
    return None


def check_ste(answers) -> Optional[str]:
    numbers, produced = answers[0]
    if "error" in numbers:
        return f"SignSTE.backward: {numbers['error']}"
    grad = np.linspace(-1, 1, WIDE.size, dtype=np.float32).reshape(WIDE.shape)
    return _close(produced.get("grad"), grad * (np.abs(WIDE) <= 1),
                  "SignSTE's gradient (the incoming gradient where |W| <= 1, 0 where |W| > 1)")


def check_pack(answers) -> Optional[str]:
    numbers, produced = answers[0]
    if "error" in numbers:
        return f"pack_signs: {numbers['error']}"
    expected = np.packbits(SIGNS > 0, axis=1, bitorder="little")
    packed = np.asarray(produced.get("packed"))
    if packed.dtype != np.uint8:
        return f"pack_signs must return uint8 bytes, got {packed.dtype}"
    if packed.shape != expected.shape:
        return f"pack_signs of (3, 21) signs has shape {packed.shape}, expected {expected.shape} (ceil(21 / 8) bytes a row)"
    if not np.array_equal(packed, expected):
        row, column = np.argwhere(packed != expected)[0]
        return (f"pack_signs: row {row}, byte {column} is {packed[row, column]:08b}, expected "
                f"{expected[row, column]:08b} (weight i in bit i % 8, bit 0 the least significant, 1 for +1)")
    return None


def _budget_check(key: str, what: str):
    def check(answers) -> Optional[str]:
        for (numbers, _), board in zip(answers, ("uno", "esp32")):
            if "error" in numbers:
                return f"{what}: {numbers['error']}"
            problem = _number(numbers, key, _expected_budget(board)[key], f"{what} on {board}")
            if problem:
                return problem
        return None
    return check


def check_fit(answers, expected) -> Optional[str]:
    for (numbers, _), (wanted, _), case in zip(answers, expected, ("a (20, 8) net on the UNO",
                                                                   "a (32, 48) net on the UNO")):
        if "error" in numbers:
            return f"fit_to_budget on {case}: {numbers['error']}"
        if numbers.get("channels") != wanted["channels"] or numbers.get("removed") != wanted["removed"]:
            return (f"fit_to_budget on {case}: channels {numbers.get('channels')!r:.100} after removing "
                    f"{len(numbers.get('removed') or [])} channels; expected {wanted['channels']} after removing "
                    f"{len(wanted['removed'])}, the first ones {wanted['removed'][:3]} (the weakest channel of "
                    "the conv conv_to_shrink names, one at a time, until the estimate fits)")
    return None


FIT_CASES = ({"op": "fit", "channels": [20, 8], "board": "uno", "seed": SEED},
             {"op": "fit", "channels": [32, 48], "board": "uno", "seed": SEED + 1})

CHECKS: Dict[str, Tuple[List[dict], Dict[str, np.ndarray], Callable]] = {
    "mcu/binary.py: binarize": (
        [{"op": "binarize"}, {"op": "binarize"}],
        {"0:weight": CONV, "0:grad": np.full(CONV.shape, 0.5, np.float32),
         "1:weight": LINEAR, "1:grad": np.full(LINEAR.shape, 0.5, np.float32)}, check_binarize),
    "mcu/binary.py: SignSTE.backward": (
        [{"op": "ste"}], {"0:weight": WIDE, "0:grad": np.linspace(-1, 1, WIDE.size, dtype=np.float32)
                          .reshape(WIDE.shape)}, check_ste),
    "mcu/binary.py: pack_signs": ([{"op": "pack"}], {"0:signs": SIGNS}, check_pack),
    "mcu/budget.py: flash_bytes": ([{"op": "budget", "layers": _layers(), "board": b} for b in ("uno", "esp32")],
                                   {}, _budget_check("flash", "flash_bytes")),
    "mcu/budget.py: sram_bytes": ([{"op": "budget", "layers": _layers(), "board": b} for b in ("uno", "esp32")],
                                  {}, _budget_check("sram", "sram_bytes")),
    "mcu/budget.py: latency_s": ([{"op": "budget", "layers": _layers(), "board": b} for b in ("uno", "esp32")],
                                 {}, _budget_check("latency", "latency_s")),
    "mcu/prune.py: fit_to_budget": (list(FIT_CASES), {}, None),
}


def _plan(todos: Sequence[str]) -> Tuple[List[dict], Dict[str, np.ndarray], Dict[str, Tuple[int, int]]]:
    unknown = sorted(set(todos) - set(CHECKS))
    if unknown:
        raise KeyError(f"unknown TODO(s) {unknown}; the track's TODOs are {list(CHECKS)}")
    requests, arrays, spans = [], {}, {}
    for todo in todos:
        items, data, _ = CHECKS[todo]
        base = len(requests)
        for name, value in data.items():
            index, key = name.split(":", 1)
            arrays[f"{base + int(index)}:{key}"] = value
        spans[todo] = (base, base + len(items))
        requests += items
    return requests, arrays, spans


def grade_many(submissions: Sequence[Tuple[Path, Optional[Sequence[str]]]]) -> List[List[Result]]:
    """Score each ``(folder, todos or None for all)`` in one worker process: for staff variants (tests) only."""
    plans = [(list(todos or CHECKS),) + _plan(list(todos or CHECKS)) for _, todos in submissions]
    with tempfile.TemporaryDirectory() as work:
        jobs, missing = [], []
        for number, ((folder, _), (_, requests, arrays, _)) in enumerate(zip(submissions, plans)):
            (Path(work) / str(number)).mkdir()
            missing.append(assemble(Path(folder), Path(work) / str(number)))
            jobs.append((Path(work) / str(number), requests, arrays))
        answers = ask_many(jobs)
    return [_score(todos, spans, found, lost) for (todos, _, _, spans), found, lost in zip(plans, answers, missing)]


def grade(submission: Path, todos: Optional[Sequence[str]] = None) -> List[Result]:
    """Score one student's ``submission`` on ``todos`` (default: all of them), in a worker of its own."""
    return grade_many([(submission, todos)])[0]


def _score(todos: Sequence[str], spans, answers: Answers, missing: Sequence[str]) -> List[Result]:
    results = []
    for todo in todos:
        file = todo.split(": ")[0]
        mine = answers[slice(*spans[todo])]
        if file in missing:
            problem = f"{file} is missing from your submission: hand it in to get these points"
        elif CHECKS[todo][2] is None:
            problem = check_fit(mine, reference_fit())
        else:
            problem = CHECKS[todo][2](mine)
        results.append(Result(todo, 0.0 if problem else POINTS[todo], POINTS[todo], problem or "passed"))
    return results


@functools.lru_cache(maxsize=1)
def reference_fit() -> Answers:
    """The reference solution's ``fit_to_budget`` answers, which a submission must reproduce."""
    with tempfile.TemporaryDirectory() as work:
        assemble(REFERENCE, Path(work))
        answers, = ask_many([(Path(work), list(FIT_CASES), {})])
    if any("error" in numbers for numbers, _ in answers):
        raise RuntimeError(f"the reference solution failed the MCU suite: {answers}")
    return answers


# --------------------------------------------------------------------------- buggy variants (edits of solutions/)

BINARIZE, STE, PACK = "mcu/binary.py: binarize", "mcu/binary.py: SignSTE.backward", "mcu/binary.py: pack_signs"
FLASH, SRAM, LATENCY = "mcu/budget.py: flash_bytes", "mcu/budget.py: sram_bytes", "mcu/budget.py: latency_s"
FIT = "mcu/prune.py: fit_to_budget"

BUGS: Tuple[Bug, ...] = (
    Bug("scale_per_tensor", "mcu", BINARIZE, "one scale (mean |W| of the whole tensor) instead of one per channel.",
        [("    alpha = channel_scales(weight.detach()).reshape(-1, *([1] * (weight.dim() - 1)))\n",
          "    alpha = weight.detach().abs().mean()\n")]),
    Bug("scale_not_detached", "mcu", BINARIZE, "alpha is taken from the weight itself, so gradients flow through it.",
        [("    alpha = channel_scales(weight.detach())", "    alpha = channel_scales(weight)")]),
    Bug("ste_not_clipped", "mcu", STE, "the STE passes the gradient everywhere, also where |W| > 1.",
        [("        return grad_output * (weight.abs() <= 1).to(grad_output.dtype)\n", "        return grad_output\n")]),
    Bug("bits_msb_first", "mcu", PACK, "weight i is packed into bit 7 - i % 8 (most significant first).",
        [("    weights = 2 ** torch.arange(8, dtype=torch.int64)\n",
          "    weights = 2 ** torch.arange(7, -1, -1, dtype=torch.int64)\n")]),
    Bug("flash_without_scales", "mcu", FLASH, "the flash budget forgets the scales and biases.",
        [("    return sum(layer.packed_weight_bytes + layer.out_channels * (SCALE_BYTES + BIAS_BYTES)\n",
          "    return sum(layer.packed_weight_bytes + 0 * (SCALE_BYTES + BIAS_BYTES)\n")]),
    Bug("sram_sum_not_max", "mcu", SRAM, "the SRAM peak adds up every layer's activations instead of the largest pair.",
        [("    return max(layer.in_bytes + layer.out_bytes for layer in layers) + reserve\n",
          "    return sum(layer.in_bytes + layer.out_bytes for layer in layers) + reserve\n")]),
    Bug("sram_output_only", "mcu", SRAM, "the SRAM peak counts each layer's output only, not its live input.",
        [("    return max(layer.in_bytes + layer.out_bytes for layer in layers) + reserve\n",
          "    return max(layer.out_bytes for layer in layers) + reserve\n")]),
    Bug("latency_in_cycles", "mcu", LATENCY, "latency_s returns cycles, not seconds.",
        [("    return sum(layer.macs for layer in layers) * board.cycles_per_mac / board.clock_hz\n",
          "    return sum(layer.macs for layer in layers) * board.cycles_per_mac\n")]),
    Bug("fit_prunes_strongest", "mcu", FIT, "fit_to_budget removes the most important channel instead of the weakest.",
        [("        channel = int(model.channel_importance(index).argmin())\n",
          "        channel = int(model.channel_importance(index).argmax())\n")]),
)


def main(argv: Optional[List[str]] = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m grader.mcu_suite", description=__doc__.splitlines()[0])
    parser.add_argument("submission", type=Path, help="folder holding mcu/binary.py, mcu/budget.py, mcu/prune.py")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not args.submission.is_dir():
        print(f"error: {args.submission} is not a folder; pass the folder that holds mcu/", file=sys.stderr)
        return 2
    results = grade(args.submission)
    for result in results:
        print(f"{result.score:4g}/{result.max_score:g}  {result.todo}: {result.output}")
    total = sum(r.score for r in results)
    print(f"total {total:g} of {sum(r.max_score for r in results):g}")
    if args.json:
        args.json.write_text(json.dumps({"tests": [vars(r) for r in results]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
