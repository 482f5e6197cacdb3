"""Speed-up of `torchrun --nproc-per-node 2` over one process for a surface grid (CPU, gloo).

The same adversarial 2D surface of the same model is computed by `landscape surface` in
one process and by two processes under torchrun; points per second come from each run's
stored `elapsed_s` (the grid itself, without interpreter and torch start-up), and the
arrays are checked to be identical. Every process runs with OMP_NUM_THREADS=1, so the
two-process run uses two cores where the single process uses one; a single process with
two intra-op threads is timed too, as the fair alternative on a 2-core machine.

    python bench/bench_distributed.py [--range -1:1:9] [--samples 256] [--eps 0.1]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(prefix: list[str], args: list[str], out: Path, threads: int) -> tuple[float, dict]:
    """Run one surface command; return its grid seconds and arrays."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    cmd = [*prefix, "-m", "landscape", *args, "--out", str(out), "--device", "cpu"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    with h5py.File(out, "r") as f:
        (name,) = list(f["surface"])
        group = f["surface"][name]
        arrays = {k: v[()] for k, v in group.items()}
        return float(group.attrs["elapsed_s"]), arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--range", default="-1:1:9")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--eps", default="0.1")
    opts = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from landscape.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train(TrainConfig(arch="lenet", width=2, epochs=1, eps=0.1), work / "model", device="cpu")
        args = ["surface", str(work / "model/final.pt"), "--dim", "2", "--range", opts.range]
        args += ["--eps", opts.eps, "--samples", str(opts.samples)]
        n = int(opts.range.split(":")[2]) ** 2
        py = [sys.executable]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
        torchrun += ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
        one, a = run(py, args, work / "one.h5", threads=1)
        one_t2, _ = run(py, args, work / "one_t2.h5", threads=2)
        two, b = run(torchrun, args, work / "two.h5", threads=1)
        same = all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)

    print(f"surface grid: {n} points, eps {opts.eps}, {opts.samples} digits samples, LeNet w=2")
    print(f"1 process,   1 thread : {n / one:7.2f} points/s ({one:.1f} s)")
    print(f"1 process,   2 threads: {n / one_t2:7.2f} points/s ({one_t2:.1f} s)")
    print(f"2 processes, 1 thread each (torchrun, gloo): {n / two:7.2f} points/s ({two:.1f} s)")
    print(f"speed-up of 2 processes over 1 (1 thread each): {one / two:.2f}x")
    print(f"speed-up of 2 processes over 1 process with 2 threads: {one_t2 / two:.2f}x")
    print(f"arrays identical: {same}")


if __name__ == "__main__":
    main()
