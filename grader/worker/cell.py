"""Workers that enter a box without importing torch again: ``python -m grader.worker.cell CONTROL_FD``.

Importing torch, scipy and scikit-learn costs about 4 s of CPU, more than
grading a submission. So one *zygote* process per grading run imports them
once; it never runs student code and holds nothing but those libraries. For
each box, bubblewrap builds the namespaces and the filesystem as usual (its
first process only waits, as the box's PID 1), and the zygote forks a
*cell* that joins them:

1. ``setns`` into the box's mount, IPC, UTS, network, PID and user
   namespaces (the mount namespace brings bubblewrap's root with it);
2. fork, so that the worker is a process of the box's PID namespace; its
   host PID goes back to the judge, which puts it into the box's cgroup;
3. become the box's uid for good, drop every capability (bounding set
   included), set ``no_new_privs``, load the seccomp filter, close every
   file descriptor but the channel;
4. only then wait for the judge's go, and serve requests exactly as
   ``serve.py`` does (a fork per request).

Everything that decides what the box can reach is bubblewrap's; this file
only joins what it made, and gives up every privilege before any student
code can run.
"""
import ctypes
import json
import os
import signal
import socket
import sys
from typing import List

from grader.worker import protocol, serve

NAMESPACES = ("mnt", "ipc", "uts", "net", "pid", "user")
"""The order matters: bubblewrap's other namespaces belong to an outer user namespace of its own (joined first,
see ``join``); once in the box's user namespace this process has no rights over them."""
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 24, 22, 2
CAPABILITY_VERSION_3 = 0x20080522
NS_GET_PARENT = 0xB702
PR_SET_PDEATHSIG = 1


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def join(namespace_fds: List[int]) -> None:
    """Join the box's namespaces, given as open ``/proc/PID/ns/*`` files in the order of ``NAMESPACES``.

    First the user namespace bubblewrap made around the others (the parent
    of the box's own): there this process has the rights to join them, also
    when it is not root.
    """
    libc = _libc()
    outer = libc.ioctl(namespace_fds[-1], NS_GET_PARENT)
    if outer >= 0:
        if os.fstat(outer).st_ino != os.stat("/proc/self/ns/user").st_ino:
            _check(libc.setns(outer, 0), "setns the box's outer user namespace")
        os.close(outer)
    for name, fd in zip(NAMESPACES, namespace_fds):
        _check(libc.setns(fd, 0), f"setns {name}")
        os.close(fd)


def box_identity() -> tuple:
    """The uid and gid of the box's PID 1, as this namespace numbers them: the identity the worker takes."""
    ids = {}
    for line in open("/proc/1/status").read().splitlines():
        if line.startswith(("Uid:", "Gid:")):
            ids[line[:3]] = int(line.split()[1])
    return ids["Uid"], ids["Gid"]


def give_up_privileges(uid: int, gid: int, seccomp_program: bytes) -> None:
    """Become ``uid``/``gid`` of the box, with no capability, ``no_new_privs`` and the seccomp filter."""
    libc = _libc()
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    for capability in range(64):
        if libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(capability), 0, 0, 0) != 0:
            break
    _check(libc.capset(ctypes.byref(_CapHeader(CAPABILITY_VERSION_3, 0)), (_CapData * 2)()), "capset")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), 0, 0, 0), "no_new_privs")
    if seccomp_program:
        program = ctypes.create_string_buffer(seccomp_program)
        fprog = _SockFprog(len(seccomp_program) // 8, ctypes.cast(program, ctypes.c_void_p))
        _check(libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog), 0, 0),
               "seccomp")


def cell(channel: int, reply: int, namespace_fds: List[int], order: dict) -> None:
    """The forked cell: join the box, report the worker's host PID, give up privileges, serve. Never returns."""
    try:
        os.setsid()
        os.setgroups([])  # here, while the host's rules apply: inside the box setgroups is denied
        join(namespace_fds)
        pid = os.fork()  # the child is the first of this cell in the box's PID namespace
        if pid:
            os.write(reply, f"{pid}\n".encode())
            os._exit(0)
        os.close(reply)
        os.chdir("/tmp")
        os.environ.clear()
        os.environ.update(order["environment"])
        give_up_privileges(*box_identity(), bytes.fromhex(order["seccomp"]))
        os.closerange(3, channel)
        os.closerange(channel + 1, 1 << 16)
        if protocol._read_exactly(channel, 2, None) != b"go":
            os._exit(1)
        serve.serve(channel, json.loads(order["environment"]["GRADER_LIMITS"]), "/box/student")
    except BaseException as error:  # noqa: B902 - tell the judge why the box could not start
        try:
            protocol.write_all(channel, protocol.encode({"error": f"{type(error).__name__}: {error}"}))
        except OSError:
            pass
    os._exit(1)


def main(argv: List[str]) -> int:
    """The zygote: preload, then fork a cell for every order received on the control socket."""
    control = socket.socket(fileno=int(argv[0]))
    serve.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    serve.preload()
    serve.prctl(serve.PR_SET_CHILD_SUBREAPER, 1)  # the cells come back to this process, which reaps them at once
    signal.signal(signal.SIGCHLD, serve.reap)
    control.send(b"ready")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1 << 16, 2 + len(NAMESPACES))
        except OSError:
            return 0
        if not message:
            return 0
        if len(fds) == 2 + len(NAMESPACES) and os.fork() == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            cell(fds[0], fds[1], fds[2:], json.loads(message))
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
