"""The sandbox one submission runs in (Linux namespaces, an unprivileged uid, rlimits).

Two halves live in this file:

- :func:`run_sandboxed`, called by a grading worker (outside): it starts
  ``unshare --mount --net --pid --ipc --uts --fork --kill-child`` (as a normal user also
  ``--user --map-root-user``) on this file, waits at most the notebook's time cap plus a
  grace period, and kills the ``unshare`` process past that — the whole PID namespace, and
  so every process the student started, dies with it;
- the SETUP step (``python -I -S sandbox.py CONFIG``, standard library only, so it starts
  in a few milliseconds and imports nothing from the course): root inside the new
  namespaces, it opens the input and output folders BEFORE changing any mount, then builds
  a new root on a tmpfs that holds only what the kernel needs, bind-mounted read-only
  (/usr, /etc, the /bin and /lib links, the Python installation, the virtual environment,
  the dlcourse package) plus a fresh /proc, a minimal /dev and ONE size-limited tmpfs work
  directory (``/home/student``, also backing /tmp and /dev/shm) holding only this
  submission's restored notebook and probe inputs; it ``pivot_root``s into it and detaches
  the old root, so the course directory (solutions/, the gradebook, submitted/,
  autograded/), other students' work and the grader's home are not hidden but absent.
  The network namespace has only a loopback interface, and it is down: the kernel talks to
  the executor over ipc (Unix sockets in the work directory).
  It then starts the executor (executor.py) as an unprivileged uid/gid (from 61000 up,
  leased to this one live sandbox on the machine: UidLease; no supplementary groups,
  no_new_privs) with rlimits (address space, processes, CPU time, file size, open files,
  no core dumps) and a minimal environment, waits until the notebook's time cap, kills
  every process left in the namespace, and copies the results out through the output
  folder's descriptor, without following links, with size and count caps and a deadline.

Where cgroups can be written, the whole sandbox also runs in a cgroup of its own
(cgroups.py): an even CPU share, a CPU quota, its memory and its process count.

As a normal user (no root), the same happens inside a user namespace; the uid cannot be
changed to a fresh one there, so the executor enters a nested user namespace as uid 61000
without capabilities, and RLIMIT_NPROC counts the user's own processes (see
docs/grading-security.md). ``mode="none"`` runs the executor without namespaces (rlimits
only) for machines without unshare; the verdicts stay forgery-resistant, the isolation goes.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import threading
import time

WORK = "/home/student"
SANDBOX_UID_BASE = 61000
PROBE_DIR = "probe"   # in the input folder: the probe phase's job, never seen by the notebook run

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, 155)

# what comes back out of the sandbox, at most
MAX_NOTEBOOK_BYTES = 8 * 1024 * 1024
MAX_STATUS_BYTES = 1024 * 1024
MAX_PROBE_FILE_BYTES = 64 * 1024 * 1024
MAX_PROBE_TOTAL_BYTES = 256 * 1024 * 1024
MAX_PROBE_FILES = 4000          # files and folders looked at under probe/out, in all
COPY_OUT_S = 30                 # the copy-out's own deadline, after the notebook's
MAX_LOG_BYTES = 32 * 1024

UID_LOCK_DIR = "/run/dlcourse-sandbox-uids"
UID_SLOTS = 4000
CGROUP_MEMORY_SLACK_MB = 256    # the sandbox's cgroup: the kernel's limit + the work tmpfs + this

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _b(value):
    return None if value is None else os.fsencode(value)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _mount(source, target, fstype, flags, data=None):
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {target}")


def _locked_flags(path: str) -> int:
    """Flags a remount must keep (a user namespace may not clear them)."""
    f = os.statvfs(path).f_flag
    flags = 0
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                   (getattr(os, "ST_NOATIME", 1024), MS_NOATIME), (getattr(os, "ST_NODIRATIME", 2048), MS_NODIRATIME),
                   (getattr(os, "ST_RELATIME", 4096), MS_RELATIME)):
        if f & st:
            flags |= ms
    return flags


def _bind(source: str, target: str, readonly: bool = True, nodev: bool = True) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    if readonly:
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | _locked_flags(target) | (MS_NODEV if nodev else 0)
        _mount(None, target, None, flags)


def _prctl(option: int, value: int) -> None:
    _libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


# ----------------------------------------------------------------------------------------
# the SETUP step: root inside fresh namespaces
# ----------------------------------------------------------------------------------------

def _mkdirs(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)


def _copy_in(src_fd: int, dst: str, uid: int, gid: int, skip: tuple = ()) -> None:
    """Copy the grader-written input folder into the work directory (owned by the sandbox uid)."""
    for entry in os.scandir(src_fd):
        if entry.name in skip:
            continue
        target = os.path.join(dst, entry.name)
        if entry.is_dir(follow_symlinks=False):
            _mkdirs(target, 0o755)
            os.chown(target, uid, gid)
            child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src_fd)
            try:
                _copy_in(child, target, uid, gid)
            finally:
                os.close(child)
        elif entry.is_file(follow_symlinks=False):
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=src_fd)
            with os.fdopen(fd, "rb") as reader, open(target, "wb") as writer:
                while True:
                    chunk = reader.read(1 << 20)
                    if not chunk:
                        break
                    writer.write(chunk)
            os.chown(target, uid, gid)


def _outermost_binds(cfg: dict) -> list[str]:
    """The read-only bind paths that exist, shortest first, leaving out those inside another
    (the outer bind already shows them)."""
    kept: list[str] = []
    for path in sorted(set(cfg["binds"]), key=len):
        if os.path.lexists(path) and not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _build_root(cfg: dict, in_fd: int) -> None:
    root = cfg["root_dir"]
    # as a normal user only uid 0 is mapped here (the user); the executor's nested user
    # namespace maps its own uid onto it
    uid, gid = (cfg["uid"], cfg["gid"]) if cfg["mode"] == "root" else (0, 0)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)                      # mount --make-rprivate /
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")
    # the work directory: one size-limited tmpfs, also behind /tmp and /dev/shm
    work = root + WORK
    _mkdirs(work)
    owner = f",uid={uid},gid={gid}" if cfg["mode"] == "root" else ""
    _mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(cfg['work_mb'])}m,mode=700{owner}")
    if cfg["mode"] != "root":
        os.chown(work, 0, 0)
    for sub in (".tmp", ".shm", "result", ".runtime", ".log"):
        _mkdirs(os.path.join(work, sub), 0o700)
        os.chown(os.path.join(work, sub), uid, gid)
    os.chmod(os.path.join(work, ".tmp"), 0o1777)
    os.chmod(os.path.join(work, ".shm"), 0o1777)
    _copy_in(in_fd, work, uid, gid, skip=(PROBE_DIR,))
    _mkdirs(root + "/tmp")
    _bind(work + "/.tmp", root + "/tmp", readonly=False)
    # The read-only binds come after /tmp: a course checked out under /tmp (its .venv and
    # dlcourse) would otherwise be hidden behind the work directory's /tmp.
    # read-only binds of what the kernel needs, at their own paths
    for path in _outermost_binds(cfg):
        target = root + path
        if os.path.islink(path):
            _mkdirs(os.path.dirname(target))
            os.symlink(os.readlink(path), target)
        elif os.path.isdir(path):
            _mkdirs(target)
            _bind(path, target)
        elif os.path.isfile(path):
            _mkdirs(os.path.dirname(target))
            open(target, "w").close()
            _bind(path, target)
    for path in cfg.get("hide_always", []):   # the answer key: never in the sandbox
        if os.path.isdir(root + path):
            _mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,mode=555")
    _mkdirs(root + "/var")
    os.symlink("/tmp", root + "/var/tmp")
    # /proc of the new PID namespace; a minimal /dev
    _mkdirs(root + "/proc")
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    dev = root + "/dev"
    _mkdirs(dev)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID, "size=64k,mode=755")
    for name in ("null", "zero", "full", "random", "urandom"):
        if os.path.exists("/dev/" + name):
            open(os.path.join(dev, name), "w").close()
            _mount("/dev/" + name, os.path.join(dev, name), None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))
    _mkdirs(dev + "/shm")
    _bind(work + "/.shm", dev + "/shm", readonly=False)
    # a private pty instance: IPython's `!command` runs shell commands on a pseudo-terminal
    _mkdirs(dev + "/pts")
    try:
        _mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
        os.symlink("pts/ptmx", dev + "/ptmx")
    except OSError:
        pass  # shell magics will say "out of pty devices"; everything else works
    _mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | _locked_flags(dev))
    # into the new root; the old one (with the course directory) is detached
    old = root + "/.oldroot"
    _mkdirs(old, 0o700)
    os.chdir(root)
    _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b".oldroot"), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.oldroot", MNT_DETACH), "umount old root")
    os.rmdir("/.oldroot")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | _locked_flags("/"))


def _executor_env(cfg: dict, work: str = WORK) -> dict:
    env = {
        "PATH": os.pathsep.join([os.path.dirname(cfg["python"]), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": work, "USER": "student", "LOGNAME": "student", "SHELL": "/bin/sh", "LANG": "C.UTF-8",
        "TMPDIR": "/tmp" if work == WORK else work, "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": work + "/.config/matplotlib", "IPYTHONDIR": work + "/.ipython",
        "JUPYTER_RUNTIME_DIR": work + "/.runtime", "JUPYTER_CONFIG_DIR": work + "/.jupyter",
        "JUPYTER_DATA_DIR": work + "/.local/share/jupyter", "JUPYTER_PLATFORM_DIRS": "1",
        "DLCOURSE_SELF_CHECK": "1", "NBGRADER_EXECUTION": "autograde",
    }
    env.update(cfg.get("env", {}))
    return env


def _limit_child(cfg: dict):
    """preexec_fn of the executor: drop to the sandbox uid, then the rlimits."""
    uid, gid, limits, mode = cfg["uid"], cfg["gid"], cfg["limits"], cfg["mode"]

    def apply():
        if mode == "root":
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        elif mode == "userns":
            # a nested user namespace in which we are uid 61000: execve drops every capability
            _check(_libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} 0 1"), ("gid_map", f"{gid} 0 1")):
                with open(f"/proc/self/{name}", "w") as handle:
                    handle.write(text)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        mb = 1024 * 1024
        pairs = [(resource.RLIMIT_AS, limits["memory_mb"] * mb), (resource.RLIMIT_FSIZE, limits["fsize_mb"] * mb),
                 (resource.RLIMIT_NOFILE, limits["nofile"]), (resource.RLIMIT_CORE, 0)]
        if limits.get("nproc"):
            pairs.append((resource.RLIMIT_NPROC, limits["nproc"]))
        for which, value in pairs:
            resource.setrlimit(which, (value, value))
        cpu = int(limits["cpu_s"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        os.umask(0o077)
    return apply


class _Tail(threading.Thread):
    """Drain a pipe, keeping only its last bytes."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.data = stream, b""

    def run(self):
        while True:
            chunk = self.stream.read(65536)
            if not chunk:
                return
            self.data = (self.data + chunk)[-MAX_LOG_BYTES:]


def _open_dir(name: str, dir_fd: int | None = None) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def _copy_file_out(src_dir: int, name: str, dst_dir: int, limit: int, budget: list | None = None) -> str | None:
    """Copy one regular file, never following links; None, or why it was left out."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_dir)
    except OSError as error:
        return None if error.errno == errno.ENOENT else f"{name}: {error.strerror}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return f"{name}: not a regular file"
        if info.st_size > limit or (budget is not None and info.st_size > budget[0]):
            return f"{name}: too large ({info.st_size} bytes)"
        data = os.read(fd, limit + 1) if info.st_size else b""
        while len(data) < min(info.st_size, limit + 1):
            more = os.read(fd, limit + 1 - len(data))
            if not more:
                break
            data += more
        if len(data) > limit:
            return f"{name}: too large"
        if budget is not None:
            budget[0] -= len(data)
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dst_dir)
        try:
            os.write(out, data)
        finally:
            os.close(out)
        return None
    finally:
        os.close(fd)


def _copy_out(work: str, out_fd: int, probe_dirs: int, deadline: float, probes: bool = True) -> list[str]:
    """Copy results out of the work directory: the notebook run's (result/), and with
    `probes` the probe phase's (probe/out/p<k>/, bounded by _copy_probes_out)."""
    problems = []
    try:
        work_fd = _open_dir(work)
    except OSError as error:
        return [f"work directory: {error.strerror}"]
    try:
        try:
            result_fd = _open_dir("result", work_fd)
        except OSError:
            result_fd = None
        if result_fd is not None:
            for name, limit in (("notebook.ipynb", MAX_NOTEBOOK_BYTES), ("status.json", MAX_STATUS_BYTES),
                                ("audit.json", MAX_STATUS_BYTES)):
                problem = _copy_file_out(result_fd, name, out_fd, limit)
                if problem:
                    problems.append(problem)
            os.close(result_fd)
        if probes:
            problems += _copy_probes_out(work_fd, out_fd, probe_dirs, deadline)
    finally:
        os.close(work_fd)
    return problems


def _fresh_work(cfg: dict, work: str) -> str:
    """An empty work directory for the probe phase: nothing the notebook run left (files in
    the work directory, /tmp or /dev/shm) reaches the probes."""
    uid, gid = (cfg["uid"], cfg["gid"]) if cfg["mode"] == "root" else (0, 0)
    if cfg["mode"] == "none":
        for entry in os.listdir(work):
            path = os.path.join(work, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                import shutil
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        return work
    owner = f",uid={uid},gid={gid}" if cfg["mode"] == "root" else ""
    under_tmp = _held_binds_under_tmp(cfg)
    _mount("tmpfs", WORK, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(cfg['work_mb'])}m,mode=700{owner}")
    for sub in (".tmp", ".shm"):
        _mkdirs(os.path.join(WORK, sub), 0o1777)
        os.chmod(os.path.join(WORK, sub), 0o1777)
    _bind(WORK + "/.tmp", "/tmp", readonly=False)
    _bind(WORK + "/.shm", "/dev/shm", readonly=False)
    _restore_binds_under_tmp(under_tmp)
    return WORK


def _held_binds_under_tmp(cfg: dict) -> list[tuple[str, int | str]]:
    """The read-only binds that live under /tmp (a course checked out there: its .venv and
    dlcourse), each held by an O_PATH descriptor (or its link text) before the fresh /tmp
    covers them, as the kernel phase's root orders its binds after /tmp for the same reason."""
    held = []
    for path in _outermost_binds(cfg):
        if not path.startswith("/tmp/"):
            continue
        if os.path.islink(path):
            held.append((path, os.readlink(path)))
        elif os.path.exists(path):
            held.append((path, os.open(path, os.O_PATH | os.O_NOFOLLOW)))
    return held


def _restore_binds_under_tmp(held: list[tuple[str, int | str]]) -> None:
    """Bind what `_held_binds_under_tmp` held back at its path (recursively: the answer key's
    empty tmpfs inside the package stays over it), read-only."""
    for path, handle in held:
        _mkdirs(os.path.dirname(path))
        if isinstance(handle, str):
            os.symlink(handle, path)
            continue
        try:
            if stat.S_ISDIR(os.fstat(handle).st_mode):
                _mkdirs(path)
            else:
                open(path, "w").close()
            _bind(f"/proc/self/fd/{handle}", path)
        finally:
            os.close(handle)


def _timed_out_cells(work: str) -> list[int]:
    """The cells the notebook run interrupted, from its status (written next to student code:
    a forged list can only make the probes skip more of that student's own cells)."""
    try:
        fd = os.open(os.path.join(work, "result", "status.json"), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            status = json.loads(handle.read(MAX_STATUS_BYTES).decode("utf-8"))
        return [c for c in status.get("timeouts", [])[:1000] if isinstance(c, int)]
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return []


def _readline(stream, seconds: float) -> str:
    import select

    ready, _, _ = select.select([stream], [], [], max(0.0, seconds))
    return stream.readline().decode(errors="replace").strip() if ready else ""


def _probe_phase(cfg: dict, in_fd: int, work: str) -> str | None:
    """Run probe_runner.py on the probe job in a fresh work directory; None, or what failed.

    The runner imports the package, says `ready`, and only then are the package's directory
    and torch's hidden (an empty read-only tmpfs over each), so that the student's functions
    can neither import nor read the implementations their parts forbid."""
    started = time.monotonic()
    timed_out = _timed_out_cells(work)
    work = _fresh_work(cfg, work)
    uid, gid = (cfg["uid"], cfg["gid"]) if cfg["mode"] == "root" else (0, 0)
    os.mkdir(os.path.join(work, PROBE_DIR), 0o755)
    os.chown(os.path.join(work, PROBE_DIR), uid, gid)
    try:
        source = os.open(PROBE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=in_fd)
    except OSError:
        return "the probe job is missing"
    try:
        _copy_in(source, os.path.join(work, PROBE_DIR), uid, gid)
    finally:
        os.close(source)
    with open(os.path.join(work, PROBE_DIR, "skip.json"), "w") as handle:
        json.dump({"cells": timed_out}, handle)
    command = [cfg["python"], "-I", cfg["probe_runner"], os.path.join(PROBE_DIR, "job.json")]
    try:
        proc = subprocess.Popen(command, cwd=work, env=_executor_env(cfg, work), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
                                start_new_session=cfg["mode"] == "none", preexec_fn=_limit_child(cfg))
    except Exception as error:
        return f"could not start the probe runner: {error}"
    problem = None
    try:
        if _readline(proc.stdout, 60) != "ready":
            problem = "the probe runner did not start"
        elif cfg["mode"] != "none":
            for path in cfg.get("hide_from_probes", []):
                if os.path.isdir(path):
                    _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,mode=555")
        if problem is None:
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            proc.wait(timeout=max(1.0, cfg["probe_deadline_s"] - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        problem = f"the probes ran longer than {cfg['probe_deadline_s']:g} s in all"
    except OSError as error:
        problem = f"the probe phase failed: {error}"
    finally:
        proc.kill()
        proc.wait()
        if cfg["mode"] != "none":
            _kill_everything_else()
    return problem


def _copy_probes_out(work_fd: int, out_fd: int, probe_dirs: int, deadline: float) -> list[str]:
    """probe/out/p0 … p<probe_dirs - 1> (the folders the job asked for, nothing else the
    student made there): their .json and .npy files, with every folder and file counted
    against MAX_PROBE_FILES, the bytes against MAX_PROBE_TOTAL_BYTES, and a deadline."""
    try:
        parent_fd = _open_dir("probe", work_fd)
    except OSError:
        return []
    try:
        probe_fd = _open_dir("out", parent_fd)
    except OSError:
        return []
    finally:
        os.close(parent_fd)
    problems, budget, entries = [], [MAX_PROBE_TOTAL_BYTES], 0
    os.mkdir("probe", 0o700, dir_fd=out_fd)
    dst_probe = _open_dir("probe", out_fd)
    try:
        for number in range(probe_dirs):
            part = f"p{number}"
            try:
                part_fd = _open_dir(part, probe_fd)
            except OSError:
                continue
            os.mkdir(part, 0o700, dir_fd=dst_probe)
            dst_part = _open_dir(part, dst_probe)
            try:
                with os.scandir(part_fd) as listing:
                    for entry in listing:
                        entries += 1
                        if entries > MAX_PROBE_FILES or time.monotonic() > deadline:
                            problems.append("probe: too many files" if entries > MAX_PROBE_FILES
                                            else "probe: the copy-out ran past its deadline")
                            return problems
                        name = entry.name
                        if not (name.endswith(".json") or name.endswith(".npy")) or name.startswith("."):
                            continue
                        problem = _copy_file_out(part_fd, name, dst_part, MAX_PROBE_FILE_BYTES, budget)
                        if problem:
                            problems.append(f"probe {part}/{problem}")
            finally:
                os.close(part_fd)
                os.close(dst_part)
    finally:
        os.close(dst_probe)
        os.close(probe_fd)
    return problems


def _kill_everything_else() -> None:
    """As PID 1 of the namespace: SIGKILL every other process in it, and reap them all."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def setup_main(config_path: str) -> int:
    started = time.monotonic()
    with open(config_path) as handle:
        cfg = json.load(handle)
    # descriptors first: after the mounts neither folder has a path in here any more
    in_fd = _open_dir(cfg["in_dir"])
    out_fd = _open_dir(cfg["out_dir"])
    report = {"mode": cfg["mode"], "error": None, "killed_at_deadline": False, "executor_exit": None,
              "copy_problems": [], "setup_s": None, "run_s": None, "copy_s": None}

    def write_report():
        fd = os.open("setup.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=out_fd)
        with os.fdopen(fd, "w") as handle:
            json.dump(report, handle)

    work = WORK
    try:
        if cfg["mode"] == "none":
            work = cfg["root_dir"]
            _copy_in(in_fd, work, cfg["uid"], cfg["gid"], skip=(PROBE_DIR,))
            for sub in ("result", ".runtime", ".log"):
                _mkdirs(os.path.join(work, sub), 0o700)
        else:
            _build_root(cfg, in_fd)
    except Exception as error:
        report["error"] = f"sandbox setup failed: {error}"
        write_report()
        return 3
    report["setup_s"] = round(time.monotonic() - started, 4)
    if cfg.get("preflight"):
        os.close(in_fd)
        write_report()
        return 0

    t0 = time.monotonic()
    command = [cfg["python"], "-I", cfg["executor"], "job.json"]
    try:
        proc = subprocess.Popen(command, cwd=work, env=_executor_env(cfg, work),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                close_fds=True, start_new_session=cfg["mode"] == "none",
                                preexec_fn=_limit_child(cfg))
    except Exception as error:
        report["error"] = f"could not start the executor: {error}"
        write_report()
        return 3
    tail = _Tail(proc.stdout)
    tail.start()
    try:
        report["executor_exit"] = proc.wait(timeout=max(1.0, cfg["deadline_s"] - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        report["killed_at_deadline"] = True
        proc.kill()
    if cfg["mode"] != "none":
        _kill_everything_else()
    else:  # no PID namespace: the executor's process group is what we can reach
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
    tail.join(timeout=2)
    report["run_s"] = round(time.monotonic() - t0, 4)
    t1 = time.monotonic()
    report["copy_problems"] = _copy_out(work, out_fd, int(cfg.get("probe_dirs", 0)), t1 + COPY_OUT_S, probes=False)
    try:
        fd = os.open("executor.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=out_fd)
        with os.fdopen(fd, "wb") as handle:
            handle.write(tail.data)
    except OSError:
        pass
    report["copy_s"] = round(time.monotonic() - t1, 4)
    if cfg.get("probe_deadline_s"):
        t2 = time.monotonic()
        report["probe_error"] = _probe_phase(cfg, in_fd, work)
        report["probe_copy_problems"] = _copy_out(WORK if cfg["mode"] != "none" else work, out_fd,
                                                  int(cfg.get("probe_dirs", 0)), time.monotonic() + COPY_OUT_S) \
            if report["probe_error"] is None else []
        report["probe_s"] = round(time.monotonic() - t2, 4)
    os.close(in_fd)
    write_report()
    return 0


# ----------------------------------------------------------------------------------------
# the worker's side
# ----------------------------------------------------------------------------------------

def available_mode() -> str:
    """'root' (namespaces + a fresh uid), 'userns' (a normal user: user namespace), or 'none'."""
    forced = os.environ.get("DLCOURSE_SANDBOX")
    if forced in ("root", "userns", "none"):
        return forced
    if sys.platform != "linux" or not _which("unshare"):
        return "none"
    return "root" if os.geteuid() == 0 else "userns"


def _which(name: str) -> str | None:
    for folder in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) + ["/usr/bin", "/bin", "/usr/sbin"]:
        path = os.path.join(folder, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _processes_of(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                count += os.stat(f"/proc/{name}").st_uid == uid
            except OSError:
                pass
    return count


def _package_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hidden_from_probes() -> list[str]:
    """Directories the probe phase cannot see once the package is imported: dlcourse's own
    (every implementation a part may forbid) and torch's (torch is forbidden everywhere)."""
    import importlib.util

    paths = [_package_dir()]
    try:
        spec = importlib.util.find_spec("torch")   # finds it without importing it
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        paths.extend(os.path.realpath(p) for p in spec.submodule_search_locations)
    return paths


def default_binds() -> list[str]:
    """What the kernel needs, read-only: the system, the Python installation, the venv, dlcourse."""
    import sysconfig

    paths = ["/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt/conda"]
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        paths.append(prefix)
        paths.append(os.path.realpath(prefix))
    paths.append(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            paths.append(os.path.realpath(path))
    paths.append(_package_dir())
    return [p for p in dict.fromkeys(paths) if p and os.path.lexists(p)]


def preflight(mode: str | None = None) -> str | None:
    """Build an empty sandbox once; None if that works, else why not (one line)."""
    import shutil
    import tempfile

    mode = mode or available_mode()
    if mode == "root" and os.geteuid() != 0:
        return "--sandbox root needs root; a normal user gets a user namespace (--sandbox userns)"
    if mode != "none" and not _which("unshare"):
        return "the `unshare` program (util-linux) is missing"
    base = tempfile.mkdtemp(prefix="dlcourse-preflight-")
    try:
        for sub in ("in", "out", "root"):
            os.mkdir(os.path.join(base, sub))
        report = run_sandboxed(os.path.join(base, "in"), os.path.join(base, "out"), os.path.join(base, "root"),
                               memory_mb=256, cell_timeout=10, total_timeout=20, mode=mode, preflight=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if report.get("error"):
        return f"the {mode} sandbox does not work here: {report['error']}"
    return None


def _uid_base() -> int:
    try:
        return max(1000, int(os.environ.get("DLCOURSE_SANDBOX_UID_BASE", SANDBOX_UID_BASE)))
    except ValueError:
        return SANDBOX_UID_BASE


def _lock_dir() -> str:
    """Where the uid locks live: one folder per machine (per user without root), shared by
    every grading run, process and thread."""
    if os.geteuid() == 0:
        return UID_LOCK_DIR
    import tempfile
    return os.path.join(tempfile.gettempdir(), f"dlcourse-sandbox-uids-{os.geteuid()}")


class UidLease:
    """A sandbox uid held by this process until release(): an flock'ed lock file per uid, so
    no two live sandboxes on the machine share one, whichever run, process or thread started
    them. The kernel drops the lock if the holder dies."""

    def __init__(self, uid: int, fd: int):
        self.uid, self._fd = uid, fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing the descriptor releases the flock
            self._fd = None

    @classmethod
    def take(cls, check_processes: bool) -> "UidLease":
        import fcntl

        folder, base = _lock_dir(), _uid_base()
        os.makedirs(folder, 0o700, exist_ok=True)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise OSError(errno.EPERM, f"{folder} is not a folder of this user; cannot lease sandbox uids")
        for slot in range(UID_SLOTS):
            uid = base + slot
            fd = os.open(os.path.join(folder, f"{uid}.lock"),
                         os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if check_processes and _processes_of(uid):   # something outside dlcourse runs as it
                os.close(fd)
                continue
            return cls(uid, fd)
        raise OSError(errno.EAGAIN, f"all {UID_SLOTS} sandbox uids from {base} are in use")


def run_sandboxed(in_dir: str, out_dir: str, scratch_dir: str, *, memory_mb: int, cell_timeout: int,
                  total_timeout: int, work_mb: int = 512, nproc: int = 128, cpus: float = 1.0,
                  probe_dirs: int = 0, mode: str | None = None, preflight: bool = False,
                  probe_deadline: float | None = None) -> dict:
    """Run the executor on the job in `in_dir` inside a sandbox; results land in `out_dir`.

    The sandbox gets a uid no other live sandbox has (UidLease) and, where cgroups can be
    written, a cgroup of its own: `cpus` CPUs, its memory and `nproc` processes (cgroups.py).
    `probe_dirs`: how many probe/out/p<k> folders the job creates (only those come back).
    With `probe_deadline` (seconds), the probe phase runs after the notebook on the job in
    `in_dir/probe/` (see probe_runner.py), at most that long.
    Returns the setup report (setup.json) plus `wall_s`, `hard_killed`, `uid`, `cgroup` and
    `stderr` (the unshare process's own complaints, if any).
    """
    mode = mode or available_mode()
    try:
        lease = UidLease.take(check_processes=mode == "root")
    except OSError as error:
        return {"error": f"no sandbox uid: {error.strerror or error}", "wall_s": 0.0, "hard_killed": False}
    try:
        return _run_leased(lease.uid, in_dir, out_dir, scratch_dir, memory_mb=memory_mb, cell_timeout=cell_timeout,
                           total_timeout=total_timeout, work_mb=work_mb, nproc=nproc, cpus=cpus,
                           probe_dirs=probe_dirs, mode=mode, preflight=preflight, probe_deadline=probe_deadline)
    finally:
        lease.release()


def _run_leased(uid: int, in_dir: str, out_dir: str, scratch_dir: str, *, memory_mb: int, cell_timeout: int,
                total_timeout: int, work_mb: int, nproc: int, cpus: float, probe_dirs: int, mode: str,
                preflight: bool, probe_deadline: float | None) -> dict:
    python = sys.executable
    cfg = {"mode": mode, "in_dir": in_dir, "out_dir": out_dir, "root_dir": scratch_dir, "uid": uid, "gid": uid,
           "binds": default_binds(), "python": python,
           "executor": os.path.join(os.path.dirname(os.path.abspath(__file__)), "executor.py"),
           "probe_runner": os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe_runner.py"),
           "probe_deadline_s": probe_deadline, "hide_always": [os.path.join(_package_dir(), "answers")],
           "hide_from_probes": hidden_from_probes(),
           "work_mb": work_mb, "deadline_s": total_timeout, "preflight": preflight, "probe_dirs": probe_dirs,
           "limits": {"memory_mb": memory_mb, "fsize_mb": min(256, work_mb), "nofile": 1024,
                      "nproc": nproc if mode == "root" else None, "cpu_s": total_timeout + 10}}
    if mode == "none":
        cfg["uid"], cfg["gid"] = os.getuid(), os.getgid()
    elif mode == "userns":
        # RLIMIT_NPROC counts the real user's processes: leave room above what runs already
        cfg["limits"]["nproc"] = _processes_of(os.getuid()) + nproc
    config_path = os.path.join(os.path.dirname(out_dir), "sandbox.json")
    with open(config_path, "w") as handle:
        json.dump(cfg, handle)
    from dlcourse.grading import cgroups

    group = cgroups.create(f"dlcourse-sandbox-{uid}", cpus=cpus, pids=nproc,
                           memory_bytes=(memory_mb + work_mb + CGROUP_MEMORY_SLACK_MB) * 1024 * 1024)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(_sandbox_command(mode, python, config_path), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=group.enter if group else None)
        hard_killed = False
        try:
            _, stderr = proc.communicate(timeout=total_timeout + (probe_deadline or 0) + 2 * COPY_OUT_S + 30)
        except subprocess.TimeoutExpired:
            hard_killed = True
            proc.kill()   # unshare dies; --kill-child takes the PID namespace with it
            _, stderr = proc.communicate()
    finally:
        if group:
            group.remove()
    try:
        with open(os.path.join(out_dir, "setup.json")) as handle:
            report = json.load(handle)
    except (OSError, ValueError):
        report = {"error": "the sandbox did not report (" + (stderr.decode(errors="replace").strip().splitlines() or
                                                              [f"exit status {proc.returncode}"])[-1][:200] + ")"}
    report.update(wall_s=round(time.monotonic() - started, 4), hard_killed=hard_killed, uid=uid,
                  cgroup=bool(group), returncode=proc.returncode, stderr=stderr.decode(errors="replace")[-2000:])
    return report


def _sandbox_command(mode: str, python: str, config_path: str) -> list[str]:
    setup = [python, "-I", "-S", os.path.abspath(__file__), config_path]
    if mode == "none":
        command = setup
    else:
        command = ["unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child"]
        if mode == "userns":
            command[1:1] = ["--user", "--map-root-user"]
        command += setup
    setpriv = _which("setpriv")
    if setpriv:  # if this worker dies, its sandbox dies too
        command = [setpriv, "--pdeathsig", "KILL", "--"] + command
    return command


if __name__ == "__main__":
    sys.exit(setup_main(sys.argv[1]))
