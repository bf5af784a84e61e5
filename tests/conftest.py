import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import dlcourse


def pytest_configure(config):
    """One BLAS and one torch thread per test process: pytest-xdist already runs one
    process per core, and oversubscribed BLAS threads make small matrix products ~8x slower."""
    config._blas_limits = threadpool_limits(limits=1)
    torch.set_num_threads(1)


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


def pytest_terminal_summary(terminalreporter):
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
