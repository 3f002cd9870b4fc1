"""Reading processes from /proc: the stat and status fields, liveness, gone processes."""

from __future__ import annotations

import os
import subprocess
import sys

from sandbox import pid_alive
from sandbox._procfs import all_pids, read_stat, read_status


def test_read_stat_of_this_process() -> None:
    stat = read_stat(os.getpid())
    assert stat is not None
    assert stat.pid == os.getpid()
    assert stat.ppid == os.getppid()
    assert (stat.pgrp, stat.session) == (os.getpgrp(), os.getsid(0))
    assert stat.state in "RS"
    assert stat.utime + stat.stime >= 0


def test_read_stat_of_an_unreaped_child_with_an_odd_name() -> None:
    """A name with spaces and parentheses does not shift the fields; a zombie shows ``Z``."""
    code = "import ctypes; ctypes.CDLL(None).prctl(15, b'a (b) c', 0, 0, 0)"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        stat = read_stat(child.pid)
        assert stat is not None
        assert (stat.name, stat.state, stat.ppid) == ("a (b) c", "Z", os.getpid())
        assert pid_alive(child.pid)
        assert child.pid in all_pids()
    finally:
        child.wait()
    assert read_stat(child.pid) is None
    assert read_status(child.pid) == {}
    assert not pid_alive(child.pid)


def test_read_status_and_alive() -> None:
    own = read_status("self")
    assert int(own["Pid"]) == os.getpid()
    assert own["Name"] and own["State"][0] in "RS"
    assert pid_alive(os.getpid())
    assert pid_alive(1)  # often another user's: a PermissionError counts as alive
