import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import dlcourse
from parity import CUDA_SKIP_REASON

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def pytest_configure(config):
    """One BLAS and one torch thread per test process: pytest-xdist already runs one
    process per core, and oversubscribed BLAS threads make small matrix products ~8x slower."""
    config._blas_limits = threadpool_limits(limits=1)
    torch.set_num_threads(1)
    config.pluginmanager.register(BookBuildRecorder(), "book-build-recorder")


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, so failures reproduce."""
    dlcourse.manual_seed(0)
    dlcourse.set_default_dtype(np.float32)
    yield
    dlcourse.set_default_dtype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


BOOK_BUILDS = "book-builds.txt"   # one line per `built_site` set-up: worker and seconds


def _shared_temp(config) -> Path:
    """The session's temporary folder, the same for the controller and every xdist worker."""
    base = config._tmp_path_factory.getbasetemp()
    return base.parent if hasattr(config, "workerinput") else base


class BookBuildRecorder:
    """Records each build of the book (test_book's session fixture `built_site`) for the
    summary line. A plugin, not a conftest hook: conftest hooks do not see session-scoped
    fixtures, whose node is the session, above tests/."""

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        if fixturedef.argname != "built_site":
            return (yield)
        started = time.monotonic()
        result = yield
        worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
        with open(_shared_temp(request.config) / BOOK_BUILDS, "a") as handle:
            handle.write(f"{worker} {time.monotonic() - started:.0f}\n")
        return result


def pytest_terminal_summary(terminalreporter, config):
    """One line for the CUDA variants of the PyTorch comparisons (`-rfE` hides skip reasons),
    and how often the book was built (once, when the xdist groups hold)."""
    skipped = terminalreporter.stats.get("skipped", [])
    cuda = sum(1 for report in skipped if isinstance(report.longrepr, tuple)
               and report.longrepr[2].endswith(CUDA_SKIP_REASON))
    if cuda:
        terminalreporter.write_line(f"{cuda} CUDA comparisons skipped: no GPU")
    builds_file = _shared_temp(config) / BOOK_BUILDS
    if builds_file.exists():
        builds = [line.split() for line in builds_file.read_text().splitlines() if line.strip()]
        times = "once" if len(builds) == 1 else f"{len(builds)} times"
        where = ", ".join(f"{worker} {seconds} s" for worker, seconds in builds)
        terminalreporter.write_line(f"the book was built {times} ({where})")
    _module_db_summary(terminalreporter)


def pytest_sessionfinish(session, exitstatus):
    """With DLCOURSE_PARITY_JSON set, save the worst error per layer and dtype (for `make gpu-check`)."""
    import json
    import os

    path = os.environ.get("DLCOURSE_PARITY_JSON")
    if not path:
        return
    from parity import MEASURED_ERRORS

    rows = [{"layer": layer, "dtype": dtype, "max_rel_error": error}
            for (layer, dtype), error in sorted(MEASURED_ERRORS.items())]
    with open(path, "w") as handle:
        json.dump(rows, handle, indent=1)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """`--dist loadgroup` under pytest 9: pytest-xdist 3.8 marks a test's group by setting
    `item._nodeid`, which pytest 9 no longer reads (the node id lives in `item._id`), so
    the groups were split across workers and the book was built once per worker. Put the
    group suffix where pytest 9 keeps the node id; on older pytest xdist's own suffix stands."""
    if not hasattr(config, "workerinput") or not config.getvalue("loadgroup"):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(groups)
        if groups and not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)


def _module_db_summary(terminalreporter):
    """Cases per class of PyTorch's own configurations (tests/test_torch_module_db.py).

    Read from the test reports, so it also works under pytest-xdist; a class is the first
    part of each case's id ("Conv2d-module_db3-float64").
    """
    from collections import Counter

    outcomes = {}
    for outcome in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "test_torch_module_db.py::" not in nodeid or "[" not in nodeid:
                continue
            kind = "optimizer" if "test_optimizer" in nodeid else "module"
            name = nodeid.split("[", 1)[1].split("-", 1)[0]
            outcomes.setdefault((kind, name), Counter())[outcome] += 1
    if not outcomes:
        return
    terminalreporter.section("PyTorch's own configurations (module_db, common_nn, optim_db): cases per class")
    for (kind, name), counts in sorted(outcomes.items()):
        failed = counts["failed"] + counts["error"]
        terminalreporter.write_line(f"{kind:9} {name:24} {sum(counts.values()):4} cases"
                                    + (f", {failed} FAILED" if failed else ""))
    total = sum(sum(c.values()) for c in outcomes.values())
    failed = sum(c["failed"] + c["error"] for c in outcomes.values())
    terminalreporter.write_line(f"{total} cases, {failed} failed")


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium, one per test process: the book's and the feedback pages'
    browser tests share it (a second sync_playwright in the same thread finds the first one's
    event loop running, and Playwright refuses)."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()
