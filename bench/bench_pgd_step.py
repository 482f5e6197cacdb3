"""Time of one PGD-K adversarial training step against K+1 plain forward-backward passes.

The physical limit is 1.0 (K attack iterations plus the training pass, each a forward and
a backward); the goal is 1.1 or less. The attack asks autograd for the input gradient
only, so it skips the weight gradients and can beat that limit; the second ratio is
against the tighter reference of K input-gradient passes plus one full pass. Both sides
run on the same model, batch and device.

    python bench/bench_pgd_step.py                       # LeNet w=16 on MNIST-shaped data, CPU
    python bench/bench_pgd_step.py --arch resnet18 --width 8 --shape 3,32,32 --batch 128 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from landscape.checkpoint import build_from_spec
from landscape.train import StepContext, TrainConfig, UpdateRule, make_batch_loss
from landscape.util import make_generator, resolve_device, tune_cpu_allocator


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--arch", default="lenet")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--shape", default="1,28,28")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="K, the PGD iterations")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    tune_cpu_allocator()  # as the landscape command does

    device = resolve_device(args.device)
    shape = tuple(int(v) for v in args.shape.split(","))
    dataset = "digits" if shape[0] == 1 else "cifar10"
    spec = {
        "arch": args.arch,
        "width": args.width,
        "activation": "relu",
        "input_shape": list(shape),
        "num_classes": 10,
        "mean": [0.5] * shape[0],
        "std": [0.25] * shape[0],
    }
    torch.manual_seed(0)
    model = build_from_spec(spec, device).train()
    x = torch.rand(args.batch, *shape, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    eps = 0.1 if shape[0] == 1 else 8 / 255

    config = TrainConfig(
        dataset=dataset, arch=args.arch, eps=eps, pgd_steps=args.steps, optimizer="sgd", lr=1e-4
    )
    family = "mnist-like" if shape[0] == 1 else "cifar-like"
    rule = UpdateRule(model, config)
    ctx = StepContext(1e-4, eps, make_batch_loss(family, config, make_generator(0, device))(eps))

    def adversarial_step() -> None:
        rule.step(lambda: (x, y), ctx)

    def plain_passes() -> None:
        for _ in range(args.steps + 1):
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()

    def input_grad_passes() -> None:
        for _ in range(args.steps):
            xr = x.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    t_adv = timed(adversarial_step, device, args.repeats)
    t_ref = timed(plain_passes, device, args.repeats)
    t_tight = timed(input_grad_passes, device, args.repeats)
    print(
        f"device {device}  model {args.arch} w={args.width}  batch {args.batch}x{shape}  K={args.steps}"
    )
    print(f"PGD-{args.steps} training step        {t_adv * 1e3:9.2f} ms")
    print(f"{args.steps + 1} forward-backward passes  {t_ref * 1e3:9.2f} ms")
    print(f"K input-grad + 1 full passes  {t_tight * 1e3:9.2f} ms")
    print(f"ratio to K+1 full passes      {t_adv / t_ref:9.3f}   (limit 1.0, goal <= 1.1)")
    print(
        f"ratio to K input-grad + 1     {t_adv / t_tight:9.3f}   (the attack skips weight gradients)"
    )


if __name__ == "__main__":
    main()
