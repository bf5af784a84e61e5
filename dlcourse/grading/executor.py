"""The executor: runs one restored notebook in a fresh kernel.

It runs INSIDE the sandbox (see sandbox.py) as the unprivileged grading user, started as a
script (``python -I executor.py job.json``) so that it imports nothing from the course.
It starts the kernel first (a plain ``ipykernel_launcher`` process on an ipc connection
file it writes itself) and imports nbclient while the kernel boots, so that the
executor's own start-up hides behind the kernel's. It writes, in its work directory:

- ``result/notebook.ipynb``: the executed notebook, re-written after every cell (so that a
  notebook stopped half-way still shows what ran), outputs capped per cell and in total;
- ``result/status.json``: which cells raised, timed out, where the kernel died, timings;
(The graded functions are called later, in a process of their own: probe_runner.py.)

Everything here is produced next to student code running under the same uid, so the grader
treats it as untrusted data: it never unpickles it, caps its size, and decides points only
from probe values that it checks itself (probe.py).
"""
from __future__ import annotations

import time

_STARTED = time.monotonic()

import json  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

TRUNCATED_NOTE = "\n[output truncated by the grader: more than {limit} of output]\n"
TIMEOUT_ENAME = "CellTimeoutError"


def _no_dump():
    """The kernel runs under our uid: forbid it to ptrace us or read our memory."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass


def _write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def start_kernel(runtime: str, kernel_name: str):
    """Launch ipykernel on a fresh ipc connection file; (process, connection file)."""
    os.makedirs(runtime, mode=0o700, exist_ok=True)
    connection = os.path.join(runtime, "kernel.json")
    info = {"transport": "ipc", "ip": os.path.join(runtime, "k"), "shell_port": 1, "iopub_port": 2,
            "stdin_port": 3, "control_port": 4, "hb_port": 5, "key": secrets.token_hex(32),
            "signature_scheme": "hmac-sha256", "kernel_name": kernel_name}
    _write_json(connection, info)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", connection, "--HistoryManager.hist_file=:memory:"]
    process = subprocess.Popen(argv, cwd=os.getcwd(), stdin=subprocess.DEVNULL)
    return process, connection


def _size(output) -> int:
    kind = output.get("output_type")
    if kind == "stream":
        return len(output.get("text", ""))
    if kind == "error":
        return len(str(output.get("evalue", ""))) + sum(len(str(line)) for line in output.get("traceback", []))
    total = 0
    for value in (output.get("data") or {}).values():
        total += len(value) if isinstance(value, str) else len(json.dumps(value))
    return total + len(json.dumps(output.get("metadata") or {}))


def _human(n: int) -> str:
    return f"{n // 1000} KB" if n < 1_000_000 else f"{n / 1_000_000:g} MB"


def _classes():
    """nbclient's client with output caps and a kernel we started ourselves (imported late)."""
    import nbformat
    from jupyter_client.asynchronous import AsyncKernelClient
    from nbclient import NotebookClient

    class OwnKernelClient(AsyncKernelClient):
        process = None

        async def _async_is_alive(self) -> bool:
            return self.process is not None and self.process.poll() is None

        is_alive = _async_is_alive

    class OwnKernel:
        """What nbclient asks of a kernel manager, for the kernel process we own."""

        def __init__(self, process):
            self.process = process

        async def interrupt_kernel(self):
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGINT)

        async def is_alive(self):
            return self.process.poll() is None

    class CappedClient(NotebookClient):
        """nbclient with an output budget per cell and per notebook, and no widget state."""

        def __init__(self, nb, cell_cap: int, total_cap: int, **kwargs):
            super().__init__(nb, **kwargs)
            self.cell_cap, self.total_cap = cell_cap, total_cap
            self.used: dict[int, int] = {}
            self.total_used = 0
            self.truncated: set[int] = set()

        def handle_comm_msg(self, outs, msg, cell_index):
            return None

        def _update_display_id(self, display_id, msg):
            data = msg.get("content", {}).get("data", {})
            if sum(len(v) if isinstance(v, str) else 1000 for v in data.values()) > self.cell_cap:
                return
            try:
                super()._update_display_id(display_id, msg)
            except (IndexError, KeyError):
                pass

        def output(self, outs, msg, display_id, cell_index):
            out = super().output(outs, msg, display_id, cell_index)
            if out is None:
                return None
            if out.get("output_type") == "error":
                # never dropped (an error decides that a cell failed), only shortened
                out["evalue"] = str(out.get("evalue", ""))[:2000]
                lines = [str(line)[:2000] for line in out.get("traceback", [])]
                out["traceback"] = lines[:10] + ["..."] + lines[-30:] if len(lines) > 40 else lines
                return out
            size = _size(out)
            used = self.used.get(cell_index, 0)
            room = min(self.cell_cap - used, self.total_cap - self.total_used)
            if size <= room:
                self.used[cell_index] = used + size
                self.total_used += size
                return out
            if outs and outs[-1] is out:
                outs.pop()
            if out.get("output_type") == "stream" and room > 0:
                out["text"] = out["text"][:room]
                outs.append(out)
                self.used[cell_index] = used + room
                self.total_used += room
            if cell_index not in self.truncated:
                self.truncated.add(cell_index)
                limit = self.cell_cap if self.cell_cap - used <= self.total_cap - self.total_used else self.total_cap
                outs.append(nbformat.v4.new_output("stream", name="stderr",
                                                   text=TRUNCATED_NOTE.format(limit=_human(limit))))
            return None

    return nbformat, OwnKernelClient, OwnKernel, CappedClient


async def _wait_ready(kc, process, timeout: float) -> None:
    """jupyter_client's wait_for_ready without its fixed pauses (0.2 s heartbeat polls, a final
    0.2 s IOPub flush): ask kernel_info until the shell answers AND an IOPub message shows that
    our subscription is live (otherwise the first cell's output could be lost)."""
    from queue import Empty

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError("Kernel died before replying to kernel_info")
        kc.kernel_info()
        try:
            reply = await kc.shell_channel.get_msg(timeout=0.5)
        except Empty:
            reply = None
        if reply is not None and reply.get("msg_type") == "kernel_info_reply":
            try:
                await kc.iopub_channel.get_msg(timeout=0.25)
            except Empty:
                pass
            else:
                kc._handle_kernel_info_reply(reply)
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")


async def _run(job: dict, process, connection: str, kernel_started: float, status: dict, checkpoint_box: list):
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    nbformat, OwnKernelClient, OwnKernel, CappedClient = _classes()
    status["import_s"] = round(time.monotonic() - _STARTED, 4)
    nb = nbformat.read(job["notebook"], as_version=4)
    timeout = int(job.get("timeout", 60))
    result_dir = job.get("result_dir", "result")

    asked_exit = []

    def on_executed(cell, cell_index, execute_reply, **_):
        content = (execute_reply or {}).get("content", {})
        payload = content.get("payload") if isinstance(content.get("payload"), list) else []
        if any(isinstance(p, dict) and p.get("source") == "ask_exit" and not p.get("keepkernel") for p in payload):
            asked_exit.append(cell_index)   # exit()/quit(): the kernel stops a moment later
        if content.get("status") == "error" and content.get("ename") == TIMEOUT_ENAME:
            cell.outputs.append(nbformat.v4.new_output(
                "error", ename=TIMEOUT_ENAME,
                evalue=f"the cell ran longer than {timeout} s and was interrupted by the grader",
                traceback=[f"{TIMEOUT_ENAME}: the cell ran longer than {timeout} s and was interrupted by the grader"]))
        elif content.get("status") != "ok" and not any(o.get("output_type") == "error" for o in cell.outputs):
            # the kernel said "error" but showed none (a custom exception handler, a silenced
            # traceback): the reply decides, as in nbgrader
            ename = str(content.get("ename") or "Error")[:200]
            evalue = str(content.get("evalue") or "the kernel reported an error without showing it")[:2000]
            cell.outputs.append(nbformat.v4.new_output("error", ename=ename, evalue=evalue,
                                                       traceback=[f"{ename}: {evalue}"]))

    client = CappedClient(
        nb, km=OwnKernel(process), cell_cap=int(job.get("cell_output_cap", 100_000)),
        total_cap=int(job.get("total_output_cap", 1_000_000)), timeout=timeout,
        allow_errors=True, interrupt_on_timeout=True, record_timing=False, iopub_timeout=4,
        raise_on_iopub_timeout=False, error_on_timeout={"ename": TIMEOUT_ENAME, "evalue": "timeout", "traceback": []},
        on_cell_executed=on_executed, resources={"metadata": {"path": os.getcwd()}})

    def checkpoint():
        status["truncated"] = sorted(client.truncated)
        _write_json(os.path.join(result_dir, "notebook.ipynb"), nb)
        _write_json(os.path.join(result_dir, "status.json"), status)
    checkpoint_box.append(checkpoint)

    # attach to the kernel we started; fail fast if it dies while booting
    kc = OwnKernelClient(connection_file=connection)
    kc.load_connection_file()
    kc.process = process
    kc.start_channels(hb=False)
    await _wait_ready(kc, process, int(job.get("startup_timeout", 60)))
    kc.allow_stdin = False
    client.kc = kc
    status["kernel_start_s"] = round(time.monotonic() - kernel_started, 4)

    async def run_extra(source: str, seconds: int | None = None) -> bool:
        """Run code that is not part of the notebook (a liveness check); True if it timed out."""
        cell = nbformat.v4.new_code_cell(source=source)
        nb.cells.append(cell)
        saved = client.timeout
        if seconds is not None:
            client.timeout = seconds
        try:
            await client.async_execute_cell(cell, len(nb.cells) - 1, store_history=False)
        finally:
            client.timeout = saved
            nb.cells.pop()
        return any(o.get("ename") == TIMEOUT_ENAME for o in cell.get("outputs", []))

    for index, cell in enumerate(list(nb.cells)):
        if cell.cell_type != "code":
            continue
        t0 = time.monotonic()
        try:
            await client.async_execute_cell(cell, index)
        except DeadKernelError:
            status["dead_kernel_cell"] = index
            break
        except CellTimeoutError:  # only without interrupt_on_timeout; kept for safety
            status["timeouts"].append(index)
            status["unresponsive_cell"] = index
            break
        finally:
            status["cells_s"] = round(status["cells_s"] + time.monotonic() - t0, 4)
        if asked_exit:
            status["dead_kernel_cell"], status["kernel_exit"] = index, "shutdown"
            checkpoint()
            break
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            status["errors"][str(index)] = str(errors[0].get("ename", "Error"))[:200]
        if any(o.get("ename") == TIMEOUT_ENAME for o in errors):
            status["timeouts"].append(index)
            # an interrupted kernel that does not answer a trivial cell is beyond help
            try:
                if await run_extra("pass", seconds=min(10, timeout)):
                    status["unresponsive_cell"] = index
                    checkpoint()
                    break
            except DeadKernelError:
                status["dead_kernel_cell"] = index
                break
        checkpoint()
    else:
        status["finished"] = True


def run(job: dict) -> dict:
    result_dir = job.get("result_dir", "result")
    os.makedirs(result_dir, exist_ok=True)
    runtime = os.path.abspath(job.get("runtime_dir", ".runtime"))
    status = {"errors": {}, "timeouts": [], "dead_kernel_cell": None, "kernel_exit": None,
              "unresponsive_cell": None, "truncated": [], "executor_error": None,
              "import_s": None, "kernel_start_s": None, "cells_s": 0.0, "finished": False}
    kernel_started = time.monotonic()
    process, connection = start_kernel(runtime, job.get("kernel_name", "python3"))
    checkpoint_box: list = []
    import asyncio
    try:
        asyncio.run(_run(job, process, connection, kernel_started, status, checkpoint_box))
    except Exception as error:  # the kernel did not start, or died while starting, or nbclient broke
        if process.poll() is not None and status["kernel_start_s"] is None:
            status["dead_kernel_cell"] = -1
        else:
            status["executor_error"] = f"{type(error).__name__}: {str(error)[:300]}"
    if status["dead_kernel_cell"] is not None and status["kernel_exit"] != "shutdown":
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        status["kernel_exit"] = process.returncode
    status["total_s"] = round(time.monotonic() - kernel_started, 4)
    if checkpoint_box:
        checkpoint_box[0]()
    else:
        _write_json(os.path.join(result_dir, "status.json"), status)
    return status


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _no_dump()
    sys.modules.setdefault("rfc3987_syntax", None)  # jsonschema: seconds compiling an unused grammar
    with open(argv[0]) as handle:
        job = json.load(handle)
    run(job)
    sys.stdout.flush()
    os._exit(0)  # no orderly shutdown: the sandbox kills the kernel and everything else


if __name__ == "__main__":
    main()
