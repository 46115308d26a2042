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
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from grader import seccomp
from grader.homework import Limits
from grader.worker import protocol

LEVELS = ("bwrap", "basic")
NOBODY = 65534
START_TIMEOUT = 120.0
"""Seconds the worker may take to import torch and say it is ready."""
PRELOADED_MB = 1024
"""Memory the worker's preloaded libraries take, added to ``Limits.memory_mb`` for the whole box's cgroup."""
WORKER_FILES = ("__init__.py", "models.py", "ops.py", "deploy_ops.py", "mcu_ops.py", "protocol.py", "serve.py")
NAMESPACE_NAMES = ("mnt", "ipc", "uts", "net", "pid", "user")
"""The box's namespaces a cell joins, in ``grader/worker/cell.py``'s order."""
PYTHON_FLAGS = ("-B", "-s")
CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x20000, 4096, 16384, 1 << 18


class BoxFailure(Exception):
    """The box did not answer: the worker crashed, hung or sent something unreadable; ``str()`` says which."""


# --------------------------------------------------------------------------- what this machine supports


def bwrap_problem() -> str:
    """Why a ``bwrap`` box cannot be made here, or ``""`` when a trial box starts and answers."""
    if not shutil.which("bwrap"):
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    with tempfile.TemporaryDirectory(prefix="box-probe-") as folder:
        Path(folder, "student").mkdir()
        try:
            with Box(Path(folder, "student"), Limits(), "bwrap") as trial:
                trial.start()
        except (BoxFailure, OSError, subprocess.SubprocessError) as error:
            return f"bubblewrap could not make a box here ({error})"
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
        self.add(os.getpid())

    def add(self, pid: int) -> None:
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(pid))

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
    shutil.copyfile(here / "homework.py", code / "grader" / "homework.py")
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


HOLDER = """
import os, select
os.write(1, b"up")
os.close(1)
while True:
    try:
        os.waitpid(-1, 0 if not select.select([0], [], [], 0)[0] else os.WNOHANG)
    except ChildProcessError:
        if not os.read(0, 1):
            break
"""
"""The box's PID 1: says it is up (the box is then complete), reaps what is left to it, and ends, the box with it,
when the judge closes its stdin."""


def _bwrap_command(root: Path, limits: Limits, info_fd: int, seccomp_fd: Optional[int]) -> Tuple[List[str], Dict[Path, Path]]:
    """The bwrap command line for a box over ``root`` (``code/``, ``student/``), and the host folders it needs.

    Its only process is ``HOLDER``, as PID 1; the worker joins it (``grader/worker/cell.py``).

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
    if seccomp_fd is not None:
        command += ["--seccomp", str(seccomp_fd)]
    command += ["--as-pid-1", "--info-fd", str(info_fd), "--", os.path.realpath(sys.executable), "-S", "-B", "-c",
                HOLDER]
    return command, staged


def _seccomp_fd(root: Path) -> Optional[int]:
    """A file descriptor holding the box's seccomp filter (bwrap reads it), or None where there is none."""
    filter_program = seccomp.program()
    if filter_program is None:
        return None
    (root / "seccomp.bpf").write_bytes(filter_program)
    return os.open(root / "seccomp.bpf", os.O_RDONLY)


class Zygote:
    """The process that has imported torch once and forks a worker into each box (``grader/worker/cell.py``).

    It runs no student code; each cell it forks joins a box's namespaces and
    gives up every privilege before the first request. Forked processes (the
    judges) share it: each order is one datagram, each answer has its own pipe.
    """

    def __init__(self) -> None:
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        environment = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
                       "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1",
                       "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        self.process = subprocess.Popen([sys.executable, *PYTHON_FLAGS, "-m", "grader.worker.cell",
                                         str(theirs.fileno())], pass_fds=[theirs.fileno()], env=environment,
                                        cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        theirs.close()
        self.ready = False

    def wait_ready(self) -> None:
        """Wait until it has imported everything (it starts in the background: the caller can work meanwhile)."""
        if self.ready:
            return
        self.control.settimeout(START_TIMEOUT)
        try:
            self.ready = self.control.recv(16) == b"ready"
        except OSError:
            pass
        self.control.settimeout(None)
        if not self.ready:
            raise BoxFailure("the worker's zygote did not start")

    def order(self, order: dict, fds: List[int]) -> None:
        self.wait_ready()
        socket.send_fds(self.control, [json.dumps(order).encode()], fds)

    def alive(self) -> bool:
        """Whether it still runs (asked with a signal: in a forked judge it is not a child to poll)."""
        try:
            os.kill(self.process.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def close(self) -> None:
        self.control.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_zygotes: Dict[int, Zygote] = {}


def zygote() -> Zygote:
    """This process's zygote (a forked judge uses the one its server started), started on first use."""
    owner = os.getpid()
    for pid, running in list(_zygotes.items()):
        if running.alive():
            return running
        del _zygotes[pid]
    _zygotes[owner] = Zygote()
    return _zygotes[owner]


def close_zygotes() -> None:
    for running in _zygotes.values():
        running.close()
    _zygotes.clear()


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
        """Send one request and return the worker's answer; raise ``BoxFailure`` if there is none by ``deadline``.

        Starting the box (the first request, or one after a request broke it) moves ``deadline`` by the time the
        start took: that is the grader's time, not the student's code's.
        """
        if self.process is None:
            started = time.monotonic()
            self.start()
            deadline += time.monotonic() - started
        try:
            protocol.write_all(self.channel.fileno(), protocol.encode(header, arrays))
            return protocol.decode(protocol.read_frame(self.channel.fileno(), deadline))
        except protocol.Timeout:
            self.stop()
            raise BoxFailure("timeout") from None
        except (protocol.ProtocolError, OSError) as error:
            self.stop()
            raise BoxFailure(f"the box's worker stopped answering ({error})") from None

    def start(self) -> None:
        """Start the box and its worker; raise ``BoxFailure`` if it does not say it is ready."""
        self.starts += 1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.channel = ours
        try:
            try:
                if self.level == "bwrap":
                    self._start_bwrap(theirs)
                else:
                    self._start_basic(theirs)
            finally:
                theirs.close()
            header, _ = protocol.decode(protocol.read_frame(ours.fileno(), time.monotonic() + START_TIMEOUT))
            if not header.get("ready"):
                raise protocol.ProtocolError(str(header.get("error", "its worker did not say it was ready")))
        except (protocol.ProtocolError, OSError, ValueError) as error:
            self.stop()
            raise BoxFailure(f"the box could not be started ({error})") from None

    def _start_basic(self, theirs: socket.socket) -> None:
        env = _environment(self.limits, str(self.root), False, False)
        (self.root / "tmp").mkdir(exist_ok=True)
        env.update(HOME=str(self.root / "tmp"), TMPDIR=str(self.root / "tmp"))
        self.process = subprocess.Popen([sys.executable, *PYTHON_FLAGS, "-m", "grader.worker.serve",
                                         str(theirs.fileno())], pass_fds=[theirs.fileno()], env=env,
                                        cwd=self.root / "tmp", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)

    def _start_bwrap(self, theirs: socket.socket) -> None:
        """bubblewrap makes the box around a waiting PID 1; a cell of the zygote joins it and serves."""
        cgroup = Cgroup.available()
        if cgroup:
            self.cgroup = Cgroup(self.limits.memory_mb + PRELOADED_MB, self.limits.processes)
        info_read, info_write = os.pipe()
        seccomp_fd = _seccomp_fd(self.root)
        command, staged = _bwrap_command(self.root, self.limits, info_write, seccomp_fd)
        try:
            self.process = subprocess.Popen(command, pass_fds=[info_write] + ([seccomp_fd] if seccomp_fd else []),
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, start_new_session=True,
                                            preexec_fn=lambda: _become_box(staged, self.cgroup))
        finally:
            os.close(info_write)
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        with os.fdopen(info_read, "rb") as info:
            holder = int(json.loads(info.read() or b"{}").get("child-pid", 0))
        # bwrap reports the PID before the box is complete; its PID 1 speaks once everything is in place.
        up = select.select([self.process.stdout], [], [], START_TIMEOUT)[0]
        if not holder or not up or self.process.stdout.read(2) != b"up":
            raise OSError("bubblewrap did not start the box")
        namespaces = [os.open(f"/proc/{holder}/ns/{name}", os.O_RDONLY) for name in NAMESPACE_NAMES]
        reply_read, reply_write = os.pipe()
        order = {"environment": _environment(self.limits, "/box", cgroup, True),
                 "seccomp": (seccomp.program() or b"").hex()}
        try:
            zygote().order(order, [theirs.fileno(), reply_write, *namespaces])
        finally:
            for fd in (reply_write, *namespaces):
                os.close(fd)
        with os.fdopen(reply_read, "rb") as reply:
            ready = select.select([reply], [], [], START_TIMEOUT)[0]
            worker = int(reply.readline() or 0) if ready else 0
        if not worker:
            raise OSError("the worker could not join the box")
        if self.cgroup is not None:
            self.cgroup.add(worker)
        self.channel.sendall(b"go")

    def stop(self) -> None:
        """Kill the box (its PID 1 first: the kernel then kills everything in it) and its cgroup."""
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
        """End the box: hang up, let its PID 1 reap the worker and leave (so their CPU is counted), kill the rest."""
        if self.process is not None and self.channel is not None:
            self.channel.close()
            self.channel = None
            if self.process.stdin is not None:
                self.process.stdin.close()
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
