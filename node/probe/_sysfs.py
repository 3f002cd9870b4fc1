"""Reading /proc and /sys: small files that may be missing, and this process's cgroups."""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
MAX_CGROUP_DEPTH = 64


def read_text(path: Path) -> str | None:
    """The text of a small system file, or None when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def parse_proc_self_cgroup(text: str, controller: str | None = None) -> str | None:
    """This process's cgroup path from /proc/self/cgroup.

    ``controller=None``: the cgroup v2 path (the ``0::PATH`` line); else the cgroup v1 path
    of that controller (the ``N:a,b,controller:PATH`` line).
    """
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        hierarchy, controllers, path = fields
        if controller is None and hierarchy == "0" and controllers == "":
            return path.strip() or "/"
        if controller is not None and controller in controllers.split(","):
            return path.strip() or "/"
    return None


def cgroup_dirs(root: Path, path: str) -> list[Path]:
    """``root/path`` and each of its ancestors up to ``root`` (limits of ancestors apply)."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")][:MAX_CGROUP_DEPTH]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def read_cgroup_files(filename: str, controller: str | None = None) -> list[str]:
    """``filename`` in this process's cgroup and in each ancestor that has it.

    ``controller=None`` reads cgroup v2 (mounted at /sys/fs/cgroup, or /sys/fs/cgroup/unified
    on hybrid systems); else the cgroup v1 hierarchy of that controller. Inside a container
    the path in /proc/self/cgroup may not exist in its mount: the mount's root still counts.
    """
    path = parse_proc_self_cgroup(read_text(Path("/proc/self/cgroup")) or "", controller)
    if path is None:
        return []
    roots = (
        [CGROUP_ROOT, CGROUP_ROOT / "unified"] if controller is None else [CGROUP_ROOT / controller]
    )
    texts = []
    for root in roots:
        for directory in cgroup_dirs(root, path):
            text = read_text(directory / filename)
            if text is not None:
                texts.append(text)
    return texts
