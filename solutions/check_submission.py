"""Pack your submission and check it before you upload it.

    python check_submission.py STUDENT_ID [--model saves/model_after_weight_sharing.ptmodel] [--evaluate]

Run it from inside the assignment folder. It

1. writes STUDENT_ID.zip holding the files that are graded (``homework.py``
   lists them: ``STUDENT_FILES``, and Part 2's ``DEPLOY_STUDENT_FILES`` when
   this folder holds ``deploy/``), and says what Part 2 still lacks: a missing
   ``deploy/`` file, a TODO whose stub is still there;
2. runs the visible tests in tests/ (the grader runs more tests, hidden ones);
3. checks your model by the leaderboard's own rules: it loads it the safe way
   the leaderboard does (nothing in the file is run), and it must hold the 16
   tensors of ``net/models.py``'s AlexNet, float32, of the same shapes, with
   no NaN or infinity, and weight-shared (``MAX_DISTINCT_VALUES``);
4. measures its file compression rate with your ``net/huffmancoding.py`` (the
   leaderboard uses the reference encoder, which writes the same files when
   your conv TODOs are right), and compares its last test accuracy in
   ``log.txt`` (or, with ``--evaluate``, its accuracy measured now) with the
   gate: only models *strictly above* ``GATE`` on all 10,000 test images are
   ranked;
5. copies the model to STUDENT_ID.ptmodel.

It says "Ready" only when every check passes. Upload STUDENT_ID.zip and
STUDENT_ID.ptmodel. (A .rar holding the same files is accepted too.)
"""
import argparse
import contextlib
import io
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from homework import (DEPLOY_NAME, DEPLOY_POINTS, DEPLOY_STUDENT_FILES, GATE, MAX_DISTINCT_VALUES, MODEL,
                      MODEL_SUFFIX, STUDENT_FILES, STUDENT_ID, TEST_IMAGES)

HANDOUT = Path(__file__).resolve().parent
LOGGED_ACCURACY = re.compile(r"^(accuracy_after_weight_sharing|accuracy_after_huffman) ([0-9.]+) "
                             r"on ([0-9]+) test images$")
"""The lines ``util.log_accuracy`` writes for the model you hand in (the last one counts)."""
MAX_BITS = 8
"""A weight layer with more distinct non-zero values than 2**MAX_BITS was probably not weight-shared."""
STUB = re.compile(r"^\s*raise NotImplementedError\(\"TODO ([^\"]+)\"\)", re.MULTILINE)
"""A TODO of the handout that is not written yet: its stub is still in the file."""


class CheckError(Exception):
    """A problem the student must fix; the message says which and how."""


def pack(student_id: str, out: Path) -> Path:
    """Write ``out/STUDENT_ID.zip`` with the graded files (Part 2's that are here too); return its path."""
    missing = [name for name in STUDENT_FILES if not (HANDOUT / name).is_file()]
    if missing:
        raise CheckError(f"missing from {HANDOUT}: {', '.join(missing)} (each missing file costs the points of "
                         "its TODOs)")
    archive = out / f"{student_id}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in STUDENT_FILES + tuple(f for f in DEPLOY_STUDENT_FILES if (HANDOUT / f).is_file()):
            zf.write(HANDOUT / name, name)
    return archive


def check_deploy() -> List[str]:
    """Print what Part 2 (``deploy/``) hands in and which of its TODOs are still stubs; return the problems."""
    if not (HANDOUT / DEPLOY_NAME).is_dir():
        print(f"Part 2: not handed in (there is no {DEPLOY_NAME}/ folder here), so its {DEPLOY_POINTS:g} points "
              f"score 0; to do it, copy the handout's {DEPLOY_NAME}/ folder back")
        return []
    here = [f for f in DEPLOY_STUDENT_FILES if (HANDOUT / f).is_file()]
    print(f"Part 2: packed {len(here)} of {len(DEPLOY_STUDENT_FILES)} files ({', '.join(here) or 'none'})")
    stubs = [todo for f in here for todo in STUB.findall((HANDOUT / f).read_text(encoding="utf-8", errors="replace"))]
    if stubs:
        print(f"note: {len(stubs)} Part 2 TODOs are not written yet (their tests score 0): {', '.join(stubs)}")
    missing = [f for f in DEPLOY_STUDENT_FILES if f not in here]
    return [f"missing from {HANDOUT / DEPLOY_NAME}: {', '.join(missing)} (each missing file costs the points of its "
            "Part 2 TODOs)"] if missing else []


def run_visible_tests() -> bool:
    """Run the tests in tests/ with pytest; print their summary; return whether they all passed."""
    command = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"]
    try:
        result = subprocess.run(command, cwd=HANDOUT, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        print("visible tests: did not finish within 10 minutes")
        return False
    if "No module named pytest" in result.stderr:
        print("visible tests: skipped, pytest is not installed (pip install pytest)")
        return False
    lines = result.stdout.strip().splitlines()
    print(f"visible tests: {lines[-1].strip('= ') if lines else 'no output'}")
    if result.returncode != 0:
        print(f"  see the details with: cd {HANDOUT} && python -m pytest tests")
    return result.returncode == 0


# --------------------------------------------------------------------------- the model, by the leaderboard's rules


def reference_model():
    """A fresh AlexNet of ``net/models.py``, on the meta device (shapes only, no memory)."""
    import importlib

    import torch
    try:
        model_class = getattr(importlib.import_module(MODEL[0][:-3].replace("/", ".")), MODEL[1])
    except Exception as error:
        raise CheckError(f"{MODEL[0]} cannot be imported ({type(error).__name__}: {error})") from None
    with torch.device("meta"):
        return model_class()


def load_state(path: Path) -> Dict[str, "object"]:
    """Load a whole AlexNet or a state_dict without running any code from the file; return the tensors."""
    import torch
    import torch.nn as nn
    allowed = [type(reference_model()), nn.Conv2d, nn.Linear]
    try:
        with torch.serialization.safe_globals(allowed):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found is None:
            raise CheckError(f"{path} is not a PyTorch model file (it cannot be unpickled)") from None
        raise CheckError(f"{path} was refused: it needs {found.group(1)}. The leaderboard loads only an AlexNet "
                         "(net.models.AlexNet with Conv2d and Linear layers) saved with torch.save(model, ...), "
                         "or its state_dict") from None
    except Exception as error:
        raise CheckError(f"{path} is not a PyTorch model file ({type(error).__name__}: {error})") from None
    if isinstance(loaded, nn.Module):
        return loaded.state_dict()
    if isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return loaded
    raise CheckError(f"{path} holds a {type(loaded).__name__}, not a model or a state_dict")


def model_problems(state) -> List[str]:
    """What the leaderboard would refuse: other tensors, other shapes, not float32, NaN or infinity."""
    import torch
    expected = {name: tuple(t.shape) for name, t in reference_model().state_dict().items()}
    problems = [f"missing tensor {name}" for name in expected if name not in state]
    problems += [f"unexpected tensor {name}" for name in state if name not in expected]
    for name, shape in expected.items():
        tensor = state.get(name)
        if tensor is None:
            continue
        if tuple(tensor.shape) != shape:
            problems.append(f"{name} has shape {tuple(tensor.shape)}, expected {shape}")
        elif tensor.dtype != torch.float32:
            problems.append(f"{name} is {tensor.dtype}, expected torch.float32 (save the model without .half())")
        elif not bool(torch.isfinite(tensor).all()):
            problems.append(f"{name} holds NaN or infinite values")
        elif name.endswith("weight") and int(tensor.unique().numel()) > MAX_DISTINCT_VALUES:
            problems.append(f"{name} has more than {MAX_DISTINCT_VALUES:,} distinct values: it is not weight-shared "
                            "(hand in model_after_weight_sharing.ptmodel)")
    return problems


def report_model(path: Path, state) -> None:
    """Print the file size and, per tensor, its non-zeros and (for weights) its distinct non-zero values."""
    total = sum(t.numel() for t in state.values())
    nonzero = sum(int((t != 0).sum()) for t in state.values())
    print(f"model: {path} ({path.stat().st_size:,} bytes), {len(state)} tensors")
    unshared = []
    for name, tensor in state.items():
        count = int((tensor != 0).sum())
        line = (f"  {name:13} {str(tuple(tensor.shape)):18} non-zero {count:>9,} of {tensor.numel():>10,}"
                f" ({100 * count / max(tensor.numel(), 1):6.2f}%)")
        if name.endswith("weight"):
            distinct = int(tensor[tensor != 0].unique().numel())
            line += f", {distinct:,} distinct values"
            if distinct > 2 ** MAX_BITS:
                unshared.append(name)
        print(line)
    print(f"  rate from zeros (all / non-zero values, not the file compression rate): "
          f"{total / max(nonzero, 1):.2f}x")
    if unshared:
        print(f"note: {', '.join(unshared)} hold more than {2 ** MAX_BITS} distinct non-zero values; "
              "is this really the model after weight sharing?")


def compression_rate(state) -> Optional[float]:
    """The file compression rate of ``state`` with your encoder (None, with a note, when it cannot run)."""
    model = type(reference_model())()
    model.load_state_dict(state)
    from net.huffmancoding import huffman_encode_model
    try:
        with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
            return huffman_encode_model(model, folder).rate
    except NotImplementedError as error:
        print(f"note: compression rate not measured: {error}")
    except Exception as error:
        print(f"note: compression rate not measured: your encoder failed ({type(error).__name__}: {error})")
    return None


# --------------------------------------------------------------------------- the accuracy gate


def logged_accuracy(log: Path) -> Tuple[float, int]:
    """The last accuracy ``log`` records for the model you hand in: (percent, test images)."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    found = [m for m in map(LOGGED_ACCURACY.match, lines) if m]
    if not found:
        raise CheckError(f"{log} records no accuracy of the weight-shared model: run weight_share.py (or "
                         "huffman_encode.py), or pass --evaluate to measure it now")
    return float(found[-1][2]), int(found[-1][3])


def measured_accuracy(state, data_dir: str) -> Tuple[float, int]:
    """The model's accuracy on the whole test set, measured now."""
    import util
    model = type(reference_model())()
    model.load_state_dict(state)
    try:
        test_set = util.load_cifar10(data_dir, train=False)
    except util.DataError as error:
        raise CheckError(f"--evaluate: {error}") from None
    with contextlib.redirect_stdout(io.StringIO()):
        accuracy = util.test(model, test_set, util.select_device("auto"))
    return accuracy, len(test_set)


def gate_problems(accuracy: float, images: int) -> List[str]:
    """Why a model of this accuracy would not be ranked (nothing when it would)."""
    if images != TEST_IMAGES:
        return [f"the accuracy {accuracy:.2f}% was measured on {images:,} test images; the leaderboard uses all "
                f"{TEST_IMAGES:,}: run weight_share.py without --subset, or pass --evaluate"]
    if not accuracy > float(GATE):
        return [f"accuracy {accuracy:.2f}% is not above the gate of {GATE}%: the model would not be ranked"]
    return []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student_id", help="your student id, e.g. 108062345")
    parser.add_argument("--model", type=Path, default=Path("saves/model_after_weight_sharing.ptmodel"),
                        help="the model to hand in")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder the two files are written to")
    parser.add_argument("--log", type=Path, default=Path("log.txt"), help="the scripts' log (its last accuracy)")
    parser.add_argument("--evaluate", action="store_true", help="measure the accuracy now instead of reading it "
                                                                "from the log (needs the data)")
    parser.add_argument("--data-dir", default="data", help="folder that holds cifar-10-batches-py/ (--evaluate)")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the visible tests")
    args = parser.parse_args(argv)
    if not STUDENT_ID.fullmatch(args.student_id):
        print(f"error: {args.student_id!r} is not a student id (letters, digits and _ . @ + -; at most 64)")
        return 2
    sys.path.insert(0, str(HANDOUT))
    problems = []
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        print(f"code: wrote {pack(args.student_id, args.out)}")
    except (CheckError, OSError) as error:
        problems.append(str(error))
    problems += check_deploy()
    if not args.skip_tests and not run_visible_tests():
        problems.append("some visible tests fail")
    try:
        if not args.model.is_file():
            raise CheckError(f"{args.model} does not exist: run weight_share.py first, or give --model PATH")
        state = load_state(args.model)
        report_model(args.model, state)
        refused = model_problems(state)
        problems += refused
        if not refused:
            rate = compression_rate(state)
            if rate is not None:
                print(f"file compression rate (your encoder): {rate:.2f}x")
            accuracy, images = measured_accuracy(state, args.data_dir) if args.evaluate else logged_accuracy(args.log)
            source = "measured now" if args.evaluate else args.log
            print(f"accuracy: {accuracy:.2f}% on {images:,} test images ({source})")
            problems += gate_problems(accuracy, images)
        target = args.out / f"{args.student_id}{MODEL_SUFFIX}"
        if args.model.resolve() != target.resolve():
            shutil.copyfile(args.model, target)
        print(f"model: wrote {target}")
    except (CheckError, OSError) as error:
        problems.append(str(error))
    if problems:
        print("\nFix these before you upload:\n" + "\n".join(f"  - {problem}" for problem in problems))
        return 1
    print(f"\nReady: upload {args.student_id}.zip and {args.student_id}{MODEL_SUFFIX} from {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
