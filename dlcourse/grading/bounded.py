"""Grader work on student-controlled data, in a forked child with hard limits.

Reading and restoring a submission and judging its probe results happen outside the
sandbox, in the grading worker. A crafted submission can make that work huge (a state dict
whose shapes ask for a 16000×16000 layer, a 7 MB cell for `ast.parse`, float16 arrays that
NumPy multiplies without BLAS). So the worker does it in a forked child under
``RLIMIT_AS`` (its address space at the fork plus ``memory_mb``), ``RLIMIT_CPU`` and a
wall-clock deadline; the child sends back JSON through a pipe. A breach ends the child, not
the worker, and comes back as a :class:`LimitExceeded` that names the limit.
"""
from __future__ import annotations

import json
import os
import resource
import select
import signal
import time

__all__ = ["LimitExceeded", "run_bounded"]

MAX_REPLY_BYTES = 64 * 1024 * 1024


class LimitExceeded(Exception):
    """The child broke a limit. `kind`: memory, cpu, time (wall clock) or crash (a signal)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _address_space() -> int:
    """This process's virtual size in bytes (the child starts with the same)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _child(function, args, memory_mb: int, cpu_s: int, writer: int) -> None:
    try:
        limit = _address_space() + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        try:
            reply = {"value": function(*args)}
        except MemoryError:
            reply = {"limit": "memory"}
        except BaseException as error:  # reported to the parent, which re-raises it as its own
            reply = {"error": f"{type(error).__name__}: {error}"[:2000]}
        data = json.dumps(reply).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(writer, view):]
    finally:
        os._exit(0)


def _read_reply(reader: int, wall_s: float) -> tuple[bytes, bool]:
    """Everything the child writes, until it closes the pipe or the deadline passes."""
    deadline, chunks, size = time.monotonic() + wall_s, [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([reader], [], [], left)
        if not ready:
            continue
        chunk = os.read(reader, 1 << 20)
        if not chunk:
            return b"".join(chunks), False
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            return b"", False
        chunks.append(chunk)


def run_bounded(function, *args, memory_mb: int, cpu_s: int, wall_s: float, what: str = "the grader's work"):
    """`function(*args)` in a forked child; its JSON-able return value.

    Raises LimitExceeded when the child runs out of memory (`memory_mb` above what the
    worker already maps), CPU time (`cpu_s`) or wall-clock time (`wall_s`), or dies; an
    exception inside `function` comes back as RuntimeError with its type and message.
    """
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        _child(function, args, int(memory_mb), int(cpu_s), writer)
    os.close(writer)
    try:
        data, late = _read_reply(reader, wall_s)
    finally:
        os.close(reader)
    if late:
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    if late:
        raise LimitExceeded("time", f"{what} took longer than {wall_s:g} s and was stopped")
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGXCPU or usage.ru_utime + usage.ru_stime >= cpu_s:
            raise LimitExceeded("cpu", f"{what} used more than {cpu_s} s of CPU time and was stopped")
        raise LimitExceeded("crash", f"{what} died ({signal.Signals(number).name}; most likely out of memory)")
    try:
        reply = json.loads(data.decode())
    except (ValueError, UnicodeDecodeError):
        raise LimitExceeded("crash", f"{what} ended without a readable answer") from None
    if reply.get("limit") == "memory":
        raise LimitExceeded("memory", f"{what} needed more than {memory_mb} MB of memory and was stopped")
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply["value"]
