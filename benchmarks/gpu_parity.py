"""Run the PyTorch comparison tests with torch on CUDA and write a parity report.

    python benchmarks/gpu_parity.py --out docs/gpu-parity.md     (or: make gpu-check)

Selects the tests parametrized with device='cuda', records the worst relative error per
layer and dtype, and writes device name, torch version, date and the table. Exits with a
clear message where no CUDA device is present; CI never runs it.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "gpu-parity.md"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device visible to torch; run this on a machine with a GPU", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "errors.json"
        env = dict(os.environ, DLCOURSE_PARITY_JSON=str(report))
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-k", "cuda", str(ROOT / "tests")]
        completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        summary = [line for line in completed.stdout.splitlines() if line.strip()][-1:]
        rows = json.loads(report.read_text()) if report.exists() else []
    lines = [
        "# GPU parity report",
        "",
        "Every dlcourse layer, loss and optimizer compared with PyTorch running on CUDA",
        "(the tests parametrized with `device='cuda'`). Error = max|dlcourse − torch| / max|torch|;",
        "the suite's limits are 1e-7 (float64) and 1e-4 (float32).",
        "",
        f"- device: {torch.cuda.get_device_name(0)}",
        f"- torch: {torch.__version__} (CUDA {torch.version.cuda})",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- pytest: {summary[0] if summary else 'no output'} (exit status {completed.returncode})",
        "",
        "| layer | dtype | max relative error |",
        "| --- | --- | ---: |",
    ]
    lines += [f"| {row['layer']} | {row['dtype']} | {row['max_rel_error']:.2e} |" for row in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}: {len(rows)} rows; {summary[0] if summary else ''}")
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
