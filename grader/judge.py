"""Judge one submission after another, without paying torch's import for each: a preloaded fork server.

Three kinds of process take part:

*host* (the ``grade`` command)
    unpacks each submission and hands it to the server; reads back one
    JSON line per submission, the scored tests; kills the judge when the
    submission's time limit passes.
*server* (one per grading run)
    imports torch, numpy, scipy, scikit-learn, pytest and the suites once,
    then forks one judge per submission. It never runs student code.
*judge* (one per submission, forked by the server)
    runs the hidden suites (``grader.suites.runner.judge``) in this trusted
    process. The student's code runs only in the box the suites open
    (``grader/box.py``): a separate sandboxed process that answers with data.

The report pipe is the judge's alone: the box never sees it.

This file imports only the standard library and ``grader.box`` at module
level: the server is started as ``python -m grader.judge serve``.
"""
import importlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from grader import box
from grader.box import Cgroup, Limits
from grader.worker.serve import prctl, reap

PR_SET_PDEATHSIG = 1

DEFAULT_PRELOAD = ("numpy", "torch", "scipy.sparse", "sklearn.cluster", "pytest", "pytest_timeout",
                   "grader.suites.runner", "grader.suites.common", "grader.suites.student")
"""Imported once by the server."""
REPORT_CAP = 16 * 2**20
REPO = Path(__file__).resolve().parent.parent


class JudgeFailure(Exception):
    """The judge could not score the submission (a grader problem, or the time limit); ``str()`` says which."""


def _environment() -> Dict[str, str]:
    """The server's environment: the grader's own path, one thread per process, nothing else of the TA's."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "HOME": tempfile.gettempdir(), "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": "", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


class Server:
    """The preloaded server process, and the channel that hands it jobs."""

    def __init__(self, preload: Sequence[str]) -> None:
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.errors = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-B", "-s", "-m", "grader.judge", "serve",
                                      str(theirs.fileno()), ",".join(preload)], pass_fds=[theirs.fileno()],
                                     cwd=tempfile.gettempdir(), env=_environment(), stdin=subprocess.DEVNULL,
                                     stdout=self.errors, stderr=self.errors, start_new_session=True)
        theirs.close()
        self.lock = threading.Lock()
        self.channel.settimeout(600)
        try:
            ready = json.loads(self.channel.recv(4096) or b"{}")
        except (OSError, ValueError):
            ready = {}
        self.channel.settimeout(None)
        if "level" not in ready:
            tail = self.error_tail()
            self.close()
            raise RuntimeError(f"the judge server did not start: {tail}")
        self.level, self.why_not_bwrap = ready["level"], ready["why"]
        """The strongest box the server can make (``box.strongest_level``), and why not bwrap if not."""

    def error_tail(self) -> str:
        self.errors.seek(0)
        return " / ".join(self.errors.read().decode("utf-8", "replace").strip().splitlines()[-3:])

    def submit(self, job: Path) -> int:
        """Hand the job file ``job`` to the server; return the read end of its report pipe."""
        read, write = os.pipe()
        try:
            with self.lock:
                socket.send_fds(self.channel, [os.fsencode(job)], [write])
        except OSError:
            os.close(read)
            raise
        finally:
            os.close(write)
        return read

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """Hang up: the server waits for its judges and leaves (killed if it takes over 30 s)."""
        self.channel.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        _kill_group(self.proc.pid)
        self.proc.wait()
        self.errors.close()


_servers: Dict[Tuple[str, ...], Server] = {}
_servers_lock = threading.Lock()
_running: Dict[int, int] = {}
_stopping = threading.Event()


def sweep_stale_jobs() -> None:
    """Remove the job folders of grading runs that were killed (their process is gone)."""
    for folder in Path(tempfile.gettempdir()).glob("grader-job-*-*"):
        try:
            os.kill(int(folder.name.split("-")[2]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError):
            pass


def server(preload: Sequence[str] = DEFAULT_PRELOAD) -> Server:
    """The server for ``preload``, started on first use (from the main thread: it dies with its thread)."""
    key = tuple(preload)
    sweep_stale_jobs()
    with _servers_lock:
        if key not in _servers or not _servers[key].alive():
            _servers[key] = Server(key)
        return _servers[key]


def shutdown() -> None:
    """Stop every server (they also stop by themselves when this process ends)."""
    with _servers_lock:
        for running in _servers.values():
            running.close()
        _servers.clear()


def stop_all() -> None:
    """Kill every judge this process runs and start no new one (on Ctrl-C)."""
    _stopping.set()
    for pid in list(_running):
        _kill_group(pid)


def run(submission: Path, limits: Limits, level: str, preload: Sequence[str] = DEFAULT_PRELOAD,
        homework: str = "compression") -> List[dict]:
    """The scored tests of every part of ``homework`` (``grader.suites.runner.HOMEWORKS``, or ``"all"``) for the
    submission folder, all within the submission's time limit; raises ``JudgeFailure``."""
    if _stopping.is_set():
        raise JudgeFailure("grading was stopped")
    job = Path(tempfile.mkdtemp(prefix=f"grader-job-{os.getpid()}-"))
    job.chmod(0o711)  # the box's folders inside are reached by nobody (grader/box.py)
    try:
        (job / "job.json").write_text(json.dumps({"submission": str(submission), "limits": asdict(limits),
                                                  "level": level, "folder": str(job), "homework": homework}))
        try:
            report = server(preload).submit(job / "job.json")
        except (OSError, RuntimeError) as error:
            raise JudgeFailure(f"the judge could not start ({error})") from None
        with os.fdopen(report, "rb") as stream:
            data, timed_out, pid = _read_report(stream, limits.submission_timeout_s)
        if pid:
            Cgroup.sweep(pid)
        if timed_out:
            raise JudgeFailure(f"the {limits.submission_timeout_s:g} s time limit for the whole submission "
                               "was reached")
        try:
            message = json.loads(data.splitlines()[-1])
        except (ValueError, IndexError):
            raise JudgeFailure("the judge ended without a report") from None
        if "problem" in message:
            raise JudgeFailure(str(message["problem"]))
        return message["tests"]
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _read_report(stream, timeout: float) -> Tuple[bytes, bool, int]:
    """The judge's report until it ends or ``timeout`` passes (then the judge is killed); ``(data, timed out, pid)``."""
    deadline, data, pid = time.monotonic() + timeout, b"", 0
    try:
        while len(data) < REPORT_CAP:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stream], [], [], left)[0]:
                return data, True, pid
            chunk = os.read(stream.fileno(), 1 << 16)
            if not chunk:
                break
            data += chunk
            if not pid and b"\n" in data:
                pid = int(json.loads(data.split(b"\n", 1)[0]).get("pid", 0))
                _running[pid] = pid
        return data, False, pid
    finally:
        if pid:
            _kill_group(pid)
            _running.pop(pid, None)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------- the server and its judges


def _send(report: int, message: dict) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(report, data):]


def _judge(job_file: Path, report: int) -> None:
    """One submission, in the process the server forked for it. Never returns."""
    try:
        os.setsid()
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # if the server dies (the host was killed), so does this judge
        _send(report, {"pid": os.getpid()})
        job = json.loads(job_file.read_text())
        tempfile.tempdir = job["folder"]
        from grader.suites import runner
        tests = runner.judge(Path(job["submission"]), None, Limits(**job["limits"]), job["level"],
                             homework=job["homework"])
        _send(report, {"tests": tests})
    except BaseException as error:  # noqa: B902 - tell the host, whatever it is
        try:
            _send(report, {"problem": f"the judge failed ({type(error).__name__}: {error})"})
        except OSError:
            pass
    os._exit(0)


def serve(channel_fd: int, preload: Sequence[str]) -> None:
    """The server: preload, then fork a judge for every job received; when the host hangs up, wait and leave."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if shutil.which("bwrap"):
        box.zygote()  # it imports torch in parallel with the imports below
    for module in preload:
        importlib.import_module(module)
    level, why = box.strongest_level()  # a trial box: it starts the zygote that every judge forked below shares
    signal.signal(signal.SIGCHLD, reap)
    channel = socket.socket(fileno=channel_fd)
    channel.send(json.dumps({"level": level, "why": why}).encode())
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(channel, 4096, 1)
        except OSError:
            break
        if not message or not fds:
            break
        if os.fork() == 0:
            channel.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _judge(Path(os.fsdecode(message)), fds[0])
        os.close(fds[0])
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    box.close_zygotes()
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]), [m for m in sys.argv[3].split(",") if m])
