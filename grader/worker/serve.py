"""The worker's main loop, inside the box: ``python -m grader.worker.serve CHANNEL_FD``.

It imports torch, numpy, scipy and scikit-learn once, says it is ready, then
answers the judge's requests one at a time on the channel. Every request is
handled in a process forked for it:

* the child sets its limits, sends its own output to /dev/null (what the
  student's code prints through Python is kept, the first 1000 characters,
  and sent back with the answer), runs the operation of ``ops.py`` in a
  fresh scratch folder and writes one frame to a pipe;
* the parent reads that frame (at most ``protocol.MAX_BODY`` bytes), then
  kills every process the request left behind and removes its scratch
  folder, and forwards the answer with one more field, ``ended``: empty
  when the child exited normally, else how it died.

The worker runs no student code itself and holds the only copy of the
channel, but it lives in the student's box: the judge trusts nothing it
says beyond the format. Limits come from the environment
(``GRADER_LIMITS``, JSON, set by ``grader/box.py``).
"""
import ctypes
import io
import json
import os
import random
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

from grader.homework import PRINTED_CHARACTERS
from grader.worker import protocol

PRELOAD = ("numpy", "torch", "scipy.sparse", "sklearn.cluster", "tqdm", "torch._dynamo", "torch.export",
           "torch.ao.quantization.quantize_fx")
"""Imported once by the process that forks the requests. The last three are Part 2's tracing stack
(torch.export, FX quantisation, the ONNX exporter all trace with dynamo): about 1.7 s and 160 MB once, instead
of 2-4 s in every request that prepares, captures or exports a model."""
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36


class Bounded(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters written to it and counts the rest."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.kept, self.dropped = limit, io.StringIO(), 0

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        text = str(text)
        room = max(self.limit - self.kept.tell(), 0)
        self.kept.write(text[:room])
        self.dropped += max(len(text) - room, 0)
        return len(text)



def prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL(None).prctl(option, ctypes.c_ulong(value), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def set_limit(name: str, value: int) -> None:
    try:
        resource.setrlimit(getattr(resource, name), (value, value))
    except (ValueError, OSError, AttributeError):
        pass


def prefer_to_be_killed() -> None:
    """Out of memory, the kernel should kill the request's processes, not the worker that forks them."""
    try:
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass  # the box runs without it; the cgroup still caps the memory


def memory_in_use() -> int:
    """Bytes of private data this process maps (what RLIMIT_DATA counts)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    return 0


def child(write: int, header: dict, arrays: dict, limits: dict) -> None:
    """The request's process: limits, seeds, a scratch folder, the operation, one frame. Never returns."""
    frame = protocol.encode({"error": "the worker failed before running your code"})
    try:
        os.setpgid(0, 0)
        prctl(PR_SET_DUMPABLE, 1)  # the worker is not; this process holds nothing but the student's request
        prefer_to_be_killed()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        set_limit("RLIMIT_CORE", 0)
        set_limit("RLIMIT_FSIZE", limits["file_mb"] << 20)
        set_limit("RLIMIT_NOFILE", 256)
        if not limits["cgroup"]:
            set_limit("RLIMIT_DATA", memory_in_use() + (limits["memory_mb"] << 20))
        scratch = Path(tempfile.mkdtemp(prefix="request-"))
        os.chdir(scratch)
        os.environ["HOME"] = os.environ["TMPDIR"] = str(scratch)
        tempfile.tempdir = None

        import numpy as np
        import torch
        from grader.worker import ops
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
        printed = Bounded(PRINTED_CHARACTERS)
        sys.stdout = sys.stderr = printed
        answer, answer_arrays = ops.answer(header, arrays)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        frame = protocol.encode({**answer, "printed": printed.kept.getvalue(), "printed_more": printed.dropped},
                                answer_arrays)
    except BaseException as error:  # noqa: B902 - whatever happened, answer
        frame = protocol.encode({"error": f"the answer could not be sent ({type(error).__name__})"})
    finally:
        try:
            protocol.write_all(write, frame)
        finally:
            os._exit(0)


def collect(read: int, pid: int) -> Tuple[bytes, int]:
    """What the child sends until it exits, and its wait status (-1: the answer grew too large and it was killed).

    A process the child left behind may hold the pipe open: the answer ends
    when the child has exited and nothing more is waiting.
    """
    data, status, cap = bytearray(), None, protocol.MAX_BODY + protocol.MAX_HEADER + 64
    while True:
        if status is None:
            done, code = os.waitpid(pid, os.WNOHANG)
            status = code if done else None
        if not select.select([read], [], [], 0 if status is not None else 0.05)[0]:
            if status is not None:
                break
            continue
        chunk = os.read(read, 1 << 20)
        if not chunk:
            break
        data += chunk
        if len(data) > cap:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return b"", -1
    return bytes(data), os.waitpid(pid, 0)[1] if status is None else status


def kill_leftovers(pid: int, in_namespace: bool) -> None:
    """Kill whatever the request started: in the box's PID namespace every process but this one and init."""
    if in_namespace:
        targets: List[int] = [-1]
    else:  # no namespace: the child's process group and the orphans this subreaper inherited
        targets = [-pid] + [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat") if parent_of(p) == os.getpid()]
    for target in targets:
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    give_up = time.monotonic() + 5
    while time.monotonic() < give_up:
        try:
            if not os.waitpid(-1, os.WNOHANG)[0]:
                time.sleep(0.01)
        except ChildProcessError:
            return


def parent_of(stat: Path) -> int:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def reap(*_) -> None:
    """Collect every child that has ended (a SIGCHLD handler)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def ended(status: int) -> str:
    """How the request's process ended, in words; empty when it exited normally."""
    if status == -1:
        return f"sent an answer larger than {protocol.MAX_BODY >> 20} MB"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        words = {signal.SIGSEGV: "crashed with a segmentation fault (SIGSEGV)",
                 signal.SIGBUS: "crashed with a bus error (SIGBUS)", signal.SIGABRT: "aborted (SIGABRT)",
                 signal.SIGKILL: "was killed (SIGKILL), most likely for using too much memory",
                 signal.SIGXFSZ: "was stopped for writing a file bigger than the limit"}
        return words.get(number, f"was killed by signal {signal.Signals(number).name}")
    code = os.WEXITSTATUS(status)
    return "" if code == 0 else f"exited with status {code} (os._exit or a crash)"


def handle(frame: bytes, limits: dict) -> bytes:
    """Answer one request frame in a forked child; the answer frame gets ``ended``."""
    try:
        header, arrays = protocol.decode(frame)
    except protocol.ProtocolError as error:
        return protocol.encode({"error": f"the request could not be read ({error})",
                                "ended": ""})
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        child(write, header, arrays, limits)
    os.close(write)
    data, status = collect(read, pid)
    os.close(read)
    kill_leftovers(pid, limits["pid_namespace"])
    for scratch in Path(tempfile.gettempdir()).glob("request-*"):
        shutil.rmtree(scratch, ignore_errors=True)
    how = ended(status)
    try:
        answer, answer_arrays = protocol.decode(data) if data else ({}, {})
    except protocol.ProtocolError as error:
        answer, answer_arrays = {}, {}
        how = how or f"sent a malformed answer ({error})"
    if not data and not how:
        how = "ended without answering"
    return protocol.encode({**answer, "ended": how}, answer_arrays)


def preload() -> None:
    """Import what every request needs, once, in the process that forks them."""
    import importlib
    for module in PRELOAD:
        importlib.import_module(module)
    import torch
    torch.set_num_threads(1)
    importlib.import_module("grader.worker.ops")


def serve(channel: int, limits: dict, student: str) -> int:
    """Say ready, then answer requests until the judge hangs up."""
    from grader.worker import ops
    ops.STUDENT = Path(student)
    ops.student_path()
    prctl(PR_SET_DUMPABLE, 0)  # the requests' processes cannot read this one's memory
    if not limits["pid_namespace"]:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    protocol.write_all(channel, protocol.encode({"ready": True}))
    while True:
        try:
            frame = protocol.read_frame(channel)
        except protocol.ProtocolError:
            return 0
        protocol.write_all(channel, handle(frame, limits))


def main(argv: List[str]) -> int:
    preload()
    return serve(int(argv[0]), json.loads(os.environ["GRADER_LIMITS"]), os.environ["GRADER_STUDENT_DIR"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
