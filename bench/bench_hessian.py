"""Top-20 Hessian eigenvalues: this project's Lanczos against PyHessian, side by side.

Both run in this process on the same model and the same fixed adversarial examples
(PGD once at theta, seed 0): the 1440 digits training images in batches of 256, a
LeNet w=1 (1994 parameters) adversarially trained here for a few epochs (or
`--checkpoint`). The peer is called as its users call it:
`pyhessian.hessian(model, criterion, dataloader=batches).eigenvalues(top_n=20)`, its
Hessian-vector products counted at its per-dataloader product. The reference is the
dense float64 Hessian of the same loss. Printed: wall times and their ratio, both
product counts, each method's worst relative error over the top 20 (PyHessian's power
iteration targets the largest |lambda|, so its error against those is printed too),
and the eigensolve's peak working memory at two sample counts, which must not grow
with the samples (the products stream over fixed-size batches). Goal: >= 5x faster
and >= 100x more accurate than PyHessian.

Memory: on CUDA, `torch.cuda.max_memory_allocated` minus the allocation before the
solve; on CPU (Linux, glibc), the peak of malloc's in-use bytes (mallinfo2), sampled by
a thread during the solve, minus their count before it: tracemalloc does not see
torch's allocator, ru_maxrss is a high-water mark of the whole process (imports,
training) that a small eigensolve never raises, and the resident set keeps freed
arenas.

    python bench/bench_hessian.py                      # digits LeNet, CPU, ~2 minutes
    python bench/bench_hessian.py --device cuda
    python bench/bench_hessian.py --resnet --device cuda   # ResNet-18 w=8, 10000 CIFAR-shaped examples
"""

from __future__ import annotations

import argparse
import ctypes
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from landscape.attacks import attack_config, pgd
from landscape.checkpoint import build_from_spec, load_checkpoint, model_spec
from landscape.curvature import HessianOperator, top_eigenpairs
from landscape.data import load_dataset
from landscape.train import TrainConfig, train
from landscape.util import parse_eps, resolve_device, tune_cpu_allocator


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours(model, X, y, k: int, batch_size: int):
    device = X.device
    sync(device)
    start = time.perf_counter()
    pairs = top_eigenpairs(HessianOperator(model, X, y, batch_size=batch_size), k)
    sync(device)
    return pairs, time.perf_counter() - start


def peer(model, X, y, k: int, batch_size: int):
    from pyhessian import hessian as PyHessian

    batches = [(X[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(X), batch_size)]
    count = [0]
    device = X.device
    torch.manual_seed(0)
    # PyHessian's backward(create_graph=True) warns of the .grad cycle cleared below.
    warnings.filterwarnings("ignore", message="Using backward")
    sync(device)
    start = time.perf_counter()
    solver = PyHessian(
        model, torch.nn.CrossEntropyLoss(), dataloader=batches, cuda=device.type == "cuda"
    )
    product = solver.dataloader_hv_product

    def counted(v):
        count[0] += 1
        return product(v)

    solver.dataloader_hv_product = counted
    values, _ = solver.eigenvalues(top_n=k)
    sync(device)
    elapsed = time.perf_counter() - start
    for p in model.parameters():
        p.grad = None  # PyHessian leaves graphs in .grad
    return np.sort(np.asarray(values))[::-1], count[0], elapsed


def dense_spectrum(checkpoint: Path, X, y, batch_size: int) -> np.ndarray:
    """Eigenvalues (descending) of the float64 Hessian built column by column from products."""
    model, _ = load_checkpoint(checkpoint, X.device)
    op = HessianOperator(model.double(), X.double(), y, batch_size=batch_size, block=64)
    H = op.matmat(torch.eye(op.dim, dtype=torch.float64, device=X.device))
    return torch.linalg.eigvalsh((H + H.T) / 2).flip(0).cpu().numpy()


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]  # fmt: skip


class HeapSampler:
    """Peak of the bytes malloc has handed out (glibc mallinfo2: heap plus mmapped blocks),
    sampled by a thread every 0.2 ms while the block runs; torch's CPU tensors live there."""

    def __enter__(self) -> HeapSampler:
        self.libc = ctypes.CDLL("libc.so.6")
        self.libc.mallinfo2.restype = _Mallinfo2
        self.base = self.peak = self.read()
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def read(self) -> int:
        info = self.libc.mallinfo2()
        return info.uordblks + info.hblkhd

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.read())
            time.sleep(0.0002)

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()


def peak_memory(args, model, X, y, samples: int) -> tuple[float, str]:
    """Working memory of one eigensolve on the first `samples` examples, in MiB."""
    device = X.device
    X, y = X[:samples], y[:samples]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        ours(model, X, y, args.top, args.batch_size)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return peak, "CUDA max_memory_allocated minus the allocation before"
    with HeapSampler() as heap:
        ours(model, X, y, args.top, args.batch_size)
    return (heap.peak - heap.base) / 2**20, "glibc mallinfo2 in-use peak minus start, sampled"


def digits(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    eps = parse_eps(args.eps)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint) if args.checkpoint else None
        if checkpoint is None:
            start = time.perf_counter()
            config = TrainConfig(arch="lenet", width=1, epochs=args.epochs, eps=eps)
            checkpoint = train(config, tmp, device=device).final
            print(
                f"trained LeNet w=1 at eps {eps:g}, {args.epochs} epochs: {time.perf_counter() - start:.0f} s"
            )
        model, _ = load_checkpoint(checkpoint, device)
        X, y = load_dataset("digits", "train", None, device)
        X = pgd(model, X, y, eps, seed=0, batch_size=args.batch_size) if eps > 0 else X
        P = sum(p.numel() for p in model.parameters())
        print(
            f"{len(X)} examples (eps {eps:g}) in batches of {args.batch_size}, {P} parameters, {device}"
        )

        start = time.perf_counter()
        dense = dense_spectrum(checkpoint, X, y, args.batch_size)
        print(f"dense float64 reference: {time.perf_counter() - start:.0f} s")
        top = dense[: args.top]
        by_magnitude = np.sort(dense[np.argsort(-np.abs(dense))][: args.top])[::-1]

        ours(model, X[: args.batch_size], y[: args.batch_size], 2, args.batch_size)  # warm-up
        pairs, t_ours = ours(model, X, y, args.top, args.batch_size)
        values, n_peer, t_peer = peer(model, X, y, args.top, args.batch_size)
        err_ours = np.max(np.abs(pairs.eigenvalues - top) / np.abs(top))
        err_peer = np.max(np.abs(values - top) / np.abs(top))
        err_peer_mag = np.max(np.abs(values - by_magnitude) / np.abs(by_magnitude))
        print(f"\ntop {args.top}: dense lambda_1 {top[0]:.5g}, lambda_{args.top} {top[-1]:.5g}")
        print(f"{'':24}{'wall s':>9}{'HVPs':>7}{'worst rel. err':>16}")
        print(f"{'landscape (Lanczos)':24}{t_ours:9.2f}{pairs.n_hvp:7d}{err_ours:16.2e}")
        print(f"{'PyHessian (power)':24}{t_peer:9.2f}{n_peer:7d}{err_peer:16.2e}")
        print(f"{'  vs top-|lambda| 20':24}{'':16}{err_peer_mag:16.2e}")
        print(
            f"speed-up {t_peer / t_ours:.1f}x (goal >= 5x); HVPs {n_peer / pairs.n_hvp:.1f}x fewer"
        )
        print(f"accuracy {err_peer / err_ours:.0f}x better (goal >= 100x); against PyHessian's own "
              f"targets {err_peer_mag / err_ours:.0f}x")  # fmt: skip

        counts = sorted({min(args.small, len(X)), len(X)})
        for n in counts:
            mib, how = peak_memory(args, model, X, y, n)
            print(f"peak working memory, {n:5d} samples: {mib:8.1f} MiB  ({how})")


def resnet(args: argparse.Namespace) -> None:
    """ResNet-18 w=8 on N random CIFAR-shaped images attacked with PGD (eps 8/255, CIFAR defaults)."""
    device = resolve_device(args.device)
    n = args.samples or (10000 if device.type == "cuda" else 512)
    spec = model_spec("resnet18", "cifar10", width=8)
    torch.manual_seed(0)
    model = build_from_spec(spec, device).eval()
    gen = torch.Generator(device=device).manual_seed(0)
    X = torch.rand(n, 3, 32, 32, generator=gen, device=device)
    y = torch.randint(0, 10, (n,), generator=gen, device=device)
    cfg = attack_config(8 / 255, family="cifar-like")
    X = pgd(
        model, X, y, cfg.eps, cfg.norm, cfg.steps, cfg.step_size, seed=0, batch_size=args.batch_size
    )
    P = sum(p.numel() for p in model.parameters())
    print(f"ResNet-18 w=8: {P} parameters, {n} examples in batches of {args.batch_size}, {device}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    pairs, wall = ours(model, X, y, args.top, args.batch_size)
    print(
        f"top {args.top} by Lanczos: {wall:.1f} s, {pairs.n_hvp} HVPs, {wall / pairs.n_hvp:.3f} s per HVP"
    )
    print("eigenvalues:", np.array2string(pairs.eigenvalues, precision=4))
    print(f"worst residual / lambda_1: {pairs.residuals.max() / abs(pairs.eigenvalues[0]):.2e}")
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        print(f"peak working memory: {peak:.0f} MiB (CUDA max_memory_allocated)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eps", default="0.1", help="digits: training and Hessian eps")
    parser.add_argument("--epochs", type=int, default=5, help="digits: training epochs")
    parser.add_argument("--checkpoint", default=None, help="digits: a LeNet checkpoint to use")
    parser.add_argument("--small", type=int, default=360, help="digits: the smaller sample count")
    parser.add_argument("--resnet", action="store_true", help="ResNet-18 w=8 timing mode")
    parser.add_argument("--samples", type=int, default=None, help="resnet: N (10000 GPU, 512 CPU)")
    args = parser.parse_args()
    tune_cpu_allocator()  # as the landscape command does
    torch.set_num_threads(args.threads)
    if args.resnet:
        resnet(args)
    else:
        digits(args)


if __name__ == "__main__":
    main()
