"""The CIFAR-scale case: a ResNet-18 top-20 Hessian and a 21x21 adversarial surface.

Random CIFAR-shaped data (3x32x32 in [0, 1], 10 classes, seed 0) and a ResNet-18 of
width 16 at its seeded initialization: the cost of the two analyses does not depend on
the weights being trained. Printed for each: wall time and peak memory (CUDA:
`max_memory_allocated` over the call; CPU: the process's peak resident set, a
high-water mark that includes everything before). The defaults are the GPU check's
sizes (bench/gpu_check.sh); tiny sizes run anywhere:

    python bench/bench_cifar_scale.py --device cuda
    python bench/bench_cifar_scale.py --device cpu --width 1 --hessian-samples 32 \\
        --surface-samples 8 --grid 3 --top 2
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from typing import Any

import torch

import landscape as ls
from landscape.checkpoint import build_from_spec, model_spec
from landscape.util import parse_eps, resolve_device


def measured(device: torch.device, call: Callable[[], Any]) -> tuple[Any, float, str]:
    """(result, seconds, peak memory) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (CUDA max allocated)"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB (peak RSS)"
    return result, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--hessian-samples", type=int, default=10_000)
    parser.add_argument("--surface-samples", type=int, default=1_000)
    parser.add_argument("--grid", type=int, default=21, help="points per axis of the surface")
    parser.add_argument("--eps", default="8/255")
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()

    device = resolve_device(args.device)
    eps = parse_eps(args.eps)
    gen = torch.Generator().manual_seed(0)
    n = max(args.hessian_samples, args.surface_samples)
    X = torch.rand(n, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (n,), generator=gen).to(device)
    spec = model_spec("resnet18", "cifar10", width=args.width)
    torch.manual_seed(0)
    model = build_from_spec(spec, device).eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"ResNet-18 w={args.width} ({params:,} parameters) on {device}, eps {args.eps}")

    nh = args.hessian_samples
    res, seconds, peak = measured(
        device,
        lambda: ls.hessian(
            model,
            X[:nh],
            y[:nh],
            eps,
            top=args.top,
            spec=spec,
            random_samples=0,
            batch_size=args.batch_size,
        ),
    )
    print(
        f"top-{args.top} Hessian, {nh} examples: {seconds:.1f} s, {res.n_hvp} products, "
        f"largest eigenvalue {float(res.eigenvalues[0]):.4g}, peak {peak}"
    )

    ns = args.surface_samples
    surf, seconds, peak = measured(
        device,
        lambda: ls.surface(
            model,
            X[:ns],
            y[:ns],
            "filter",
            dim=2,
            xrange=(-1.0, 1.0, args.grid),
            eps=eps,
            batch_size=args.batch_size,
        ),
    )
    points = args.grid**2
    print(
        f"{args.grid}x{args.grid} adversarial surface, {ns} examples: {seconds:.1f} s "
        f"({points / seconds:.2f} points/s), adversarial loss at the centre "
        f"{float(surf.adv_loss[args.grid // 2, args.grid // 2]):.4g}, peak {peak}"
    )


if __name__ == "__main__":
    main()
