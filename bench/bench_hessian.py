"""Top-20 Hessian eigenvalues: this project against curvlinops, hessian-eigenthings and PyHessian.

Every tool runs in this process on the same model, the same fixed examples and the same
batches, and is checked against the dense float64 Hessian of the same mean loss
(built column by column from this project's products, which the tests check against
`torch.func.hessian`). Two models:

- digits LeNet w=1 (1,994 parameters), adversarially trained here at eps 0.1 for
  `--epochs` (or `--lenet CHECKPOINT`), on the 1,440 training images attacked once at
  theta (PGD, seed 0), in batches of 240;
- digits ResNet-18 w=1 (44,550 parameters), trained here without attack for
  `--resnet-epochs` (or `--resnet CHECKPOINT`), on the first 240 clean training images
  in batches of 120; the Hessian is that of the stem, the first stage and the
  classifier (982 parameters), so the dense check stays affordable while every product
  still differentiates through all 18 layers.

The tools, as their users call them:

- landscape: `HessianOperator(..., cache=True)` and `top_eigenpairs(op, 20, "block")`
  (block Lanczos on the device, true residuals <= 1e-3 |lambda|); its ARPACK Lanczos
  (`"lanczos"`, uncached) as a second row;
- curvlinops: `HessianLinearOperator(model, CrossEntropyLoss(), params, batches,
  check_deterministic=False, num_data=N).to_scipy()` and `scipy.sparse.linalg.eigsh(k=20,
  which="LA")` (its determinism check, extra passes over the data, is left out);
- hessian-eigenthings: `HessianOperator(model, batches, supervised_loss(cross_entropy),
  param_filter=...)` and `lanczos(op, k=20, max_iter=100, which="LA",
  reorthogonalize=True, seed=0)`;
- PyHessian: `hessian(model, CrossEntropyLoss(), dataloader=batches).eigenvalues(top_n=20)`
  (power iteration, tol 1e-3, 100 iterations per eigenvalue).

Printed per model: the per-vector cost of this project's Hessian products
(forward-over-reverse vs reverse-over-reverse, single and in a block, uncached and
cached), then one row per tool: wall time (median of `--repeats`), products, the worst
relative error of the top 20 against the dense eigenvalues, peak working memory, and
curvlinops' time divided by the tool's. Memory: on CUDA, `torch.cuda.max_memory_allocated`
minus the allocation before; on CPU (Linux, glibc), the peak of malloc's in-use bytes
(mallinfo2) sampled every millisecond by a thread during an untimed run, minus the
count before it (tracemalloc does not see torch's allocator, and ru_maxrss is a high-water mark
of the whole process). A peer that is not installed is reported and skipped.

    python bench/bench_hessian.py                      # both models, CPU, ~15 minutes
    python bench/bench_hessian.py --models lenet --lenet run/final.pt --repeats 3
    python bench/bench_hessian.py --device cuda

On a CPU shared with other work, `--threads 1` avoids oversubscription: with 2 threads
on 2 loaded cores a single product through the ResNet took 10 s instead of 0.24 s.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import importlib.util
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse.linalg
import torch
import torch.nn.functional as F

from landscape.attacks import pgd
from landscape.checkpoint import load_checkpoint
from landscape.curvature import HessianOperator, top_eigenpairs
from landscape.data import load_dataset
from landscape.train import TrainConfig, train
from landscape.util import resolve_device, tune_cpu_allocator

PEERS = {
    "curvlinops": "curvlinops",
    "hessian-eigenthings": "hessian_eigenthings",
    "pyhessian": "pyhessian",
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Case:
    """One model with its fixed examples, batches and the Hessian's parameter subset."""

    title: str
    model: torch.nn.Module
    X: torch.Tensor
    y: torch.Tensor
    names: list[str]
    batch_size: int

    @property
    def batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        b = self.batch_size
        return [(self.X[i : i + b], self.y[i : i + b]) for i in range(0, len(self.X), b)]

    @property
    def params(self) -> list[torch.nn.Parameter]:
        named = dict(self.model.named_parameters())
        return [named[n] for n in self.names]


@dataclass
class Run:
    values: np.ndarray
    products: int
    seconds: float
    mib: float = float("nan")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]  # fmt: skip


class PeakMemory:
    """Peak working memory of the block in MiB: CUDA's allocator peak, or on the CPU glibc's
    in-use bytes (heap plus mmapped blocks, where torch's CPU tensors live) sampled every ms."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
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
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
            return
        self.running = False
        self.thread.join()
        self.mib = (max(self.peak, self.read()) - self.base) / 2**20


# ------------------------------------------------------------------------------- tools


def ours(case: Case, k: int, method: str) -> tuple[np.ndarray, int]:
    cache = method == "block"
    op = HessianOperator(
        case.model, case.X, case.y, params=case.names, batch_size=case.batch_size, cache=cache
    )
    pairs = top_eigenpairs(op, k, method)
    return pairs.eigenvalues, pairs.n_hvp


def counted(linear: scipy.sparse.linalg.LinearOperator, count: list[int]):
    """The same scipy operator, counting the vectors it is applied to."""

    def matmat(X: np.ndarray) -> np.ndarray:
        count[0] += X.shape[1] if X.ndim == 2 else 1
        return linear.matmat(X) if X.ndim == 2 else linear.matvec(X)

    return scipy.sparse.linalg.LinearOperator(
        linear.shape, matvec=matmat, matmat=matmat, dtype=np.float64
    )


def curvlinops(case: Case, k: int) -> tuple[np.ndarray, int]:
    from curvlinops import HessianLinearOperator

    H = HessianLinearOperator(
        case.model,
        torch.nn.CrossEntropyLoss(),
        case.params,
        case.batches,
        check_deterministic=False,
        num_data=len(case.X),
    )
    count = [0]
    v0 = np.random.default_rng(0).standard_normal(H.shape[0])
    values = scipy.sparse.linalg.eigsh(
        counted(H.to_scipy(), count), k=k, which="LA", v0=v0, return_eigenvectors=False
    )
    return np.sort(values)[::-1], count[0]


def eigenthings(case: Case, k: int) -> tuple[np.ndarray, int]:
    from hessian_eigenthings import HessianOperator as Operator
    from hessian_eigenthings import lanczos, supervised_loss

    subset = set(case.names)
    op = Operator(
        case.model,
        case.batches,
        supervised_loss(F.cross_entropy),
        param_filter=lambda name, _: name in subset,
    )
    count = [0]
    product = op.matvec

    def matvec(v: torch.Tensor) -> torch.Tensor:
        count[0] += 1
        return product(v)

    op.matvec = matvec
    result = lanczos(op, k=k, max_iter=100, which="LA", reorthogonalize=True, seed=0)
    return np.sort(result.eigenvalues.double().cpu().numpy())[::-1], count[0]


def pyhessian(case: Case, k: int) -> tuple[np.ndarray, int]:
    from pyhessian import hessian as PyHessian

    subset = set(case.names)
    flags = {n: p.requires_grad for n, p in case.model.named_parameters()}
    count = [0]
    torch.manual_seed(0)
    # PyHessian's backward(create_graph=True) warns of the .grad cycle cleared below.
    warnings.filterwarnings("ignore", message="Using backward")
    try:
        for n, p in case.model.named_parameters():
            p.requires_grad_(n in subset)  # PyHessian differentiates what requires grad
        solver = PyHessian(
            case.model,
            torch.nn.CrossEntropyLoss(),
            dataloader=case.batches,
            cuda=case.X.device.type == "cuda",
        )
        product = solver.dataloader_hv_product

        def counted_pass(v):
            count[0] += 1
            return product(v)

        solver.dataloader_hv_product = counted_pass
        values, _ = solver.eigenvalues(top_n=k)
    finally:
        for n, p in case.model.named_parameters():
            p.requires_grad_(flags[n])
            p.grad = None  # PyHessian leaves graphs in .grad
    return np.sort(np.asarray(values, dtype=np.float64))[::-1], count[0]


TOOLS: dict[str, tuple[str | None, Callable[[Case, int], tuple[np.ndarray, int]]]] = {
    "landscape block (cached)": (None, lambda c, k: ours(c, k, "block")),
    "landscape lanczos (ARPACK)": (None, lambda c, k: ours(c, k, "lanczos")),
    "curvlinops + eigsh": ("curvlinops", curvlinops),
    "hessian-eigenthings lanczos": ("hessian-eigenthings", eigenthings),
    "PyHessian power": ("pyhessian", pyhessian),
}


def timed(case: Case, k: int, tool: Callable, repeats: int) -> Run:
    """One run for peak memory (its sampling thread would slow a timed run), then
    `repeats` timed runs; the median time."""
    device = case.X.device
    with PeakMemory(device) as memory:
        tool(case, k)
    seconds = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        values, products = tool(case, k)
        sync(device)
        seconds.append(time.perf_counter() - start)
    return Run(values, products, statistics.median(seconds), memory.mib)


# ------------------------------------------------------------------------ measurements


def dense_spectrum(case: Case) -> np.ndarray:
    """Eigenvalues (descending) of the float64 Hessian built from products with the unit vectors."""
    model = copy.deepcopy(case.model).double()
    op = HessianOperator(
        model,
        case.X.double(),
        case.y,
        params=case.names,
        batch_size=case.batch_size,
        block=64,
        cache=True,
    )
    H = op.matmat(torch.eye(op.dim, dtype=torch.float64, device=case.X.device))
    return torch.linalg.eigvalsh((H + H.T) / 2).flip(0).cpu().numpy()


def product_costs(case: Case, block: int) -> None:
    """Seconds per vector of the Hessian products over all batches, by variant."""
    device = case.X.device
    dim = sum(p.numel() for p in case.params)
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(dim, block, generator=gen).to(device)
    rows = []
    for product in ("forward", "reverse"):
        for cache in (False, True):
            if product == "forward" and cache:
                continue  # forward mode reruns its primal pass: nothing to keep
            op = HessianOperator(
                case.model,
                case.X,
                case.y,
                params=case.names,
                batch_size=case.batch_size,
                product=product,
                cache=cache,
            )
            op.matmat(V[:, :2])  # warm-up (and the cache)
            cost = []
            for width in (1, block):
                sync(device)
                start = time.perf_counter()
                op.matmat(V[:, :width])
                sync(device)
                cost.append((time.perf_counter() - start) / width)
            label = f"{product}{' cached' if cache else ''}"
            rows.append(f"{label} {cost[0] * 1e3:.0f} / {cost[1] * 1e3:.0f}")
    print(f"ms per vector, single / block of {block}: " + ", ".join(rows))


def report(case: Case, args: argparse.Namespace) -> None:
    device = case.X.device
    dim = sum(p.numel() for p in case.params)
    total = sum(p.numel() for p in case.model.parameters())
    print(
        f"\n== {case.title}: Hessian over {dim} of {total} parameters, {len(case.X)} examples "
        f"in batches of {case.batch_size}, {device}, {torch.get_num_threads()} threads"
    )
    start = time.perf_counter()
    dense = dense_spectrum(case)
    top = dense[: args.top]
    print(
        f"dense float64 reference: {time.perf_counter() - start:.0f} s; lambda_1 {top[0]:.5g}, "
        f"lambda_{args.top} {top[-1]:.5g}, lambda_{args.top + 1} {dense[args.top]:.5g}, "
        f"lambda_min {dense[-1]:.5g}"
    )
    product_costs(case, 10)
    sys.stdout.flush()
    ours(Case(case.title, case.model, case.X[:8], case.y[:8], case.names, 8), 2, "block")
    runs: dict[str, Run] = {}
    for name, (peer, tool) in TOOLS.items():
        if peer is not None and peer not in args.peers:
            continue
        if peer is not None and importlib.util.find_spec(PEERS[peer]) is None:
            print(f"{name}: skipped, {peer} is not installed (see the README's Benchmarks)")
            continue
        runs[name] = timed(case, args.top, tool, args.repeats)
        print(f"  {name}: {runs[name].seconds:.1f} s", flush=True)
    reference = runs.get("curvlinops + eigsh")
    print(f"{'':28}{'wall s':>8}{'products':>10}{'worst rel. err':>16}{'peak MiB':>10}"
          f"{'curvlinops/this':>17}")  # fmt: skip
    for name, run in runs.items():
        err = np.max(np.abs(run.values[: args.top] - top) / np.abs(top))
        ratio = f"{reference.seconds / run.seconds:17.2f}" if reference else f"{'-':>17}"
        print(f"{name:28}{run.seconds:8.2f}{run.products:10d}{err:16.2e}{run.mib:10.1f}{ratio}")


def trained(arch: str, epochs: int, eps: float, device: torch.device, tmp: str) -> Path:
    start = time.perf_counter()
    config = TrainConfig(arch=arch, width=1, epochs=epochs, eps=eps)
    checkpoint = train(config, Path(tmp) / arch, device=device).final
    print(
        f"trained {arch} w=1 at eps {eps:g}, {epochs} epochs: {time.perf_counter() - start:.0f} s"
    )
    return checkpoint


def lenet_case(args: argparse.Namespace, device: torch.device, tmp: str) -> Case:
    path = Path(args.lenet) if args.lenet else trained("lenet", args.epochs, 0.1, device, tmp)
    model, _ = load_checkpoint(path, device)
    X, y = load_dataset("digits", "train", None, device)
    X = pgd(model, X, y, 0.1, seed=0, batch_size=240)
    names = [n for n, _ in model.named_parameters()]
    return Case("digits LeNet w=1, eps 0.1", model.eval(), X, y, names, 240)


def resnet_case(args: argparse.Namespace, device: torch.device, tmp: str) -> Case:
    path = (
        Path(args.resnet)
        if args.resnet
        else trained("resnet18", args.resnet_epochs, 0, device, tmp)
    )
    model, _ = load_checkpoint(path, device)
    X, y = load_dataset("digits", "train", None, device)
    prefixes = ("conv1.", "bn1.", "layer1.", "classifier.")
    names = [n for n, _ in model.named_parameters() if n.startswith(prefixes)]
    return Case("digits ResNet-18 w=1, clean", model.eval(), X[:240], y[:240], names, 120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--models", default="lenet,resnet", help="comma-separated: lenet, resnet")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated peers to run")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per tool (median)")
    parser.add_argument("--epochs", type=int, default=5, help="LeNet training epochs")
    parser.add_argument("--resnet-epochs", type=int, default=2, help="ResNet training epochs")
    parser.add_argument("--lenet", default=None, help="a LeNet w=1 digits checkpoint to use")
    parser.add_argument("--resnet", default=None, help="a ResNet-18 w=1 digits checkpoint to use")
    args = parser.parse_args()
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in args.peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {', '.join(PEERS)}")
    tune_cpu_allocator()  # as the landscape command does
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    builders = {"lenet": lenet_case, "resnet": resnet_case}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            if name not in builders:
                parser.error(f"unknown model {name!r}; choose from {', '.join(builders)}")
            report(builders[name](args, device, tmp), args)


if __name__ == "__main__":
    main()
