"""The seccomp filter a worker installs after importing its runtime, before loading a model.

Default allow, with a deny list: no sockets (so no network and no connecting to the daemon's
Unix sockets), no new sessions or process groups, no namespaces or mounts, no tracing, no
signals to other processes (nor their resource limits, nor signals on I/O), no leaving the
CPUs the daemon placed it on, no kernel interfaces a job never needs.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

# Denied outright (EPERM).
DENIED = (
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "setsid",
    "setpgid",
    "kill",
    "tkill",
    # signals by pidfd, and a pidfd of another process's (review round 75, F3: with these,
    # one job killed another beside it where seccomp was the only layer in the way)
    "pidfd_send_signal",
    "pidfd_open",
    "pidfd_getfd",
    # any priority or I/O priority (round 79, F2: PRIO_USER reached the user's every process)
    "setpriority",
    "ioprio_set",
    # another process's ordering, memory advice or reaping (round 80, F3), and the new
    # mount interface (I1)
    "kcmp",
    "process_madvise",
    "process_mrelease",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "swapon",
    "swapoff",
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "acct",
    "quotactl",
    "open_by_handle_at",
    "name_to_handle_at",
    "fanotify_init",
    "syslog",
    "settimeofday",
    "clock_settime",
    "personality",
    "sched_setaffinity",
)


#: ``fcntl`` commands that make the kernel signal another process (``<fcntl.h>``).
_F_SETOWN, _F_SETSIG, _F_SETOWN_EX = 8, 10, 15


def load_pyseccomp() -> Any:
    """Import pyseccomp without its two ``ldconfig -p`` subprocesses (ctypes.util
    find_library at import time): the sonames are stable, dlopen finds them."""
    if "pyseccomp" in sys.modules:
        return sys.modules["pyseccomp"]
    import ctypes
    import ctypes.util

    known = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}
    original = ctypes.util.find_library

    def find(name: str) -> str | None:
        soname = known.get(name)
        if soname is not None:
            try:
                ctypes.CDLL(soname)
                return soname
            except OSError:
                pass
        return original(name)

    ctypes.util.find_library = find
    try:
        import pyseccomp
    finally:
        ctypes.util.find_library = original
    return pyseccomp


def install() -> str:
    """Install the filter on this process (inherited by children). Raises OSError if it fails."""
    sc = load_pyseccomp()
    f = sc.SyscallFilter(defaction=sc.ALLOW)
    # on every thread of the process, not only this one (round 80, F1)
    f.set_attr(sc.Attr.CTL_TSYNC, 1)
    deny = sc.ERRNO(errno.EPERM)
    unknown: list[str] = []
    for name in DENIED:
        try:
            f.add_rule(deny, name)
        except (ValueError, RuntimeError, OSError):
            unknown.append(name)  # not a syscall here (said in the layer's description)
    # clone with any namespace flag; clone3 cannot be inspected, so make libc fall back.
    for flag in (
        0x00020000,
        0x02000000,
        0x04000000,
        0x08000000,
        0x10000000,
        0x20000000,
        0x40000000,
    ):
        f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    # Signals only to this very process (abort() and Python's own signals use tgkill).
    f.add_rule(deny, "tgkill", sc.Arg(0, sc.NE, os.getpid()))
    for queued in ("rt_sigqueueinfo", "rt_tgsigqueueinfo"):  # a signal with its data (F3)
        f.add_rule(deny, queued, sc.Arg(0, sc.NE, os.getpid()))
    # Another process's resource limits (libc's own calls name pid 0, this process): a job
    # lowered a neighbour's, and a non-root daemon's, which shares its workers' user, so
    # that it could open no file and died (review round 77, F1).
    f.add_rule(deny, "prlimit64", sc.Arg(0, sc.NE, 0))
    # another process's memory placement or robust futex list (round 80, F3)
    for placement in ("move_pages", "migrate_pages", "get_robust_list"):
        f.add_rule(deny, placement, sc.Arg(0, sc.NE, 0))
    # Another's scheduling: its policy or parameters by pid (0 is this thread), and any
    # priority or I/O priority (``setpriority(PRIO_USER, 0, ...)`` reniced every process
    # of the user; SCHED_IDLE left a neighbour 1 % of its CPU: round 79, F2).
    for scheduling in ("sched_setscheduler", "sched_setparam", "sched_setattr"):
        f.add_rule(deny, scheduling, sc.Arg(0, sc.NE, 0))
    # A signal sent on I/O to the owner set here, any process of the user's (F1). The
    # command is an int: compared on its low 32 bits, as the kernel reads it (with bit 32
    # set it passed a 64-bit compare: round 79, F1).
    for command in (_F_SETOWN, _F_SETSIG, _F_SETOWN_EX):
        f.add_rule(deny, "fcntl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, command))
    f.load()
    denied = len(DENIED) - len(unknown)
    missing = f" ({len(unknown)} unknown here: {', '.join(unknown)})" if unknown else ""
    return f"{denied} syscalls denied{missing}, namespaces refused"
