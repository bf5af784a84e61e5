"""Where grading runs and where grades go: a Dask cluster (LocalCluster, and a scheduler and
workers started as separate processes with the `dask` command), PostgreSQL (a throwaway
server of Debian's postgresql, started here), and the normal-user sandbox."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from test_grading_support import (A, AUTO, correct_notebook, course, expect_full, grade, gradebook_scores,  # noqa: F401
                                  hashes, insert_code, outcome_rows, registered_course, released_notebook, submit,
                                  wrong, first_helper_slot, outputs_text, autograded, PARTS)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("grading")]


def three_submissions(course):
    submit(course, "ann", correct_notebook())
    submit(course, "ben", wrong(correct_notebook(), "dropout_backward"))
    submit(course, "cat", released_notebook())
    return hashes(course)


def check_three(lines):
    expect_full(lines["ann"])
    assert lines["ben"]["status"] == "graded" and lines["ben"]["score"] == AUTO - 2
    assert lines["cat"]["status"] == "graded" and lines["cat"]["score"] == 0


# --- Dask -----------------------------------------------------------------------------------

def test_grading_on_a_dask_cluster(course):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed")
    before = three_submissions(course)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster:
        lines, completed = grade(course, "--scheduler", cluster.scheduler_address)
    check_three(lines)
    assert len(outcome_rows(course)) == 3 and hashes(course) == before
    assert gradebook_scores(course, "ben")["dropout_backward_tests"] == 0


DASK_START_SECONDS = 90   # the scheduler and two worker processes start in ~5 s on an idle machine


def _stop(process: subprocess.Popen) -> None:
    """End a `dask` command and everything it started (it leads its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def _dask_command(log: Path, *args: str) -> subprocess.Popen:
    dask = Path(sys.executable).parent / "dask"
    with open(log, "wb") as handle:
        return subprocess.Popen([str(dask), *args], stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


@pytest.fixture
def dask_processes(tmp_path):
    """`dask scheduler` and `dask worker` (two single-threaded worker processes) on 127.0.0.1,
    as an instructor starts them on grading machines; both are stopped afterwards, and neither
    outlives the test by more than the --idle-timeout / --death-timeout backstops."""
    distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed")
    address = f"tcp://127.0.0.1:{_free_port()}"
    scheduler = _dask_command(tmp_path / "scheduler.log", "scheduler", "--host", "127.0.0.1",
                              "--port", address.rsplit(":", 1)[1], "--no-dashboard", "--idle-timeout", "900")
    workers = None
    try:
        workers = _dask_command(tmp_path / "worker.log", "worker", address, "--nworkers", "2", "--nthreads", "1",
                                "--no-dashboard", "--death-timeout", "60", "--local-directory", str(tmp_path))
        deadline = time.monotonic() + DASK_START_SECONDS
        with distributed.Client(address, timeout=DASK_START_SECONDS) as client:
            client.wait_for_workers(2, timeout=max(1.0, deadline - time.monotonic()))
            pids = sorted(client.run(os.getpid).values())
        yield address, pids
    finally:
        for process in (workers, scheduler):
            if process is not None:
                _stop(process)


def test_grading_on_dask_scheduler_and_worker_processes(course, dask_processes):
    address, worker_pids = dask_processes
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    before = three_submissions(course)
    lines, _ = grade(course, "--scheduler", address)
    check_three(lines)
    assert len(outcome_rows(course)) == 3 and hashes(course) == before
    assert gradebook_scores(course, "ben")["dropout_backward_tests"] == 0


# --- PostgreSQL -----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server in a temporary folder, on a free port, as `postgres` when root."""
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if not initdb[-1]:
        pytest.skip("PostgreSQL's server is not installed (Debian: apt-get install postgresql; "
                    "`make test` installs it when run as root)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (see requirements.txt)")
    bindir = Path(initdb[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="dlcourse-pg-"))
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    port = _free_port()

    def run(*args):
        completed = subprocess.run(prefix + list(args), capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, completed.stdout + completed.stderr

    run(str(bindir / "initdb"), "-D", str(base / "data"), "-A", "trust", "-U", "grader", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        from sqlalchemy import create_engine, text
        engine = create_engine(f"postgresql://grader@127.0.0.1:{port}/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("CREATE DATABASE gradebook"))
        engine.dispose()
        yield f"postgresql://grader@127.0.0.1:{port}/gradebook"
    finally:
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_grading_into_postgresql(course, postgres_url):
    before = three_submissions(course)
    lines, _ = grade(course, "--db", postgres_url, "--workers", "2")
    check_three(lines)
    rows = {r["student"]: r for r in outcome_rows(course, postgres_url)}
    assert sorted(rows) == ["ann", "ben", "cat"] and rows["ann"]["score"] == AUTO
    assert gradebook_scores(course, "ben", postgres_url) == {**PARTS, "dropout_backward_tests": 0.0}
    # nothing went into the SQLite gradebook, and a second run resumes from PostgreSQL
    assert not [r for r in outcome_rows(course) if r["assignment"] == A]
    lines, completed = grade(course, "--db", postgres_url)
    assert "3 already graded" in completed.stderr and len(outcome_rows(course, postgres_url)) == 3
    assert hashes(course) == before


# --- the normal-user sandbox ------------------------------------------------------------------

def test_the_user_namespace_sandbox_isolates_too(course):
    notebook = correct_notebook()
    insert_code(notebook, f"try:\n    open(r'{course}/solutions/{A}/{A}.ipynb')\n    print('LEAKED')\n"
                          "except OSError as error:\n    print('BLOCKED', type(error).__name__)\n"
                          "import os\nprint('UID', os.getuid())", at=first_helper_slot(notebook))
    submit(course, "ann", notebook)
    submit(course, "ben", wrong(correct_notebook(), "dropout_backward"))
    lines, _ = grade(course, "--sandbox", "userns")
    expect_full(lines["ann"])
    assert lines["ben"]["score"] == AUTO - 2
    text = outputs_text(autograded(course, "ann"))
    assert "BLOCKED FileNotFoundError" in text and "LEAKED" not in text and "UID 61" in text
