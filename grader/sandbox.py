"""Run the hidden suites on one submission, shut off from the grader and from other students.

Three kinds of process take part:

*server* (one per grading run)
    imports torch, numpy, scipy, scikit-learn and pytest once (3-4 s of CPU
    that every submission would otherwise pay again), then waits for jobs.
    It never runs student code.
*worker* (one per submission, forked by the server)
    ``namespaces`` level (Linux with unprivileged user namespaces): enters
    new user, mount, network (no interface up: no network at all) and PID
    namespaces and forks the sandbox's PID 1, which mounts a size-capped
    tmpfs as the only writable place, remounts every other mount read-only
    (the repository, the output folder, the virtualenv, home...), mounts a
    fresh /proc, drops every capability and runs the parts. When PID 1 ends,
    the kernel kills whatever is left in the namespace.
    ``basic`` level (anything else, e.g. Docker on Gradescope): the worker
    runs the parts itself, as a child subreaper in its own session; proxies
    point at a closed port. The grader's files are then protected only by
    working in a temporary copy.
*part* (one per part: prune, quantize, huffman, forked in turn)
    in a fresh copy of the submission, ``HOME``/``TMPDIR`` inside it, with
    memory (``RLIMIT_DATA``), file size, process and time limits and its
    output sent to a log file, runs ``python -m <runner> SUBMISSION RESULTS
    --part P --timeout T`` in-process (via runpy). A crash, hang,
    ``os._exit`` or memory blow-up costs only that part.

After each part the sandbox sends the host one JSON line through a pipe that
only PID 1 holds: the tests recorded, how the process ended, the head and tail
of its log. The host enforces the time limit of the whole submission by
killing the worker's session.

This file imports only the standard library at module level: the server is
started as ``python sandbox.py serve``.
"""
import ctypes
import importlib
import json
import os
import resource
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

DEFAULT_PRELOAD = ("numpy", "torch", "torch._dynamo", "torch.optim", "scipy.sparse", "sklearn.cluster", "tqdm",
                   "pytest", "pytest_timeout")
"""Imported once by the server; torch._dynamo is what the first optimizer step would import (seconds)."""
PYTHON_FLAGS = ["-B", "-s"]
REPORT_CAP = 16 * 2**20


@dataclass(frozen=True)
class Limits:
    """What one submission may use. Times in seconds, sizes in MB."""
    test_timeout_s: float = 60.0
    part_timeout_s: float = 300.0
    submission_timeout_s: float = 1020.0
    memory_mb: int = 2048
    """On top of what the preloaded libraries (torch...) already use."""
    file_mb: int = 64
    disk_mb: int = 512
    processes: int = 256
    output_kb: int = 8


@dataclass
class PartResult:
    """What came back from one part: the tests it recorded and, if it ended badly, how."""
    part: str
    tests: List[dict] = field(default_factory=list)
    outcome: str = ""
    log: str = ""
    cpu_seconds: float = 0.0


# --------------------------------------------------------------------------- host side


def _clean_env(home: str) -> Dict[str, str]:
    """The whole environment of the sandbox: nothing of the TA's (tokens...) leaks in."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "HOME": home, "TMPDIR": home, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
           "PYTHONNOUSERSITE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
           "no_proxy": "", "NO_PROXY": ""}
    env.update({name: "http://127.0.0.1:9" for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                                                         "all_proxy", "ALL_PROXY")})
    return env


class Server:
    """The preloaded server process, and the channel that hands it jobs."""

    def __init__(self, preload: Sequence[str]):
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.errors = tempfile.TemporaryFile()
        temp = tempfile.gettempdir()  # the server writes nothing; each part gets its own HOME and TMPDIR
        self.proc = subprocess.Popen([sys.executable, *PYTHON_FLAGS, __file__, "serve", str(theirs.fileno()),
                                      ",".join(preload)], pass_fds=[theirs.fileno()], cwd=temp,
                                     env=_clean_env(temp), stdin=subprocess.DEVNULL, stdout=self.errors,
                                     stderr=self.errors, start_new_session=True)
        theirs.close()
        self.lock = threading.Lock()
        self.channel.settimeout(600)
        try:
            ready = self.channel.recv(64)
        except OSError:
            ready = b""
        self.channel.settimeout(None)
        if ready != b"ready":
            tail = self.error_tail()
            self.close()
            raise RuntimeError(f"the sandbox server did not start: {tail}")

    def error_tail(self) -> str:
        self.errors.seek(0)
        return " / ".join(self.errors.read().decode("utf-8", "replace").strip().splitlines()[-3:])

    def submit(self, root: Path) -> int:
        """Hand the job in ``root`` to the server; return the read end of its report pipe."""
        read, write = os.pipe()
        try:
            with self.lock:
                socket.send_fds(self.channel, [os.fsencode(root)], [write])
        except OSError:
            os.close(read)
            raise
        finally:
            os.close(write)
        return read

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """Hang up: the server waits for its workers and leaves (killed if it takes over 30 s)."""
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
_isolation_cache: Dict[str, str] = {}
_running: Dict[int, int] = {}
_stopping = threading.Event()


def server(preload: Sequence[str] = DEFAULT_PRELOAD) -> Server:
    """The server for ``preload``, started on first use.

    Start it from the main thread: it dies with the thread that started it.
    """
    key = tuple(preload)
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
    """Kill every sandbox this process runs and start no new one (on Ctrl-C)."""
    _stopping.set()
    for pid in list(_running):
        _kill_group(pid)


def isolation(wanted: str = "auto", preload: Sequence[str] = DEFAULT_PRELOAD) -> str:
    """The isolation level to use: ``namespaces`` when a trial sandbox works here, else ``basic``."""
    server(preload)  # started here, from the caller's (main) thread
    if wanted != "auto":
        return wanted
    if "auto" not in _isolation_cache:
        level = "basic"
        if sys.platform.startswith("linux"):
            with tempfile.TemporaryDirectory(prefix="sandbox-probe-") as tmp:
                Path(tmp, "submission").mkdir()
                report = _launch(Path(tmp, "submission"), Path(tmp), [], "unused", Limits(submission_timeout_s=60),
                                 "namespaces", preload, [Path(tmp)], {})
                level = "namespaces" if report.get("ready") else "basic"
        _isolation_cache["auto"] = level
    return _isolation_cache["auto"]


def run_submission(submission: Path, code: Path, parts: Sequence[str], *, runner: str = "grader.suites.runner",
                   limits: Limits = Limits(), level: str = "auto", preload: Sequence[str] = DEFAULT_PRELOAD,
                   protect: Sequence[Path] = (), expected: Optional[Dict[str, int]] = None) -> Dict[str, PartResult]:
    """Run ``runner`` on ``submission`` (a folder with net/ and pruning.py), one process per part.

    ``code`` is put on the runner's ``sys.path`` (the grader package and the
    reference solutions, copied); ``protect`` lists paths that must be
    read-only inside the sandbox (checked at the ``namespaces`` level).
    ``expected`` (tests per part) lets a part whose process died be resumed
    (the runner's ``--resume``). Every part in ``parts`` gets a
    :class:`PartResult`, whatever happens.
    """
    report = _launch(submission, code, list(parts), runner, limits, isolation(level, preload), preload, protect,
                     expected or {})
    problem = report.pop("problem", "") or "it ended before running them"
    return {part: report.get(part) or PartResult(part, outcome=f"did not run: {problem}") for part in parts}


def _launch(submission: Path, code: Path, parts: List[str], runner: str, limits: Limits, level: str,
            preload: Sequence[str], protect: Sequence[Path], expected: Dict[str, int]) -> dict:
    """Run one job in a sandbox; return ``{part: PartResult, "ready": bool, "problem": str}``."""
    if _stopping.is_set():
        return {"problem": "grading was stopped"}
    root = Path(tempfile.mkdtemp(prefix="sandbox-"))
    try:
        inside = root / "in"
        shutil.copytree(submission, inside / "submission", symlinks=True)
        shutil.copytree(code, inside / "code", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        (root / "run").mkdir()
        paths = [*protect, inside, sys.prefix, sys.base_prefix, Path.home()]
        job = {"parts": parts, "runner": runner, "limits": asdict(limits), "isolation": level, "expected": expected,
               "protect": sorted({str(Path(p).resolve()) for p in paths if Path(p).exists()})}
        (inside / "job.json").write_text(json.dumps(job))
        try:
            report = server(preload).submit(root)
        except (OSError, RuntimeError) as error:
            return {"problem": f"the sandbox could not start ({error})"}
        with os.fdopen(report, "rb") as stream:
            lines, timed_out = _read_report(stream, limits.submission_timeout_s)
        return _parse_report(lines, parts, limits, timed_out)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _read_report(stream, timeout: float) -> Tuple[List[bytes], bool]:
    """Read the sandbox's report until it ends or ``timeout`` passes (then kill the sandbox)."""
    deadline, data, worker = time.monotonic() + timeout, b"", None
    try:
        while len(data) < REPORT_CAP:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stream], [], [], left)[0]:
                return data.splitlines(), True
            chunk = os.read(stream.fileno(), 1 << 16)
            if not chunk:
                break
            data += chunk
            if worker is None and b"\n" in data:
                try:
                    worker = json.loads(data.split(b"\n", 1)[0]).get("pid")
                except (ValueError, AttributeError):
                    worker = -1
                if isinstance(worker, int) and worker > 0:
                    _running[worker] = worker
        return data.splitlines(), False
    finally:
        if isinstance(worker, int) and worker > 0:
            _kill_group(worker)
            _running.pop(worker, None)


def _parse_report(lines: List[bytes], parts: List[str], limits: Limits, timed_out: bool) -> dict:
    report: dict = {}
    for line in lines:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("ready"):
            report["ready"] = True
        elif message.get("problem"):
            report["problem"] = str(message["problem"])
        elif message.get("part") in parts:
            report[message["part"]] = PartResult(message["part"], list(message.get("tests") or []),
                                                 str(message.get("outcome", "")), str(message.get("log", "")),
                                                 float(message.get("cpu_seconds", 0.0)))
    if timed_out:
        report["problem"] = f"the {limits.submission_timeout_s:g} s time limit for the whole submission was reached"
    return report


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------- inside: system calls

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 36, 38
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
MS_NOATIME, MS_NODIRATIME, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 16384, 1 << 18, 1 << 21
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x8000000, 0x10000000, 0x20000000, \
    0x40000000
_ST_TO_MS = {getattr(os, st): ms for st, ms in (("ST_NOSUID", MS_NOSUID), ("ST_NODEV", MS_NODEV),
                                                ("ST_NOEXEC", MS_NOEXEC), ("ST_NOATIME", MS_NOATIME),
                                                ("ST_NODIRATIME", MS_NODIRATIME), ("ST_RELATIME", MS_RELATIME))
             if hasattr(os, st)}


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _prctl(option: int, value: int) -> int:
    try:
        return _libc().prctl(option, ctypes.c_ulong(value), 0, 0, 0)
    except (OSError, AttributeError):
        return -1


def _mount(source: Optional[str], target: str, fstype: Optional[str], flags: int, data: Optional[str] = None) -> None:
    encode = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _check(_libc().mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
           f"mount {target}")


def _enter_namespaces() -> None:
    """Enter new user (mapped to root), mount, IPC, network and PID namespaces (the PID one for children)."""
    uid, gid = os.getuid(), os.getgid()
    _check(_libc().unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def _mount_points() -> List[str]:
    with open("/proc/self/mountinfo", "rb") as f:
        return [os.fsdecode(line.split()[4].decode("unicode_escape").encode("latin-1")) for line in f]


def _lockdown(root: Path, job: dict) -> None:
    """As root of the fresh namespaces: a new /proc, all read-only but a tmpfs at ``root/run``, no privileges."""
    run = str(root / "run")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", run, "tmpfs", MS_NOSUID | MS_NODEV, f"size={job['limits']['disk_mb']}m,mode=0755")
    if os.path.isdir("/dev/shm"):
        _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m")
    for point in _mount_points():
        if any(point == keep or point.startswith(keep + "/") for keep in (run, "/dev/shm", "/proc")):
            continue
        try:
            flags = os.statvfs(point).f_flag
            _mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | sum(ms for st, ms in _ST_TO_MS.items()
                                                                              if flags & st))
        except OSError:
            pass  # checked below for the paths that matter
    writable = [p for p in job["protect"] if not os.statvfs(p).f_flag & os.ST_RDONLY]
    if writable:
        raise OSError(f"could not make these read-only: {', '.join(writable)}")
    _drop_privileges()


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_privileges() -> None:
    """Drop every capability, for good: the bounding set too, so that running a program gives none back."""
    for cap in range(64):
        if _prctl(PR_CAPBSET_DROP, cap) != 0:
            break
    _check(_libc().capset(ctypes.byref(_CapHeader(0x20080522, 0)), (_CapData * 2)()), "capset")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def _set_limit(name: str, value: int) -> None:
    limit = getattr(resource, name, None)
    if limit is not None:
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass


def _memory_in_use() -> int:
    """Bytes of private data this process already maps (what RLIMIT_DATA counts)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _children() -> List[int]:
    """Processes whose parent is this one (orphans come here: the worker is a subreaper)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat_file.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.append(int(stat_file.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return found


def _kill_leftovers(pid: int) -> None:
    """Kill the part's process and everything it started, and reap them (give up after 5 s)."""
    give_up = time.monotonic() + 5
    while True:
        _kill_group(pid)
        for target in [-1] if os.getpid() == 1 else [pid, *_children()]:  # PID 1: every other process in the namespace
            try:
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        if time.monotonic() > give_up:
            return
        time.sleep(0.02)


# --------------------------------------------------------------------------- inside: the parts

_SIGNAL_WORDS = {signal.SIGSEGV: "crashed with a segmentation fault (SIGSEGV)",
                 signal.SIGBUS: "crashed with a bus error (SIGBUS)",
                 signal.SIGABRT: "aborted (SIGABRT)",
                 signal.SIGKILL: "was killed (SIGKILL), most likely for using too much memory",
                 signal.SIGXFSZ: "was stopped for writing a file (or output) bigger than the {file_mb} MB limit",
                 signal.SIGXCPU: "was stopped for using too much CPU time"}


def _end_of(status: int, timed_out: bool, timeout: float, file_mb: int) -> str:
    """How a part's process ended, in words; empty when it exited normally."""
    if timed_out:
        return f"was stopped after the {timeout:g} s time limit for this part"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        words = _SIGNAL_WORDS.get(number)
        return words.format(file_mb=file_mb) if words else f"was killed by signal {signal.Signals(number).name}"
    code = os.WEXITSTATUS(status)
    return "" if code == 0 else f"exited with status {code}"


def _clip(text: str, kb: int) -> str:
    """Keep the head and the tail of ``text``, about ``kb`` KB in all."""
    half = kb * 512
    if len(text) <= 2 * half:
        return text
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def _read_clipped(path: Path, kb: int) -> str:
    """The head and tail of a file that may be huge, without reading it all."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size <= kb * 1024:
                return f.read().decode("utf-8", "replace")
            head = f.read(kb * 512).decode("utf-8", "replace")
            f.seek(size - kb * 512)
            return f"{head}\n[... {size - kb * 1024} bytes cut ...]\n{f.read().decode('utf-8', 'replace')}"
    except OSError:
        return ""


def _child(job: dict, part: str, base: Path, report: int, resume: bool) -> None:
    """In the part's process: set the limits, then run the runner for one part. Never returns."""
    code = 1
    try:
        os.close(report)
        os.setpgid(0, 0)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        log = os.open(base / "log.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        limits = job["limits"]
        _set_limit("RLIMIT_DATA", _memory_in_use() + limits["memory_mb"] * 2**20)
        _set_limit("RLIMIT_FSIZE", limits["file_mb"] * 2**20)
        _set_limit("RLIMIT_CORE", 0)
        _set_limit("RLIMIT_NOFILE", 1024)
        if job["isolation"] == "namespaces":  # counted per user namespace; outside one it would count the TA's own
            _set_limit("RLIMIT_NPROC", limits["processes"])
        for name in ("HOME", "TMPDIR", "TMP", "TEMP"):
            os.environ[name] = str(base / ("home" if name == "HOME" else "tmp"))
        tempfile.tempdir = None
        os.chdir(base / "submission")
        sys.argv = [job["runner"], str(base / "submission"), str(base / "results.json"),
                    "--part", part, "--timeout", f"{limits['test_timeout_s']:g}"] + (["--resume"] if resume else [])
        runpy.run_module(job["runner"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: B902 - report anything, then leave
        import traceback
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: B902
                pass
        os._exit(code)


def _run_child(job: dict, root: Path, part: str, report: int, deadline: float, resume: bool) -> Tuple[int, bool]:
    """Fork the part's process (on a fresh copy of the submission) and wait for it; ``(status, timed out)``."""
    base = root / "run" / part
    shutil.rmtree(base / "submission", ignore_errors=True)
    shutil.copytree(root / "in" / "submission", base / "submission")
    pid = os.fork()
    if pid == 0:
        _child(job, part, base, report, resume)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            _kill_group(pid)
            os.kill(pid, signal.SIGKILL)
            status = os.waitpid(pid, 0)[1]
            _kill_leftovers(pid)
            return status, True
        time.sleep(0.02)
    _kill_leftovers(pid)
    return status, False


def _recorded(base: Path, kb: int) -> List[dict]:
    """The tests in the part's results file, their outputs clipped."""
    try:
        recorded = json.loads((base / "results.json").read_text()).get("tests", [])
        return [dict(t, output=_clip(str(t.get("output", "")), kb)) for t in recorded if isinstance(t, dict)]
    except (OSError, ValueError, AttributeError):
        return []


def _run_part(job: dict, root: Path, part: str, report: int) -> dict:
    """Run one part and describe what came of it.

    When the process dies during a test (a crash, ``os._exit``, a hang only
    faulthandler could end) and its results file shows progress, the part is
    started again with ``--resume``: that test keeps its 0, the later ones
    still run. No progress, or the part's time limit, ends it.
    """
    limits = job["limits"]
    base = root / "run" / part
    shutil.rmtree(base, ignore_errors=True)
    (base / "home").mkdir(parents=True)
    (base / "tmp").mkdir()
    expected = int(job.get("expected", {}).get(part, 0))
    started, cpu = time.monotonic(), _children_cpu()
    outcome, tests, restarts = "", [], 0
    while True:
        status, timed_out = _run_child(job, root, part, report, started + limits["part_timeout_s"], restarts > 0)
        ended = _end_of(status, timed_out, limits["part_timeout_s"], limits["file_mb"])
        outcome = outcome or ended
        before, tests = len(tests), _recorded(base, limits["output_kb"])
        if not ended or timed_out or len(tests) >= expected or len(tests) <= before:
            break
        restarts += 1
    if restarts:
        outcome += f"; the tests after the one it died in ran in a new process ({restarts} restart(s))"
    message = {"part": part, "tests": tests, "log": _read_clipped(base / "log.txt", 4), "outcome": outcome,
               "seconds": round(time.monotonic() - started, 2), "cpu_seconds": round(_children_cpu() - cpu, 2)}
    shutil.rmtree(base, ignore_errors=True)
    return message


def _send(report: int, message: dict) -> None:
    os.write(report, (json.dumps(message) + "\n").encode())


def _run_parts(root: Path, job: dict, report: int) -> None:
    """The sandbox proper (PID 1, or the worker at the basic level): each part in turn."""
    _set_limit("RLIMIT_CORE", 0)
    _prctl(PR_SET_DUMPABLE, 0)  # parts cannot read this process's memory or its report pipe
    sys.path.insert(0, str(root / "in" / "code"))
    os.environ["PYTHONPATH"] = str(root / "in" / "code")
    _send(report, {"ready": True, "isolation": job["isolation"]})
    for part in job["parts"]:
        _send(report, _run_part(job, root, part, report))


def _worker(root: Path, report: int) -> None:
    """One submission, in the process the server forked for it. Never returns."""
    try:
        os.setsid()
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        _send(report, {"pid": os.getpid()})
        job = json.loads((root / "in" / "job.json").read_text())
        if job["isolation"] != "namespaces":
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
            _run_parts(root, job, report)
            os._exit(0)
        _enter_namespaces()
        pid = os.fork()
        if pid == 0:  # PID 1 of the new PID namespace
            try:
                _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                _lockdown(root, job)
                _run_parts(root, job, report)
            except OSError as error:
                _send(report, {"problem": f"the sandbox could not be set up ({error})"})
            finally:
                os._exit(0)
        os.close(report)
        os.waitpid(pid, 0)
    except Exception as error:  # noqa: BLE001 - tell the host, whatever it is
        try:
            _send(report, {"problem": f"the sandbox could not be set up ({type(error).__name__}: {error})"})
        except OSError:
            pass
    os._exit(0)


def _reap(*_) -> None:
    """Collect finished workers (their CPU time then counts for the server, and for whoever waits for it)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def serve(channel_fd: int, preload: Sequence[str]) -> None:
    """The server: preload, then fork a worker for every job received; when the host hangs up, wait and leave."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # grader/ itself must not be importable from the sandbox
    for module in preload:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a missing optional library is the runner's business
            pass
    signal.signal(signal.SIGCHLD, _reap)
    channel = socket.socket(fileno=channel_fd)
    channel.send(b"ready")
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
            _worker(Path(os.fsdecode(message)), fds[0])
        os.close(fds[0])
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]), [m for m in sys.argv[3].split(",") if m])
