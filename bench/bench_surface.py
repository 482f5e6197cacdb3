"""Clean 2D filter-normalized loss surface: grid points per second, side by side with the
`loss-landscapes` package's `random_plane` on the same model, data and grid size; then the
cost of an adversarial 2D surface point (PGD-K regenerated at the point, stacked points per
vmapped call) against a clean point and a forward-backward pass.

Both clean surfaces are timed end to end (directions included): ours swaps parameters into
one module by name (`functional_call`) and vmaps `--points` points per call; the peer moves
the module's parameters in place and evaluates one point at a time. The peer spans its grid
with its own scale convention (+-||theta|| / (2 distance)); the number of points and the
work per point are the same. Goals: >= 1.3x the peer on CPU (>= 5x on a GPU); an
adversarial point at <= 1.0 (K + 1) forward-backward passes (one pass: a forward and an
input gradient of the batch at one parameter point), K + 1 being the limit for a point
attacked alone (K PGD iterations plus the loss evaluations), which stacking the points
undercuts. The adversarial surface is timed with its points stacked and one at a time
(`--points-per-batch 1`); its point is also printed in units of clean points, unbatched
and batched (a no-grad forward, about a third of a pass).

    python bench/bench_surface.py                                   # lenet w=2, digits, CPU
    python bench/bench_surface.py --device cuda --arch resnet18 --width 4 --dataset cifar10 \\
        --data-root ~/data --samples 1000 --steps 21
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from landscape.attacks import attack_config
from landscape.checkpoint import build_from_spec, model_spec
from landscape.data import dataset_info, load_dataset
from landscape.params import functional_forward, named_params
from landscape.surface import default_points_per_batch, surface
from landscape.util import parse_eps, resolve_device, tune_cpu_allocator


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fns: dict[str, Callable[[], object]], device: torch.device, repeats: int
) -> dict[str, float]:
    """Median wall time of each callable; the callables take turns (after one warm-up call
    each), so a machine whose load drifts slows them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    sync(device)
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@contextlib.contextmanager
def default_device(device: torch.device) -> Iterator[None]:
    """The peer draws its directions with bare `torch.rand`, on the default device (set only
    off the CPU: the device mode intercepts every torch call, a cost the peer need not pay)."""
    if device.type == "cpu":
        yield
        return
    previous = torch.get_default_device()
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device(previous)


def peer_plane(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, steps: int) -> object:
    import loss_landscapes
    from loss_landscapes.metrics import Loss

    metric = Loss(lambda logits, target: F.cross_entropy(logits, target), X, y)
    with torch.no_grad(), default_device(X.device):
        return loss_landscapes.random_plane(
            model, metric, distance=1, steps=steps, normalization="filter", deepcopy_model=True
        )


def pgd_pass(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    """One PGD iteration's work at the model's parameters: forward, loss, input gradient."""
    params = named_params(model)

    def run() -> object:
        x = X.clone().requires_grad_(True)
        loss = F.cross_entropy(functional_forward(model, params, x), y, reduction="sum")
        return torch.autograd.grad(loss, x)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--arch", default="lenet")
    parser.add_argument("--width", type=int, default=2)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--steps", type=int, default=15, help="Grid points per axis.")
    parser.add_argument("--points", type=int, default=None, help="Clean points per vmapped call.")
    parser.add_argument("--eps", default="0.1", help="Budget of the adversarial-point measurement.")
    parser.add_argument(
        "--adv-grid",
        type=lambda text: tuple(int(v) for v in text.split("x")),
        default=(4, 2),
        help="Adversarial surface grid NXxNY (default 4x2: one block of 8 points on a CPU).",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="Intra-op CPU threads (default torch's; 1 keeps a shared machine's timings steady).",
    )
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="Leave glibc malloc untuned (the landscape command tunes it at start).",
    )
    args = parser.parse_args()
    tuned = not args.default_allocator and tune_cpu_allocator()
    print(f"glibc malloc tuned as the landscape command does: {'yes' if tuned else 'no'}")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_from_spec(model_spec(args.arch, args.dataset, width=args.width), device).eval()
    X, y = load_dataset(args.dataset, "train", args.data_root, device)
    X, y = X[: args.samples], y[: args.samples]
    n, points = args.steps, args.points or default_points_per_batch(device)
    grid = (-1.0, 1.0, n)

    def ours(per_call: int) -> Callable[[], object]:
        return lambda: surface(model, X, y, "filter", dim=2, xrange=grid, points_per_batch=per_call)

    t = timed(
        {"peer": lambda: peer_plane(model, X, y, n), "ours": ours(points), "single": ours(1)},
        device,
        args.repeats,
    )
    t_peer, t_ours, t_single = t["peer"], t["ours"], t["single"]
    total = n * n
    print(
        f"{args.arch} w={args.width} on {args.dataset}, {X.shape[0]} examples, {n}x{n} grid, "
        f"{device}, {torch.get_num_threads()} threads"
    )
    print(f"  loss-landscapes random_plane   {total / t_peer:9.1f} points/s")
    print(
        f"  landscape surface ({points:>2} / call) {total / t_ours:9.1f} points/s   ratio {t_peer / t_ours:.2f}x"
    )
    print(
        f"  landscape surface (no vmap)    {total / t_single:9.1f} points/s   ratio {t_peer / t_single:.2f}x"
    )

    eps = parse_eps(args.eps)
    k = attack_config(eps, family=dataset_info(args.dataset).family).steps
    nx, ny = args.adv_grid
    adv_total = nx * ny

    def adversarial(per_call: int, eps_value: float) -> Callable[[], object]:
        return lambda: surface(
            model,
            X,
            y,
            "filter",
            dim=2,
            xrange=(-1.0, 1.0, nx),
            yrange=(-1.0, 1.0, ny),
            eps=eps_value,
            points_per_batch=per_call,
        )

    t = timed(
        {
            "adv": adversarial(points, eps),
            "adv_single": adversarial(1, eps),
            "clean": adversarial(points, 0.0),
            "clean_single": adversarial(1, 0.0),
            "pass": pgd_pass(model, X, y),
        },
        device,
        args.repeats,
    )
    per_point = {
        name: t[name] / adv_total for name in ("adv", "adv_single", "clean", "clean_single")
    }
    t_adv, t_pass = per_point["adv"], t["pass"]
    print(
        f"adversarial 2D surface point, {nx}x{ny} grid, PGD-{k} at eps {eps:g}: "
        f"{1e3 * t_adv:.1f} ms ({points} / call), {1e3 * per_point['adv_single']:.1f} ms "
        f"one at a time ({per_point['adv_single'] / t_adv:.2f}x)"
    )
    units = (
        ("forward-backward passes", t_pass, "   [limit of one point alone K+1; goal 1.0 (K+1)]"),
        ("unbatched clean points", per_point["clean_single"], ""),
        (f"batched clean points ({points} / call)", per_point["clean"], ""),
    )
    for unit, seconds, note in units:
        print(
            f"  = {t_adv / seconds:6.1f} {unit} ({1e3 * seconds:.2f} ms each) "
            f"= {t_adv / seconds / (k + 1):.2f} (K+1){note}"
        )


if __name__ == "__main__":
    main()
