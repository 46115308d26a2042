"""A seccomp filter for the box: the system calls a grading job never needs fail with EPERM.

bubblewrap loads it (``--seccomp FD``) into the box's first process after it
has set the box up, so everything the student's code runs inherits it. The
list is the usual container deny list (the spirit of Docker's and Flatpak's
defaults): tracing other processes, kernel modules and keys, mounts and
namespaces, BPF, perf events, io_uring, userfaultfd, clock and reboot.
``clone3`` answers ENOSYS, so the C library falls back to ``clone``, whose
namespace flags bubblewrap's ``--disable-userns`` already covers. Other
architectures' calls (i386, x32) are refused outright. x86_64 only: on
other machines ``program()`` returns None and the box runs without it.
"""
import errno
import platform
import struct
from typing import Optional

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
RET_KILL_PROCESS, RET_ERRNO, RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
LOAD, JUMP_EQUAL, JUMP_GREATER_EQUAL, RETURN = 0x20, 0x15, 0x35, 0x06
NR_OFFSET, ARCH_OFFSET = 0, 4

DENIED = {  # x86_64 numbers
    "ptrace": 101, "syslog": 103, "uselib": 134, "ustat": 136, "vhangup": 153, "modify_ldt": 154,
    "pivot_root": 155, "_sysctl": 156, "adjtimex": 159, "chroot": 161, "acct": 163, "settimeofday": 164,
    "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170,
    "setdomainname": 171, "iopl": 172, "ioperm": 173, "create_module": 174, "init_module": 175,
    "delete_module": 176, "get_kernel_syms": 177, "query_module": 178, "quotactl": 179, "nfsservctl": 180,
    "lookup_dcookie": 212, "clock_settime": 227, "kexec_load": 246, "add_key": 248, "request_key": 249,
    "keyctl": 250, "unshare": 272, "move_pages": 279, "perf_event_open": 298, "fanotify_init": 300,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313,
    "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "pidfd_getfd": 438, "mount_setattr": 442,
}
NOT_IMPLEMENTED = {"clone3": 435}


def instruction(code: int, k: int, jump_true: int = 0, jump_false: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jump_true, jump_false, k)


def program() -> Optional[bytes]:
    """The filter as a classic BPF program (what ``--seccomp`` reads), or None off x86_64."""
    if platform.machine() != "x86_64":
        return None
    checks = [(number, "deny") for number in sorted(DENIED.values())] + \
             [(number, "nosys") for number in NOT_IMPLEMENTED.values()]
    # After the checks come: allow, deny (EPERM), nosys (ENOSYS).
    allow_at = 5 + len(checks)
    targets = {"deny": allow_at + 1, "nosys": allow_at + 2}
    code = [instruction(LOAD, ARCH_OFFSET), instruction(JUMP_EQUAL, AUDIT_ARCH_X86_64, 1, 0),
            instruction(RETURN, RET_KILL_PROCESS), instruction(LOAD, NR_OFFSET),
            instruction(JUMP_GREATER_EQUAL, X32_SYSCALL_BIT, targets["deny"] - 5, 0)]
    for index, (number, kind) in enumerate(checks):
        code.append(instruction(JUMP_EQUAL, number, targets[kind] - (5 + index) - 1, 0))
    code += [instruction(RETURN, RET_ALLOW), instruction(RETURN, RET_ERRNO | errno.EPERM),
             instruction(RETURN, RET_ERRNO | errno.ENOSYS)]
    return b"".join(code)
