"""Error of bf16 and fp16 evaluation against fp32: a 2D adversarial loss surface and a
perturbation-cosine grid of one trained model, computed at each `--precision`.

Prints, per field, the largest absolute and relative difference from fp32 over the grid
(errors also in examples), and each precision's wall time. Without `--checkpoint` a LeNet
is first trained on digits (w=2, 10 epochs, PGD at eps 0.1; about a minute on 2 CPU cores),
so the figures belong to a network that fits its data rather than to random weights.

    python bench/bench_precision.py                            # digits LeNet, CPU
    python bench/bench_precision.py --device cuda --checkpoint run/final.pt --samples 1000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from landscape.checkpoint import load_checkpoint
from landscape.cosine import cosine
from landscape.data import load_dataset
from landscape.directions import make_directions, random_direction
from landscape.params import PRECISIONS, named_params
from landscape.surface import surface
from landscape.train import TrainConfig, train
from landscape.util import make_generator, parse_eps, resolve_device, tune_cpu_allocator


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def report(name: str, full: object, low: object, fields: tuple[str, ...], examples: int) -> None:
    for field in fields:
        ref, got = np.asarray(getattr(full, field)), np.asarray(getattr(low, field))
        diff = np.abs(got - ref)
        rel = np.max(diff / np.maximum(np.abs(ref), 1e-12))
        extra = f" = {diff.max() * examples:.0f} examples" if "error" in field else ""
        print(
            f"  {name:5s} {field:26s} max abs {diff.max():.3g}{extra}, max rel {rel:.3g} "
            f"(fp32 values in [{ref.min():.3g}, {ref.max():.3g}])"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", default=None, help="Default: train a digits LeNet.")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--steps", type=int, default=11, help="Surface grid points per axis.")
    parser.add_argument("--eps", default="0.1")
    args = parser.parse_args()
    tune_cpu_allocator()
    device = resolve_device(args.device)
    eps = parse_eps(args.eps)

    with tempfile.TemporaryDirectory() as scratch:
        path = args.checkpoint
        if path is None:
            config = TrainConfig(arch="lenet", width=2, epochs=10, eps=0.1, lr=3e-3)
            path = train(config, Path(scratch), device=device).final
        model, spec = load_checkpoint(path, device)
    model.eval()
    X, y = load_dataset(spec["dataset"], "train", args.data_root, device)
    X, y = X[: args.samples], y[: args.samples]
    n = X.shape[0]
    print(f"{spec['arch']} w={spec['width']} on {spec['dataset']}, {n} examples, {device}")

    directions = make_directions("filter", model, 2, seed=0)
    base = named_params(model)
    unit = {
        kind: random_direction(base, make_generator(seed, device))
        for kind, seed in (("top", 1), ("random", 2))
    }
    grid = (-1.0, 1.0, args.steps)
    surfaces, cosines = {}, {}
    for precision in PRECISIONS:
        sync(device)
        start = time.perf_counter()
        surfaces[precision] = surface(
            model, X, y, directions, dim=2, xrange=grid, eps=eps, precision=precision
        )
        sync(device)
        middle = time.perf_counter()
        cosines[precision] = cosine(
            model,
            X,
            y,
            eps=eps,
            alpha=np.linspace(0.0, 1.0, 6),
            directions=unit,
            repeats=2,
            precision=precision,
        )
        sync(device)
        print(
            f"{precision}: {args.steps}x{args.steps} adversarial surface {middle - start:.1f} s, "
            f"6-point cosine grid (2 repeats) {time.perf_counter() - middle:.1f} s"
        )
    for precision in ("bf16", "fp16"):
        print(f"{precision} against fp32")
        report(
            "surf",
            surfaces["fp32"],
            surfaces[precision],
            ("loss", "error", "adv_loss", "adv_error"),
            n,
        )
        fields = ("cosine_top_mean", "cosine_random_mean", "robust_error_top_plus")
        report("cos", cosines["fp32"], cosines[precision], fields, n)


if __name__ == "__main__":
    main()
