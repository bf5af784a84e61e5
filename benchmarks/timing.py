"""Shared timing helpers: dlcourse and torch measured in the same process, same threads.

Each case is timed as the median of `repeats` runs (after a warm-up), dlcourse's and torch's
runs interleaved; the table prints the ratio dlcourse / torch, so machine noise that hits
both sides cancels out. With one thread the clock is the process's CPU time, which does not
count the time the scheduler gives other processes on a shared machine; with several
threads it is wall time (CPU time would add the threads up).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date

import numpy as np
import torch
from threadpoolctl import threadpool_limits


def paired_median_times(ours, theirs, repeats: int, min_time: float = 0.05,
                        clock=time.perf_counter) -> tuple[float, float]:
    """Median seconds per call of both, their samples interleaved (ours, torch, ours, …) so
    that a busy phase of a shared machine slows both sides alike."""
    calls = []
    for fn in (ours, theirs):
        fn()
        start = clock()
        fn()
        calls.append(max(1, int(min_time / max(clock() - start, 1e-9))))
    samples = ([], [])
    for _ in range(repeats):
        for fn, count, store in zip((ours, theirs), calls, samples):
            start = clock()
            for _ in range(count):
                fn()
            store.append((clock() - start) / count)
    return statistics.median(samples[0]), statistics.median(samples[1])


def clock_for(threads: int):
    """(clock, its name): CPU time for one thread, wall time for several."""
    return (time.process_time, "CPU time") if threads == 1 else (time.perf_counter, "wall time")


def parse_args(description: str):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=7, help="runs per case; the median is reported")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="threads for both NumPy's BLAS and torch")
    parser.add_argument("--only", default=None, help="substring filter on case names")
    return parser.parse_args()


def run_cases(cases, args, title: str):
    """cases: list of (name, goal, dlcourse_fn, torch_fn). Prints a Markdown table."""
    torch.set_num_threads(args.threads)
    clock, clock_name = clock_for(args.threads)
    load = " · load average {:.1f}, {:.1f}, {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    print(f"## {title}\n")
    print(f"{date.today()} · {platform.processor() or platform.machine()} · {args.threads} thread(s) · "
          f"torch {torch.__version__} · numpy {np.__version__} · median of {args.repeats} · {clock_name}{load}\n")
    print("| case | dlcourse (ms) | torch (ms) | ratio | goal |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rows = []
    with threadpool_limits(limits=args.threads):
        for name, goal, ours, theirs in cases:
            if args.only and args.only not in name:
                continue
            t_ours, t_torch = paired_median_times(ours, theirs, args.repeats, clock=clock)
            ratio = t_ours / t_torch
            flag = "" if ratio <= goal else " ⚠"
            print(f"| {name} | {t_ours * 1e3:.3f} | {t_torch * 1e3:.3f} | {ratio:.2f}{flag} | ≤ {goal} |", flush=True)
            rows.append((name, t_ours, t_torch, ratio, goal))
    return rows


def layer_case(name, goal, module, torch_module, x):
    """Forward + backward of a dlcourse module and its torch twin on the same float32 input.

    Both start from the same parameters; both accumulate parameter gradients, as a training
    step would between zero_grad calls.
    """
    module.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()})
    x = np.asarray(x, dtype=np.float32)
    grad_output = np.random.default_rng(0).standard_normal(np.shape(module(x))).astype(np.float32)
    x_torch = torch.tensor(x, requires_grad=True)
    grad_torch = torch.tensor(grad_output)

    def ours():
        module(x)
        module.backward(grad_output)

    def theirs():
        torch_module(x_torch).backward(grad_torch)

    return name, goal, ours, theirs
