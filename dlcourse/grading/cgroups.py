"""One cgroup per sandbox: its own CPU share, memory and process count.

Rlimits are per process (``RLIMIT_CPU``) or per uid (``RLIMIT_NPROC``): a submission that
starts 100 busy-looping processes stays inside them and still takes nearly every CPU from
the sandbox next to it. A cgroup bounds the sandbox as a whole: the grading worker creates
``dlcourse-sandbox-<uid>`` beside its own cgroup in each hierarchy (the uid is leased to
one live sandbox on the machine, so the name is too), moves the sandbox's first process
into it before that process starts (every process the student starts inherits it), and
removes it afterwards, killing whatever is left in it.

- cgroup v1 (separate ``cpu``, ``memory``, ``pids`` hierarchies): ``cpu.shares``,
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, ``memory.limit_in_bytes``, ``pids.max``;
- cgroup v2 (one unified hierarchy): ``cpu.weight``, ``cpu.max``, ``memory.max``,
  ``pids.max``; the controllers must be enabled for the worker's cgroup's children (a
  delegated subtree).

The equal weight splits the CPUs evenly between busy sandboxes however many processes each
runs; the quota caps what one sandbox takes even when the others are idle.

Where no cgroup can be written (an unprivileged instructor without delegation, macOS),
:func:`create` returns None and :func:`unavailable_note` says so once; the sandbox then
relies on its rlimits alone.
"""
from __future__ import annotations

import os
import signal
import time

__all__ = ["SandboxCgroup", "create", "unavailable_note"]

CONTROLLERS = ("cpu", "memory", "pids")
CFS_PERIOD_US = 100_000
# Every sandbox the same weight (v1, v2): an even split between busy sandboxes. It is that of
# two ordinary processes (1024, 100 each), the kernel and the executor that a notebook keeps
# busy, so that a sandbox competes with processes outside any sandbox as it did without one.
CPU_SHARES, CPU_WEIGHT = 2 * 1024, 2 * 100


def _mounts() -> tuple[dict[str, str], str | None]:
    """({v1 controller: mount point}, the v2 mount point or None)."""
    v1, v2 = {}, None
    try:
        with open("/proc/self/mountinfo") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return v1, v2
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup2" and v2 is None:
            v2 = fields[4]
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in CONTROLLERS:
                    v1.setdefault(option, fields[4])
    return v1, v2


def _own_paths() -> dict[str, str]:
    """{controller or '' (v2): this process's cgroup path in that hierarchy}."""
    own = {}
    try:
        with open("/proc/self/cgroup") as handle:
            for line in handle:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for name in controllers.split(",") if controllers else [""]:
                    own[name] = path
    except (OSError, ValueError):
        pass
    return own


def _write(path: str, value) -> None:
    with open(path, "w") as handle:
        handle.write(str(value))


class SandboxCgroup:
    """The cgroup folders of one sandbox and how to enter and remove them."""

    def __init__(self, folders: list[str], version: int):
        self.folders, self.version = folders, version

    def enter(self) -> None:
        """Move the calling process into every folder (a preexec_fn: before exec, so the
        sandbox's first process and all its descendants live in the cgroup)."""
        for folder in self.folders:
            _write(os.path.join(folder, "cgroup.procs"), os.getpid())

    def remove(self) -> None:
        """Kill what is left inside, then delete the folders."""
        for folder in self.folders:
            for _ in range(50):
                try:
                    with open(os.path.join(folder, "cgroup.procs")) as handle:
                        pids = [int(p) for p in handle.read().split()]
                except OSError:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                try:
                    os.rmdir(folder)
                    break
                except OSError:
                    time.sleep(0.02)   # the killed processes leave the cgroup a moment later


def _v1(name: str, cpus: float, memory_bytes: int, pids: int) -> SandboxCgroup:
    mounts, own = _mounts()[0], _own_paths()
    missing = [c for c in CONTROLLERS if c not in mounts or c not in own]
    if missing:
        raise OSError(f"no cgroup v1 hierarchy for {', '.join(missing)}")
    folders = []
    group = SandboxCgroup(folders, 1)
    try:
        for controller in CONTROLLERS:
            folder = os.path.join(mounts[controller], own[controller].lstrip("/"), name)
            if os.path.isdir(folder):   # left over from a killed run
                SandboxCgroup([folder], 1).remove()
            os.mkdir(folder, 0o755)
            folders.append(folder)
        _write(os.path.join(folders[0], "cpu.shares"), CPU_SHARES)
        _write(os.path.join(folders[0], "cpu.cfs_period_us"), CFS_PERIOD_US)
        _write(os.path.join(folders[0], "cpu.cfs_quota_us"), int(cpus * CFS_PERIOD_US))
        _write(os.path.join(folders[1], "memory.limit_in_bytes"), memory_bytes)
        _write(os.path.join(folders[2], "pids.max"), pids)
    except OSError:
        group.remove()
        raise
    return group


def _v2(name: str, cpus: float, memory_bytes: int, pids: int) -> SandboxCgroup:
    mount, own = _mounts()[1], _own_paths().get("")
    if mount is None or own is None:
        raise OSError("no cgroup v2 hierarchy")
    parent = os.path.join(mount, own.lstrip("/"))
    with open(os.path.join(parent, "cgroup.controllers")) as handle:
        available = set(handle.read().split())
    if not set(CONTROLLERS) <= available:
        raise OSError(f"cgroup v2 at {parent} lacks the {', '.join(sorted(set(CONTROLLERS) - available))} "
                      "controller(s)")
    _write(os.path.join(parent, "cgroup.subtree_control"), " ".join("+" + c for c in CONTROLLERS))
    folder = os.path.join(parent, name)
    group = SandboxCgroup([folder], 2)
    if os.path.isdir(folder):   # left over from a killed run
        group.remove()
    os.mkdir(folder, 0o755)
    try:
        _write(os.path.join(folder, "cpu.weight"), CPU_WEIGHT)
        _write(os.path.join(folder, "cpu.max"), f"{int(cpus * CFS_PERIOD_US)} {CFS_PERIOD_US}")
        _write(os.path.join(folder, "memory.max"), memory_bytes)
        _write(os.path.join(folder, "pids.max"), pids)
    except OSError:
        group.remove()
        raise
    return group


_NOTE: list = []


def create(name: str, *, cpus: float, memory_bytes: int, pids: int) -> SandboxCgroup | None:
    """A new cgroup `name` with these limits (`cpus`: the CPU quota) (v1 where its controllers are mounted, else v2),
    or None where none can be written (unavailable_note() then says why)."""
    problems = []
    for build in (_v1, _v2):
        try:
            return build(name, max(0.05, cpus), int(memory_bytes), int(pids))
        except OSError as error:
            problems.append(str(error.strerror or error) + (f": {error.filename}" if error.filename else ""))
    if not _NOTE:
        _NOTE.append("no writable cgroup (" + "; ".join(problems)[:300] + "): sandboxes share the CPU and the "
                     "process table, so one submission's busy processes can slow the others down")
    return None


def unavailable_note() -> str | None:
    """Why sandboxes run without a cgroup (None if create() has always succeeded)."""
    return _NOTE[0] if _NOTE else None
