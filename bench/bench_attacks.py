"""This project's PGD against torchattacks' PGD (L-inf) or PGDL2, side by side in one run.

Both attack the same model on the same data with the same eps, iterations, step size and
random start, for several seeds each. It prints the robust error per seed, mean and std,
whether the means agree within the seed-to-seed spread (|difference| at most twice its
standard error plus one example), the wall time of each side's fastest run and their ratio;
and, without random start (where both are deterministic), how far the examples differ.
torchattacks draws its random start from the global RNG, seeded here per run; its L2
start has radius eps * U, this project's eps * U^(1/d) (uniform in the ball). PGDL2 divides
the gradient of the batch-mean loss by its norm plus 1e-10, which shortens the steps of
examples whose gradient is that small (a confidently classified example in a large batch);
this project differentiates the summed loss, so each step has its full length.
`--peer-division-eps 1e-30` removes that difference.

    pip install --no-deps torchattacks==3.5.1   # its torchvision requirement would replace torch
    python bench/bench_attacks.py [--threads 1]                    # LeNet w=2 fitted on digits
    python bench/bench_attacks.py --norm l2 --eps 1.0 [--peer-division-eps 1e-30]
    python bench/bench_attacks.py --checkpoint final.pt --eps 8/255 --step-size 2/255 --device cuda
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.attacks import pgd
from landscape.checkpoint import build_from_spec, load_checkpoint, model_spec
from landscape.data import load_dataset
from landscape.util import parse_eps, resolve_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fitted_lenet(device: torch.device) -> tuple[nn.Module, str]:
    """A LeNet w=2 fitted on the digits train split (full-batch Adam): a model with a
    low clean error, so that the robust error moves with the attack."""
    torch.manual_seed(0)
    model = build_from_spec(model_spec("lenet", "digits", width=2), device)
    X, y = load_dataset("digits", "train", None, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    return model.eval(), "digits"


def error(model: nn.Module, X: Tensor, y: Tensor, batch_size: int) -> float:
    with torch.no_grad():
        wrong = sum(
            (model(X[i : i + batch_size]).argmax(1) != y[i : i + batch_size]).sum().item()
            for i in range(0, X.shape[0], batch_size)
        )
    return wrong / X.shape[0]


def timed_run(attack: Callable[[], Tensor], device: torch.device) -> tuple[Tensor, float]:
    sync(device)
    t0 = time.perf_counter()
    x_adv = attack()
    sync(device)
    return x_adv, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", default=None, help="Default: a LeNet w=2 fitted on digits.")
    ap.add_argument("--split", default="test")
    ap.add_argument("--samples", type=int, default=None, help="First N examples (default all).")
    ap.add_argument("--norm", choices=["linf", "l2"], default="linf")
    ap.add_argument("--eps", default="0.1")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--step-size", default=None, help="Default eps/4.")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument(
        "--peer-division-eps",
        type=float,
        default=1e-10,
        help="torchattacks.PGDL2's eps_for_division (its default 1e-10).",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default torch's; 1 is steadier on a shared machine).",
    )
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    import torchattacks

    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    if args.checkpoint:
        model, spec = load_checkpoint(args.checkpoint, device)
        dataset = spec["dataset"]
    else:
        model, dataset = fitted_lenet(device)
    X, y = load_dataset(dataset, args.split, None, device)
    if args.samples:
        X, y = X[: args.samples], y[: args.samples]
    eps = parse_eps(args.eps)
    step_size = parse_eps(args.step_size) if args.step_size else eps / 4
    bs = args.batch_size

    def ours(seed: int, random_start: bool = True) -> Tensor:
        return pgd(
            model,
            X,
            y,
            eps=eps,
            norm=args.norm,
            steps=args.steps,
            step_size=step_size,
            seed=seed,
            batch_size=bs,
            random_start=random_start,
        )

    def theirs(seed: int, random_start: bool = True) -> Tensor:
        if args.norm == "linf":
            attack = torchattacks.PGD(
                model, eps=eps, alpha=step_size, steps=args.steps, random_start=random_start
            )
        else:
            attack = torchattacks.PGDL2(
                model,
                eps=eps,
                alpha=step_size,
                steps=args.steps,
                random_start=random_start,
                eps_for_division=args.peer_division_eps,
            )
        torch.manual_seed(seed)
        return torch.cat([attack(X[i : i + bs], y[i : i + bs]) for i in range(0, X.shape[0], bs)])

    sides = {
        "landscape.pgd": ours,
        f"torchattacks.{'PGD' if args.norm == 'linf' else 'PGDL2'}": theirs,
    }
    for run in sides.values():  # warm-up: first-call allocations and lazy imports
        run(0)
    errors: dict[str, list[float]] = {name: [] for name in sides}
    times: dict[str, list[float]] = {name: [] for name in sides}
    first: dict[str, Tensor] = {}
    for seed in range(args.seeds):
        # Alternate the sides and which goes first, so that machine load hits both alike.
        for name, run in sorted(sides.items(), reverse=seed % 2 == 1):
            x_adv, seconds = timed_run(lambda run=run, seed=seed: run(seed), device)
            errors[name].append(error(model, x_adv, y, bs))
            times[name].append(seconds)
            first.setdefault(name, x_adv)

    n = X.shape[0]
    print(
        f"{dataset} {args.split}, n={n}, {args.norm} eps={eps:.4g}, {args.steps} steps of "
        f"{step_size:.4g}, random start, {args.seeds} seeds, device {device}; "
        f"clean error {error(model, X, y, bs):.4f}"
    )
    width = max(len(name) for name in sides) + 2
    column = max(24, 7 * args.seeds + 2)
    print(f"{'':{width}}{'robust error per seed':<{column}}{'mean':>8}{'std':>8}{'s/run':>9}")
    stats = {}
    for name in sides:
        mean, std = statistics.mean(errors[name]), statistics.pstdev(errors[name])
        per_run = min(times[name])  # the run least disturbed by other load
        stats[name] = (mean, std, per_run)
        per_seed = " ".join(f"{e:.4f}" for e in errors[name])
        print(f"{name:<{width}}{per_seed:<{column}}{mean:8.4f}{std:8.4f}{per_run:9.3f}")
    (m_a, s_a, t_a), (m_b, s_b, t_b) = stats.values()
    k = args.seeds
    std_error = math.sqrt((s_a**2 + s_b**2) / k)
    bound = 2 * std_error + 1 / n
    verdict = "agree" if abs(m_a - m_b) <= bound else "DISAGREE"
    print(
        f"mean difference {m_a - m_b:+.4f}; bound 2*SE + 1/n = {bound:.4f}: {verdict}\n"
        f"wall time torchattacks / landscape: {t_b / t_a:.2f}x"
    )
    # Both draw a uniform L-inf start from a generator seeded alike, so seed 0's examples
    # can coincide too; without random start they must.
    pairs = {"seed 0": tuple(first.values()), "no random start": (ours(0, False), theirs(0, False))}
    for label, (a, b) in pairs.items():
        print(
            f"{label}: {((a - b).abs() > 1e-4).sum().item()} of {a.numel()} pixels differ by "
            f"more than 1e-4 (max |diff| "
            f"{(a - b).abs().max().item():.2e}); robust errors {error(model, a, y, bs):.4f} "
            f"and {error(model, b, y, bs):.4f}"
        )


if __name__ == "__main__":
    main()
