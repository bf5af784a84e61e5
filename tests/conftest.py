import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import dlcourse
from parity import CUDA_SKIP_REASON


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


def pytest_terminal_summary(terminalreporter):
    """One line for the CUDA variants of the PyTorch comparisons (`-rfE` hides skip reasons)."""
    skipped = terminalreporter.stats.get("skipped", [])
    cuda = sum(1 for report in skipped if isinstance(report.longrepr, tuple)
               and report.longrepr[2].endswith(CUDA_SKIP_REASON))
    if cuda:
        terminalreporter.write_line(f"{cuda} CUDA comparisons skipped: no GPU")


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
