"""The student's box (grader/box.py, grader/worker/): the wire format, and what code inside can and cannot reach.

Each box test writes a small submission whose ``net/prune.py`` runs a probe
when it is imported, asks the box for ``DEFAULT_PRUNE_RATE`` (which imports
it), and reads what the probe printed from the answer.
"""
import errno
import io
import json
import os
import socket
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from grader import box, seccomp
from grader.worker import protocol
from net.prune import DEFAULT_PRUNE_RATE

REPO = Path(__file__).resolve().parent.parent
BWRAP = box.strongest_level()[0] == "bwrap"
needs_bwrap = pytest.mark.skipif(not BWRAP, reason="needs bubblewrap")


# --------------------------------------------------------------------------- the wire format


def test_frames_carry_a_header_and_numeric_arrays():
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "mask": np.array([True, False]),
              "file:x.huff": np.frombuffer(b"abc", dtype=np.uint8)}
    header, back = protocol.decode(protocol.encode({"op": "prune", "args": [0.5]}, arrays))
    assert header == {"op": "prune", "args": [0.5]}
    assert set(back) == set(arrays) and all(np.array_equal(back[k], v) and back[k].dtype == v.dtype
                                            for k, v in arrays.items())


class Boom:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('x')",))


def test_a_pickle_in_an_answer_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "unpickled"
    buffer = io.BytesIO()
    np.savez(buffer, weights=np.array([Boom(str(marker))], dtype=object))
    frame = protocol.encode({"ok": True}) [:-8] + len(buffer.getvalue()).to_bytes(8, "big") + buffer.getvalue()
    with pytest.raises(protocol.ProtocolError, match="not a valid array archive|only numbers"):
        protocol.decode(frame)
    assert not marker.exists()


@pytest.mark.parametrize("frame, message", [
    (b"XXXX" + bytes(12), "not a frame"),
    (protocol.MAGIC + (5).to_bytes(4, "big") + b"[1,2]" + bytes(8), "not a JSON object"),
    (protocol.MAGIC + (3).to_bytes(4, "big") + b"NaN" + bytes(8), "not valid JSON"),
    (protocol.MAGIC + (2).to_bytes(4, "big") + b"{}" + (10).to_bytes(8, "big") + b"short", "announced"),
])
def test_malformed_frames_are_refused_with_a_reason(frame, message):
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.decode(frame)


def test_a_huge_announced_frame_is_refused_before_it_is_read():
    read, write = os.pipe()
    try:
        os.write(write, protocol.MAGIC + (2).to_bytes(4, "big") + b"{}" + (10 << 30).to_bytes(8, "big"))
        with pytest.raises(protocol.ProtocolError, match="at most"):
            protocol.read_frame(read, time.monotonic() + 5)
    finally:
        os.close(read)
        os.close(write)


def test_a_late_frame_times_out():
    read, write = os.pipe()
    try:
        with pytest.raises(protocol.Timeout):
            protocol.read_frame(read, time.monotonic() + 0.2)
    finally:
        os.close(read)
        os.close(write)


# --------------------------------------------------------------------------- the box


def probe_submission(folder: Path, code: str) -> Path:
    """The reference files, with ``code`` run when net/prune.py is imported."""
    for relative in ("net/__init__.py", "net/models.py", "net/quantization.py", "net/huffmancoding.py",
                     "pruning.py", "util.py"):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes((REPO / "solutions" / relative).read_bytes())
    (folder / "net" / "prune.py").write_text(code + "\n" + (REPO / "solutions/net/prune.py").read_text())
    return folder


def ask_constant(opened: box.Box, timeout: float = 60) -> dict:
    answer, _ = opened.request({"op": "constant", "module": "net.prune", "name": "DEFAULT_PRUNE_RATE"}, {},
                               time.monotonic() + timeout)
    return answer


PROBE = """
import json, os, socket, ctypes
def _try(action):
    try:
        return repr(action())[:200]
    except BaseException as error:
        return "refused: " + type(error).__name__
_libc = ctypes.CDLL(None, use_errno=True)
def _connect(family, address):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect(address)
    return "connected"
_report = {
    "uid": os.getuid(), "root": sorted(os.listdir("/")), "box": sorted(os.listdir("/box")),
    "tmp": sorted(os.listdir("/tmp")),
    "capabilities": [l for l in open("/proc/self/status").read().splitlines() if l.startswith("CapEff")][0],
    "seccomp": [l for l in open("/proc/self/status").read().splitlines() if l.startswith("Seccomp:")][0],
    "ptrace": [_libc.ptrace(16, 1, 0, 0), ctypes.get_errno()],
    "processes": len([p for p in os.listdir("/proc") if p.isdigit()]),
    "environ": [k for k in os.environ if k.startswith(("GRADER_TEST", "SSH", "HTTP", "AWS"))],
    "repo": _try(lambda: os.listdir(%(repo)r)), "solutions": _try(lambda: open(%(solution)r).read()),
    "host_file": _try(lambda: open(%(host_file)r).read()), "shadow": _try(lambda: open("/etc/shadow").read()),
    "write_usr": _try(lambda: open("/usr/escape", "w")), "write_box": _try(lambda: open("/box/student/x", "w")),
    "unix_socket": _try(lambda: _connect(socket.AF_UNIX, %(sock)r)),
    "abstract_socket": _try(lambda: _connect(socket.AF_UNIX, "\\0" + %(abstract)r)),
    "tcp": _try(lambda: _connect(socket.AF_INET, ("127.0.0.1", %(port)d))),
    "userns": _libc.unshare(0x10000000), "setuid0": _try(lambda: os.setuid(0)),
}
print(json.dumps(_report))
"""


@needs_bwrap
def test_the_box_sees_only_its_own_files_and_no_host_socket(tmp_path):
    host_file = tmp_path / "classmate.py"
    host_file.write_text("secret = 1\n")
    listeners = []
    for family, address in ((socket.AF_UNIX, str(tmp_path / "agent.sock")),
                            (socket.AF_UNIX, f"\0grader-box-test-{os.getpid()}"), (socket.AF_INET, ("127.0.0.1", 0))):
        server = socket.socket(family, socket.SOCK_STREAM)
        server.bind(address)
        server.listen()
        server.setblocking(False)
        listeners.append(server)
    code = PROBE % {"repo": str(REPO), "solution": str(REPO / "solutions/net/prune.py"), "host_file": str(host_file),
                    "sock": str(tmp_path / "agent.sock"), "abstract": f"grader-box-test-{os.getpid()}",
                    "port": listeners[2].getsockname()[1]}
    with box.Box(probe_submission(tmp_path / "sub", code), box.Limits(), "bwrap") as opened:
        answer = ask_constant(opened)
    report = json.loads(answer["printed"])
    for server in listeners:
        with pytest.raises(BlockingIOError):
            server.accept()
        server.close()
    assert answer["value"] == DEFAULT_PRUNE_RATE and answer["ended"] == ""
    python_tops = {folder.parts[1] for folder in box._python_paths()}
    assert set(report["root"]) <= {"bin", "box", "dev", "etc", "lib", "lib32", "lib64", "proc", "sbin",
                                   "tmp", "usr"} | python_tops
    assert report["box"] == ["code", "student"]
    assert all(name.startswith("request-") for name in report["tmp"])
    assert report["capabilities"].split()[1] == "0000000000000000"
    assert report["processes"] <= 3  # bwrap's init, the worker, this request
    assert report["environ"] == []
    assert "solutions" not in report["repo"] and "grader" not in report["repo"]  # at most the venv's mount point
    for key in ("solutions", "host_file", "shadow", "write_usr", "write_box", "unix_socket",
                "abstract_socket", "tcp", "setuid0"):
        assert report[key].startswith("refused"), (key, report[key])
    assert report["userns"] == -1
    if seccomp.program() is not None:
        assert report["seccomp"].split()[1] == "2" and report["ptrace"] == [-1, errno.EPERM]
    if os.geteuid() == 0:
        assert report["uid"] == box.NOBODY


@needs_bwrap
def test_processes_left_behind_are_killed_after_each_request(tmp_path):
    code = ("import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        os.execvp('sleep', ['sleep', '31338'])\n    os._exit(0)\n")
    with box.Box(probe_submission(tmp_path / "sub", code), box.Limits(), "bwrap") as opened:
        assert ask_constant(opened)["ended"] == ""
        time.sleep(0.2)
        assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if b"31338" in p.read_bytes()]


@needs_bwrap
def test_memory_is_capped_for_the_whole_box_not_per_process(tmp_path):
    if not box.Cgroup.available():
        pytest.skip("no cgroup can be made here")
    code = ("import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n"
            "        _hog = b'\\x01' * (600 << 20)\n        time.sleep(30)\n        os._exit(0)\ntime.sleep(4)\n")
    limits = box.Limits(memory_mb=200)
    with box.Box(probe_submission(tmp_path / "sub", code), limits, "bwrap") as opened:
        ask_constant(opened)
        memory = [f for f in opened.cgroup.folders if "memory" in f.parts or (f / "memory.peak").exists()][0]
        peak_file = memory / ("memory.peak" if (memory / "memory.peak").exists() else "memory.max_usage_in_bytes")
        peak = int(peak_file.read_text())
    assert peak <= (limits.memory_mb + box.PRELOADED_MB) << 20
    assert peak < 3 * (600 << 20)


@needs_bwrap
def test_a_crash_or_a_hang_costs_one_request_and_the_box_restarts(tmp_path):
    code = ("import os, signal\n"
            "def __getattr__(name):\n"
            "    if name == 'CRASH':\n        os.kill(os.getpid(), signal.SIGSEGV)\n"
            "    while name == 'HANG':\n        pass\n"
            "    raise AttributeError(name)\n")
    with box.Box(probe_submission(tmp_path / "sub", code), box.Limits(), "bwrap") as opened:
        assert ask_constant(opened)["value"] == DEFAULT_PRUNE_RATE
        crashed, _ = opened.request({"op": "constant", "module": "net.prune", "name": "CRASH"}, {},
                                    time.monotonic() + 30)
        assert "segmentation fault" in crashed["ended"]
        with pytest.raises(box.BoxFailure, match="timeout"):
            opened.request({"op": "constant", "module": "net.prune", "name": "HANG"}, {}, time.monotonic() + 1)
        assert ask_constant(opened)["value"] == DEFAULT_PRUNE_RATE
        assert opened.starts == 2


def test_the_basic_level_answers_the_same(tmp_path):
    with box.Box(probe_submission(tmp_path / "sub", ""), box.Limits(), "basic") as opened:
        answer = ask_constant(opened)
    assert answer["value"] == DEFAULT_PRUNE_RATE and answer["ended"] == ""


def test_a_box_leaves_no_folder_behind(tmp_path):
    with box.Box(probe_submission(tmp_path / "sub", ""), box.Limits(), "basic") as opened:
        root = opened.root
        ask_constant(opened)
    assert not root.exists()


def test_an_array_announcing_more_than_it_holds_is_refused_before_allocation():
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 10,)})
    npy.write(bytes(32))
    body = io.BytesIO()
    with zipfile.ZipFile(body, "w") as archive:
        archive.writestr("huge.npy", npy.getvalue())
    frame = protocol.MAGIC + (2).to_bytes(4, "big") + b"{}" + len(body.getvalue()).to_bytes(8, "big") + body.getvalue()
    with pytest.raises(protocol.ProtocolError, match="announces more data than it holds"):
        protocol.decode(frame)
