"""bench/gpu_check.sh --dry-run: every GPU step is listed, and their time limits fit 8 minutes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_lists_every_step_within_eight_minutes():
    done = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"^tests .* -m not\\ slow --device cuda", out, re.M), out
    for bench in sorted(ROOT.glob("bench/bench_*.py")):
        ran = f"python bench/{bench.name} --device cuda"
        assert ran in out or f"skip bench/{bench.name}: it takes no --device" in out, bench
    assert "bench_cifar_scale.py --device cuda" in out
    for precision in ("fp32", "bf16"):
        assert "landscape surface /tmp/gpu_check/lenet/final.pt" in out
        assert f"--precision {precision} --name {precision}" in out
    limits = [int(s) for s in re.findall(r"^\S+ +(\d+) s  ", out, re.M)]
    assert len(limits) >= 4 and sum(limits) <= 8 * 60
    assert f"time limits add up to {sum(limits)} s" in out


def test_gpu_check_refuses_unknown_arguments():
    done = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--dryrun"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2 and "usage:" in done.stderr
