"""Pack your submission and check it before you upload it.

    python check_submission.py STUDENT_ID [--model saves/model_after_weight_sharing.ptmodel]

Run it from inside the assignment folder. It

1. writes STUDENT_ID.zip holding net/*.py and pruning.py, the code that is graded;
2. runs the visible tests in tests/ (the grader runs more tests, hidden ones);
3. loads your model the safe way the grader does and reports its size, its
   tensors and how many of their values are non-zero;
4. copies the model to STUDENT_ID.ptmodel.

Upload STUDENT_ID.zip and STUDENT_ID.ptmodel. (A .rar holding the same
files is accepted too; writing one needs the non-free ``rar`` tool.)
"""
import argparse
import contextlib
import pickle
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Tuple

HANDOUT = Path(__file__).resolve().parent
GRADED_FILES = ["net/huffmancoding.py", "net/models.py", "net/prune.py", "net/quantization.py", "pruning.py"]

# The tensors the grader expects in the model: the AlexNet of net/models.py.
EXPECTED_SHAPES: Dict[str, Tuple[int, ...]] = {
    "conv1.weight": (64, 3, 11, 11), "conv1.bias": (64,),
    "conv2.weight": (192, 64, 5, 5), "conv2.bias": (192,),
    "conv3.weight": (384, 192, 3, 3), "conv3.bias": (384,),
    "conv4.weight": (256, 384, 3, 3), "conv4.bias": (256,),
    "conv5.weight": (256, 256, 3, 3), "conv5.bias": (256,),
    "fc1.weight": (4096, 256), "fc1.bias": (4096,),
    "fc2.weight": (4096, 4096), "fc2.bias": (4096,),
    "fc3.weight": (10, 4096), "fc3.bias": (10,),
}


MAX_BITS = 8
"""A weight layer with more distinct non-zero values than 2**MAX_BITS was probably not weight-shared."""


class CheckError(Exception):
    """A problem the student must fix; the message says which and how."""


def pack(student_id: str, out: Path) -> Path:
    """Write ``out/STUDENT_ID.zip`` with net/*.py and pruning.py; return its path."""
    missing = [name for name in GRADED_FILES if not (HANDOUT / name).is_file()]
    if missing:
        raise CheckError(f"missing from {HANDOUT}: {', '.join(missing)}")
    files = sorted((HANDOUT / "net").glob("*.py")) + [HANDOUT / "pruning.py"]
    extra = [path.name for path in files if path.relative_to(HANDOUT).as_posix() not in GRADED_FILES
             and path.name != "__init__.py"]
    if extra:
        print(f"note: net/{', net/'.join(extra)} will be packed, but the grader uses only "
              f"{', '.join(GRADED_FILES)}: your code must not need other files")
    archive = out / f"{student_id}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, path.relative_to(HANDOUT).as_posix())
    return archive


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


def load_state(path: Path):
    """Load a whole AlexNet or a state_dict without running any code from the file; return the tensors."""
    import torch
    import torch.nn as nn
    try:
        from net.models import AlexNet
    except Exception as error:
        raise CheckError(f"net/models.py cannot be imported ({type(error).__name__}: {error})") from None
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        with allow([AlexNet, nn.Conv2d, nn.Linear]) if allow else contextlib.nullcontext():
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found is None:
            raise CheckError(f"{path} is not a PyTorch model file (it cannot be unpickled)") from None
        old = "" if allow else f" (torch {torch.__version__} cannot allow AlexNet: check with torch 2.5 or newer)"
        raise CheckError(f"{path} was refused: it needs {found.group(1)}{old}. The grader loads only an AlexNet "
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
    """What differs from the tensors the grader expects."""
    problems = [f"missing tensor {name}" for name in EXPECTED_SHAPES if name not in state]
    problems += [f"unexpected tensor {name}" for name in state if name not in EXPECTED_SHAPES]
    for name, shape in EXPECTED_SHAPES.items():
        if name in state and tuple(state[name].shape) != shape:
            problems.append(f"{name} has shape {tuple(state[name].shape)}, expected {shape}")
        elif name in state and not state[name].is_floating_point():
            problems.append(f"{name} is {state[name].dtype}, expected floating point values")
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
    print(f"  total: {nonzero:,} non-zero of {total:,} values ({total / max(nonzero, 1):.1f}x fewer)")
    if unshared:
        print(f"note: {', '.join(unshared)} hold more than {2 ** MAX_BITS} distinct non-zero values; "
              "is this really the model after weight sharing?")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student_id", help="your student id, e.g. 108062345")
    parser.add_argument("--model", type=Path, default=Path("saves/model_after_weight_sharing.ptmodel"),
                        help="the model to hand in")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder the two files are written to")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the visible tests")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.student_id):
        print(f"error: {args.student_id!r} is not a student id (letters, digits, - and _ only)")
        return 2
    sys.path.insert(0, str(HANDOUT))
    problems = []
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        print(f"code: wrote {pack(args.student_id, args.out)}")
    except (CheckError, OSError) as error:
        problems.append(str(error))
    if not args.skip_tests and not run_visible_tests():
        problems.append("some visible tests fail")
    try:
        if not args.model.is_file():
            raise CheckError(f"{args.model} does not exist: run weight_share.py first, or give --model PATH")
        state = load_state(args.model)
        report_model(args.model, state)
        problems += model_problems(state)
        target = args.out / f"{args.student_id}.ptmodel"
        if args.model.resolve() != target.resolve():
            shutil.copyfile(args.model, target)
        print(f"model: wrote {target}")
    except (CheckError, OSError) as error:
        problems.append(str(error))
    if problems:
        print("\nFix these before you upload:\n" + "\n".join(f"  - {problem}" for problem in problems))
        return 1
    print(f"\nReady: upload {args.student_id}.zip and {args.student_id}.ptmodel from {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
