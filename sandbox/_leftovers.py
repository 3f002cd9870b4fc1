"""The temporary directories of sandboxes whose daemon died before its clean-up: each live
sandbox holds a ``flock`` on its own (:func:`lock_dir`), and a new one removes the others
that are plainly abandoned (:func:`sweep_leftovers`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ._procfs import pid_alive

#: A sandbox's temporary directories (``tempfile.mkdtemp`` in the temporary directory):
#: ``aimx-sandbox-<daemon pid>-XXXX`` (job directories) and
#: ``aimx-sandbox-private-<daemon pid>-XXXX`` (workers' stderr).
_TMP_NAME = re.compile(r"aimx-sandbox-(?:private-)?([0-9]+)-[A-Za-z0-9_]+")
#: A leftover directory younger than this is kept (it may be a starting sandbox's).
LEFTOVER_AFTER_S = 60.0


def remove_tree(path: Path | str) -> bool:
    """Remove ``path`` and everything under it, however deep; never raises. Whether it is
    gone. ``shutil.rmtree`` recurses once a level: a job that left a tree 1,500 levels
    deep raised ``RecursionError`` (``ignore_errors`` does not cover it), its directory
    stayed, and the sweep of every later start raised the same: the contributor could not
    start again (review round 75, F1). ``rm -rf`` removes any depth."""
    with contextlib.suppress(RecursionError):
        shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["rm", "-rf", "--one-file-system", "--", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
                timeout=120,
            )
    return not os.path.lexists(path)


def lock_dir(path: Path) -> int:
    """Hold an exclusive ``flock`` on directory ``path`` while the sandbox lives (released
    by the kernel when the process dies); returns the descriptor."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def sweep_leftovers(directory: Path | str | None = None) -> int:
    """Remove the temporary directories of sandboxes whose daemon is gone (killed before
    its clean-up, ``kill -9`` say); the number removed.

    In ``directory`` (the temporary directory by default), a directory named as above is
    removed only if it is no link, its owner is this user, its pid is not a live process,
    it is older than a minute, and no process holds its ``flock`` (a live sandbox holds
    one on each of its directories: that covers a daemon in another pid namespace that
    shares the temporary directory, whose pid means nothing here)."""
    base = Path(directory if directory is not None else tempfile.gettempdir())
    removed = 0
    now = time.time()
    uid = os.geteuid()
    try:
        entries = list(os.scandir(base))
    except OSError:
        return 0
    for entry in entries:
        match = _TMP_NAME.fullmatch(entry.name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or st.st_uid != uid:
                continue
            if now - st.st_mtime < LEFTOVER_AFTER_S:
                continue
            fd = lock_dir(Path(entry.path))
        except OSError:  # gone, unreadable, or locked by a live sandbox
            continue
        try:
            remove_tree(entry.path)
        finally:
            os.close(fd)
        if not os.path.lexists(entry.path):
            removed += 1
    return removed
