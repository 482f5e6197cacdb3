"""One curve-training step against one ordinary training step, side by side.

Both go through the trainer's `UpdateRule.step` on the same batch at the same eps with
the same PGD attack: the ordinary step with `landscape.train.make_batch_loss` on a model,
the curve step with `landscape.connect.CurveBatchLoss` on a Bezier curve between two
models of the same architecture (B(t), the attack at B(t), the loss by a functional call,
the gradient through B(t) into the bends). Prints the median times and their ratio
(curve / ordinary; about 1.0 is the limit, 1.3 or less the goal).

    python bench/bench_connect.py                       # lenet w=4 and vgg w=1 on digits, CPU
    python bench/bench_connect.py --device cuda --arch resnet18 --width 8 --dataset cifar10 \\
        --data-root ~/data --eps 8/255 --order 4 --batch-size 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from landscape.attacks import attack_config
from landscape.checkpoint import build_from_spec, model_spec
from landscape.connect import BezierCurve, CurveBatchLoss, default_order
from landscape.data import dataset_info, load_dataset
from landscape.optim import BatchLoss, StepContext, UpdateRule
from landscape.params import named_params
from landscape.train import TrainConfig, make_batch_loss
from landscape.util import make_generator, parse_eps, resolve_device, tune_cpu_allocator


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(args: argparse.Namespace, arch: str, width: int) -> float:
    device = resolve_device(args.device)
    family = dataset_info(args.dataset).family
    order = args.order or default_order(family)
    eps = parse_eps(args.eps)
    spec = model_spec(arch, args.dataset, width=width)
    config = TrainConfig(
        dataset=args.dataset, arch=arch, width=width, eps=eps, optimizer=args.optimizer
    )
    X, y = load_dataset(args.dataset, "train", args.data_root, device)
    x, y = X[: args.batch_size], y[: args.batch_size]

    torch.manual_seed(0)
    model = build_from_spec(spec, device).train()
    ordinary = UpdateRule(model, config)
    ordinary_loss = make_batch_loss(family, config, make_generator(1, device))(eps)

    torch.manual_seed(1)
    other = build_from_spec(spec, device)
    curve = BezierCurve(
        build_from_spec(spec, device), named_params(model), named_params(other), order
    ).train()
    curved = UpdateRule(curve, config)
    attack = attack_config(eps, family=family, norm="linf") if eps > 0 else None
    curve_loss = CurveBatchLoss(
        BatchLoss(attack, make_generator(2, device)), make_generator(3, device)
    )

    def step(rule: UpdateRule, loss) -> float:
        sync(device)
        start = time.perf_counter()
        rule.step(lambda: (x, y), StepContext(1e-3, eps, loss))
        sync(device)
        return time.perf_counter() - start

    for _ in range(args.warmup):
        step(ordinary, ordinary_loss)
        step(curved, curve_loss)
    times: dict[str, list[float]] = {"ordinary": [], "curve": []}
    for _ in range(args.repeats):  # interleaved, so drifts in machine speed hit both alike
        times["ordinary"].append(step(ordinary, ordinary_loss))
        times["curve"].append(step(curved, curve_loss))
    t_ord, t_curve = statistics.median(times["ordinary"]), statistics.median(times["curve"])
    ratio = t_curve / t_ord
    print(
        f"{arch} w={width} {args.dataset} order={order} eps={eps:.4g} batch={x.shape[0]} "
        f"on {device}: ordinary step {t_ord * 1e3:.2f} ms, curve step {t_curve * 1e3:.2f} ms, "
        f"ratio {ratio:.3f}"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument(
        "--arch", action="append", help="repeatable; default: lenet and vgg (see --width)"
    )
    parser.add_argument(
        "--width", type=int, action="append", help="one per --arch; default 4 for lenet, 1 for vgg"
    )
    parser.add_argument("--order", type=int, default=None, help="default: 2 MNIST-like, 4 CIFAR")
    parser.add_argument("--eps", default="0.1")
    parser.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (1 is steadier on a shared machine)"
    )
    args = parser.parse_args()
    tune_cpu_allocator()  # as the landscape command does
    torch.set_num_threads(args.threads)
    archs = args.arch or ["lenet", "vgg"]
    widths = args.width or [4 if a == "lenet" else 1 for a in archs]
    if len(widths) != len(archs):
        parser.error("give one --width per --arch")
    ratios = [bench(args, a, w) for a, w in zip(archs, widths)]
    print(
        f"ratio curve/ordinary (limit ~1.0, goal <= 1.3): {', '.join(f'{r:.3f}' for r in ratios)}"
    )


if __name__ == "__main__":
    main()
