"""Wall time of one training epoch per method, relative to PGD-AT with plain SGD.

Every method runs through the trainer's own pieces (`RULES`, `make_batch_loss`, the same
shuffled mini-batches) on the same model and data in this one process; the methods take
turns within each repeat, and the median epoch time of each is divided by SGD's. Kanai
et al. (D.1, E.1) report that EntropySGD costs about what SGD costs and AWP about 8% more
(one extra forward-backward per mini-batch over PGD-10's eleven). Only the epoch is timed:
no evaluation, no files. On a shared CPU the process-time ratio (single thread:
`--threads 1`) is the steadier figure; it is printed beside the wall-time ratio.

    python bench/bench_optimizers.py --threads 1              # digits, LeNet w=4, CPU
    python bench/bench_optimizers.py --device cuda --dataset cifar-shaped --arch resnet18 \\
        --width 16 --samples 2048 --batch-size 128           # random 32x32x3 data, GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from landscape.checkpoint import build_from_spec, model_spec
from landscape.data import batches, dataset_info, load_dataset
from landscape.optim import RULES, StepContext
from landscape.train import TrainConfig, make_batch_loss
from landscape.util import make_generator, parse_eps, resolve_device, tune_cpu_allocator

METHODS = {
    "AT (SGD)": dict(optimizer="sgd"),
    "AT+EnSGD": dict(optimizer="entropy-sgd"),
    "AT+2ndEnSGD": dict(optimizer="entropy-sgd2"),
    "AWP": dict(optimizer="sgd", awp_gamma=0.01),
    "AWP+EnSGD": dict(optimizer="entropy-sgd", awp_gamma=0.005),
    "TRADES": dict(optimizer="sgd", loss="trades"),
    "TRADES+AWP": dict(optimizer="sgd", loss="trades", awp_gamma=0.005),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def data(args: argparse.Namespace, device: torch.device) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(dataset name for the model spec, X, y): digits, or uniform random CIFAR-shaped data."""
    if args.dataset == "cifar-shaped":
        g = make_generator(0, device)
        X = torch.rand((args.samples, 3, 32, 32), generator=g, device=device)
        y = torch.randint(0, 10, (args.samples,), generator=g, device=device)
        return "cifar10", X, y
    X, y = load_dataset(args.dataset, "train", args.data_root, device)
    return args.dataset, X[: args.samples], y[: args.samples]


def epoch_seconds(
    args: argparse.Namespace, name: str, X: torch.Tensor, y: torch.Tensor, device: torch.device
) -> tuple[float, float, int, int]:
    """One epoch of `name` from a fresh model: (wall s, process s, mini-batches, steps)."""
    config = TrainConfig(
        dataset=args.dataset_name,
        arch=args.arch,
        width=args.width,
        eps=args.eps_value,
        batch_size=args.batch_size,
        lr=0.01,
        langevin_steps=args.langevin_steps,
        awp_warmup=0,  # the timed epoch is AWP's, not its warmup's
        **METHODS[name],
    )
    torch.manual_seed(0)
    model = build_from_spec(model_spec(args.arch, args.dataset_name, width=args.width), device)
    model.train()
    rule = RULES[config.optimizer](model, config)
    at_eps = make_batch_loss(
        dataset_info(args.dataset_name).family, config, make_generator(2, device)
    )
    stream = batches(X, y, args.batch_size, shuffle=True, generator=make_generator(1, device))
    ctx = StepContext(config.lr, args.eps_value, at_eps(args.eps_value), epoch=1.0)

    def draw() -> tuple[torch.Tensor, torch.Tensor] | None:
        return next(stream, None)

    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    n_batches = n_steps = 0
    while produced := rule.step(draw, ctx):
        n_batches += len(produced)
        n_steps += 1
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu_start, n_batches, n_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset", default="digits", help="digits (or another) or cifar-shaped")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--arch", default="lenet")
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--samples", type=int, default=1440)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eps", default=None, help="default 0.1 (digits) or 8/255 (cifar-shaped)")
    parser.add_argument("--langevin-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    tune_cpu_allocator()  # as the landscape command does
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.dataset_name, X, y = data(args, device)
    default_eps = "8/255" if args.dataset == "cifar-shaped" else "0.1"
    args.eps_value = parse_eps(args.eps or default_eps)
    names = ["AT (SGD)"] + [m for m in args.methods.split(",") if m and m != "AT (SGD)"]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")

    times: dict[str, list[float]] = {m: [] for m in names}
    cpu: dict[str, list[float]] = {m: [] for m in names}
    counts: dict[str, tuple[int, int]] = {}
    peak: dict[str, float] = {}
    for m in names:  # warm-up epoch (allocator, kernels), untimed
        epoch_seconds(args, m, X, y, device)
    for _ in range(args.repeats):
        for m in names:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, cpu_seconds, n_batches, n_steps = epoch_seconds(args, m, X, y, device)
            times[m].append(seconds)
            cpu[m].append(cpu_seconds)
            counts[m] = (n_batches, n_steps)
            if device.type == "cuda":
                peak[m] = torch.cuda.max_memory_allocated(device) / 2**20

    base = statistics.median(times["AT (SGD)"])
    cpu_base = statistics.median(cpu["AT (SGD)"])
    print(
        f"{args.dataset} ({X.shape[0]} samples, batch {args.batch_size}), {args.arch} "
        f"w={args.width}, eps {args.eps_value:.4g}, L={args.langevin_steps}, device {device}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} epochs"
    )
    header = (
        f"{'method':<14}{'s/epoch':>10}{'vs SGD':>9}{'cpu vs SGD':>12}{'batches':>9}{'steps':>7}"
    )
    print(header + (f"{'peak MiB':>10}" if peak else ""))
    for m in names:
        t, c = statistics.median(times[m]), statistics.median(cpu[m])
        row = f"{m:<14}{t:>10.3f}{t / base:>9.3f}{c / cpu_base:>12.3f}"
        row += f"{counts[m][0]:>9}{counts[m][1]:>7}"
        print(row + (f"{peak[m]:>10.0f}" if peak else ""))


if __name__ == "__main__":
    main()
