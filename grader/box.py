"""The student's box: the only place student code runs, with nothing of the grader, the class or the machine in it.

The judge (``grader/suites/``) opens one box per submission and sends it
requests; the worker inside (``grader/worker/``) runs the student's code and
answers with data. A box is one of two levels:

``bwrap``
    bubblewrap (the sandbox Flatpak uses) with every namespace new: no
    network, no other process visible, no host IPC. Its filesystem holds
    ``/usr``, the Python installation and its packages (read-only), the
    worker's code and the submission (read-only, at ``/box``), a
    size-capped tmpfs at ``/tmp`` and nothing else: no ``solutions/``, no
    hidden suites, no submissions or output folder, no home, no host
    ``/tmp``, no socket files. All capabilities are dropped, new user
    namespaces are refused, and when the grader runs as root the box runs
    as ``nobody`` (uid 65534). Memory and process count of the whole box
    come from a cgroup where one can be made (v2, or v1 ``memory`` and
    ``pids``), else from per-process limits.
``basic``
    the worker as a plain child process with per-process limits. The score
    is still the judge's alone, but the student's code can read and write
    whatever the grader's user can: only for code you would run yourself.

Nothing here imports torch: the judge's fork server imports this module.
"""
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from grader import seccomp
from grader.worker import protocol

LEVELS = ("bwrap", "basic")
NOBODY = 65534
START_TIMEOUT = 120.0
"""Seconds the worker may take to import torch and say it is ready."""
PRELOADED_MB = 1024
"""Memory the worker's preloaded libraries take, added to ``Limits.memory_mb`` for the whole box's cgroup."""
WORKER_FILES = ("__init__.py", "models.py", "ops.py", "protocol.py", "serve.py")
PYTHON_FLAGS = ("-B", "-s")
CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x20000, 4096, 16384, 1 << 18


@dataclass(frozen=True)
class Limits:
    """What one submission may use. Times in seconds, sizes in MB."""
    test_timeout_s: float = 60.0
    submission_timeout_s: float = 900.0
    memory_mb: int = 2048
    """On top of what the preloaded libraries (torch...) already use."""
    file_mb: int = 64
    disk_mb: int = 512
    processes: int = 256
    output_kb: int = 8


class BoxFailure(Exception):
    """The box did not answer: the worker crashed, hung or sent something unreadable; ``str()`` says which."""


# --------------------------------------------------------------------------- what this machine supports


def bwrap_problem() -> str:
    """Why bubblewrap cannot be used here, or ``""`` when a trial box runs."""
    if not shutil.which("bwrap"):
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    with tempfile.TemporaryDirectory(prefix="box-probe-") as folder:
        Path(folder, "student").mkdir()
        _prepare(Path(folder))
        seccomp_fd = _seccomp_fd(Path(folder))
        command, staged = _bwrap_command(Path(folder), Limits(), -1, cgroup=False, seccomp_fd=seccomp_fd)
        command = command[:command.index("-m")] + ["-c", "import grader.worker.protocol"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                  pass_fds=[] if seccomp_fd is None else [seccomp_fd],
                                  preexec_fn=lambda: _become_box(staged, None))
        except (OSError, subprocess.TimeoutExpired, subprocess.SubprocessError) as error:
            return f"bubblewrap did not start ({error})"
        finally:
            if seccomp_fd is not None:
                os.close(seccomp_fd)
    if done.returncode != 0:
        return f"bubblewrap could not make a sandbox here: {done.stderr.strip()[-300:]}"
    return ""


_cache: Dict[str, str] = {}


def strongest_level() -> Tuple[str, str]:
    """``(level, why not bwrap)``: ``bwrap`` when it works here, else ``basic`` and the reason."""
    if "bwrap" not in _cache:
        _cache["bwrap"] = bwrap_problem()
    return ("basic", _cache["bwrap"]) if _cache["bwrap"] else ("bwrap", "")


def describe(level: str) -> str:
    """The level in words, as recorded in every result: what encloses the student's code."""
    if level == "basic":
        return "basic (no sandbox: per-process limits only)"
    who = f"uid {NOBODY}" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    limits = "cgroup memory and pids" if Cgroup.available() else "per-process memory limits"
    syscalls = ", seccomp filter" if seccomp.program() is not None else ""
    return f"bwrap (namespaces, minimal read-only root, no network{syscalls}, {limits}, {who})"


# --------------------------------------------------------------------------- cgroups


class Cgroup:
    """A memory and process limit for a whole box (v2, or v1 ``memory`` + ``pids``); removed by ``close``."""

    ROOT = Path("/sys/fs/cgroup")

    def __init__(self, memory_mb: int, processes: int) -> None:
        name = f"grader-box-{os.getpid()}-{time.monotonic_ns()}"
        self.folders: List[Path] = []
        if (self.ROOT / "cgroup.controllers").exists():
            folder = self._own(None) / name
            folder.mkdir()
            self.folders.append(folder)
            (folder / "memory.max").write_text(str(memory_mb << 20))
            (folder / "memory.swap.max").exists() and (folder / "memory.swap.max").write_text("0")
            (folder / "pids.max").write_text(str(processes))
        else:
            memory, pids = self._own("memory") / name, self._own("pids") / name
            for folder in (memory, pids):
                folder.mkdir()
                self.folders.append(folder)
            (memory / "memory.limit_in_bytes").write_text(str(memory_mb << 20))
            if (memory / "memory.memsw.limit_in_bytes").exists():  # memory and swap together
                (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_mb << 20))
            (pids / "pids.max").write_text(str(processes))

    @classmethod
    def _own(cls, controller: Optional[str]) -> Path:
        """This process's cgroup folder for ``controller`` (``None``: the v2 hierarchy)."""
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            number, controllers, path = line.split(":", 2)
            if (controller is None and number == "0") or controller in controllers.split(","):
                return cls.ROOT / (controller or "") / path.lstrip("/")
        raise OSError(f"no {controller or 'v2'} cgroup")

    @classmethod
    def available(cls) -> bool:
        if "cgroup" not in _cache:
            try:
                Cgroup(64, 8).close()
                _cache["cgroup"] = "yes"
            except OSError:
                _cache["cgroup"] = ""
        return bool(_cache["cgroup"])

    @classmethod
    def sweep(cls, pid: int) -> None:
        """Remove the cgroups a judge (process ``pid``) left behind, and kill what is still in them."""
        try:
            folders = [cls._own(None)] if (cls.ROOT / "cgroup.controllers").exists() else \
                [cls._own("memory"), cls._own("pids")]
        except OSError:
            return
        for parent in folders:
            for folder in parent.glob(f"grader-box-{pid}-*"):
                leftover = cls.__new__(cls)
                leftover.folders = [folder]
                leftover.close()

    def enter(self) -> None:
        """Move the calling process into the cgroup (run in the box's first process, before exec)."""
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    def close(self) -> None:
        """Kill everything left in the cgroup and remove it."""
        for folder in self.folders:
            for _ in range(100):
                try:
                    pids = (folder / "cgroup.procs").read_text().split()
                except OSError:
                    break
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                try:
                    folder.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)


# --------------------------------------------------------------------------- the box


def _stage_code(code: Path) -> None:
    """The worker's code at ``code``: ``grader/worker/`` and an empty ``grader`` package around it."""
    here = Path(__file__).resolve().parent
    (code / "grader" / "worker").mkdir(parents=True)
    (code / "grader" / "__init__.py").write_text("")
    for name in WORKER_FILES:
        shutil.copyfile(here / "worker" / name, code / "grader" / "worker" / name)


def _prepare(root: Path) -> None:
    """Stage the worker's code and the staging points in ``root``, and let ``nobody`` read the box's files.

    ``root`` itself only lets others through (0711): its name is random and
    nothing outside the box lists it.
    """
    _stage_code(root / "code")
    for n in range(len(_python_paths())):
        (root / "mnt" / str(n)).mkdir(parents=True)
    root.chmod(0o711)
    for top in ("code", "student", "mnt"):
        for path in [root / top, *(root / top).rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def _become_box(staged: Optional[Dict[Path, Path]], cgroup: Optional["Cgroup"]) -> None:
    """In the box's first process, before exec: join the cgroup; as root, bind the staged folders and become nobody."""
    if cgroup is not None:
        cgroup.enter()
    if staged is not None and os.geteuid() == 0:
        _bind_staged(staged)
        _drop_to_nobody()
    elif staged is not None:
        for folder, mount in staged.items():  # an ordinary user binds the folders themselves
            mount.rmdir()
            mount.symlink_to(folder)


def _python_paths() -> List[Path]:
    """The folders the worker's interpreter needs: the installation, the environment, their packages."""
    folders = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.is_dir() and ("site-packages" in path.parts or "dist-packages" in path.parts):
            folders.add(path)
    return sorted(p for p in folders if not any(p != q and p.is_relative_to(q) for q in folders))


def _bwrap_command(root: Path, limits: Limits, channel: int, cgroup: bool,
                   seccomp_fd: Optional[int] = None) -> Tuple[List[str], Dict[Path, Path]]:
    """The bwrap command line for a box over ``root`` (``code/``, ``student/``), and the host folders it needs.

    The folders (the Python installation...) are bound at ``root/mnt/<n>`` by
    ``_enter`` first: a folder ``nobody`` cannot reach (a pyenv under
    ``/root``) can still be handed to a box that runs as ``nobody``.
    """
    staged = {folder: root / "mnt" / str(n) for n, folder in enumerate(_python_paths())}
    command = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
               "--cap-drop", "ALL", "--clearenv", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "sbin"):
        top = Path("/") / name
        if top.is_symlink():
            command += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            command += ["--ro-bind", str(top), str(top)]
    if Path("/etc/ld.so.cache").is_file():
        command += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for folder, mount in staged.items():
        command += ["--ro-bind", str(mount), str(folder)]
    command += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.disk_mb << 20), "--tmpfs", "/tmp",
                "--ro-bind", str(root / "code"), "/box/code", "--ro-bind", str(root / "student"), "/box/student",
                "--chdir", "/tmp"]
    for name, value in _environment(limits, "/box", cgroup, True).items():
        command += ["--setenv", name, value]
    if seccomp_fd is not None:
        command += ["--seccomp", str(seccomp_fd)]
    command += ["--", sys.executable, *PYTHON_FLAGS, "-m", "grader.worker.serve", str(channel)]
    return command, staged


def _seccomp_fd(root: Path) -> Optional[int]:
    """A file descriptor holding the box's seccomp filter (bwrap reads it), or None where there is none."""
    filter_program = seccomp.program()
    if filter_program is None:
        return None
    (root / "seccomp.bpf").write_bytes(filter_program)
    return os.open(root / "seccomp.bpf", os.O_RDONLY)


def _bind_staged(staged: Dict[Path, Path]) -> None:
    """In a private mount namespace of the calling process, bind each host folder at its staging point."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0 or libc.mount(None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None):
        raise OSError(ctypes.get_errno(), "cannot make a private mount namespace")
    for folder, mount in staged.items():
        if libc.mount(os.fsencode(folder), os.fsencode(mount), None, ctypes.c_ulong(MS_BIND | MS_REC), None):
            raise OSError(ctypes.get_errno(), f"cannot bind {folder}")


def _environment(limits: Limits, box: str, cgroup: bool, pid_namespace: bool) -> Dict[str, str]:
    """The worker's whole environment: nothing of the TA's (tokens, proxies...) goes in."""
    worker_limits = {"memory_mb": limits.memory_mb, "file_mb": limits.file_mb, "cgroup": cgroup,
                     "pid_namespace": pid_namespace}
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp",
            "PYTHONPATH": f"{box}/code", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg", "GRADER_STUDENT_DIR": f"{box}/student",
            "GRADER_LIMITS": json.dumps(worker_limits)}


def _drop_to_nobody() -> None:
    """Become ``nobody`` for good."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


class Box:
    """One submission's box, started on the first request and again after a request that broke it."""

    def __init__(self, student: Path, limits: Limits, level: str) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown isolation level {level!r} (one of {', '.join(LEVELS)})")
        self.limits, self.level = limits, level
        self.root = Path(tempfile.mkdtemp(prefix="grader-box-"))
        shutil.copytree(student, self.root / "student", symlinks=False)
        _prepare(self.root)
        self.process: Optional[subprocess.Popen] = None
        self.channel: Optional[socket.socket] = None
        self.cgroup: Optional[Cgroup] = None
        self.starts = 0

    def request(self, header: dict, arrays: Optional[protocol.Arrays], deadline: float) -> Tuple[dict, protocol.Arrays]:
        """Send one request and return the worker's answer; raise ``BoxFailure`` if there is none by ``deadline``."""
        if self.process is None:
            self._start()
        try:
            protocol.write_all(self.channel.fileno(), protocol.encode(header, arrays))
            return protocol.decode(protocol.read_frame(self.channel.fileno(), deadline))
        except protocol.Timeout:
            self.stop()
            raise BoxFailure("timeout") from None
        except (protocol.ProtocolError, OSError) as error:
            self.stop()
            raise BoxFailure(f"the box's worker stopped answering ({error})") from None

    def _start(self) -> None:
        self.starts += 1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cgroup = self.level == "bwrap" and Cgroup.available()
        try:
            if cgroup:
                self.cgroup = Cgroup(self.limits.memory_mb + PRELOADED_MB, self.limits.processes)
            seccomp_fd = _seccomp_fd(self.root) if self.level == "bwrap" else None
            if self.level == "bwrap":
                command, staged = _bwrap_command(self.root, self.limits, theirs.fileno(), cgroup, seccomp_fd)
                env = None
            else:
                staged = None
                command = [sys.executable, *PYTHON_FLAGS, "-m", "grader.worker.serve", str(theirs.fileno())]
                env = _environment(self.limits, str(self.root), False, False)
                (self.root / "tmp").mkdir(exist_ok=True)
                env.update(HOME=str(self.root / "tmp"), TMPDIR=str(self.root / "tmp"))
            inherited = [theirs.fileno()] + ([] if seccomp_fd is None else [seccomp_fd])
            self.process = subprocess.Popen(command, pass_fds=inherited, env=env,
                                            cwd=self.root / "tmp" if env else "/", stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True,
                                            preexec_fn=lambda: _become_box(staged, self.cgroup))
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        finally:
            theirs.close()
        self.channel = ours
        try:
            header, _ = protocol.decode(protocol.read_frame(ours.fileno(), time.monotonic() + START_TIMEOUT))
        except (protocol.ProtocolError, OSError) as error:
            self.stop()
            raise BoxFailure(f"the box could not be started ({error})") from None
        if not header.get("ready"):
            self.stop()
            raise BoxFailure("the box could not be started (its worker did not say it was ready)")

    def stop(self) -> None:
        """Kill the worker and everything it started."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.process.kill()
            self.process.wait()
            self.process = None
        if self.cgroup is not None:
            self.cgroup.close()
            self.cgroup = None
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def close(self) -> None:
        """End the box: hang up (the worker leaves, so its CPU time is counted), then kill what is left."""
        if self.process is not None and self.channel is not None:
            self.channel.close()
            self.channel = None
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Box":
        return self

    def __exit__(self, *_) -> None:
        self.close()
