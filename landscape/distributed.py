"""torch.distributed under `torchrun`: one process per device, rank 0 writes.

Everything here is a no-op in a single process, so analyses call it unconditionally.
`init` starts the process group when `torchrun` set `WORLD_SIZE` > 1 (NCCL on CUDA,
gloo on a CPU). `run_queue` deals tasks (grid blocks, curve points) from a shared work
queue: a counter in the process group's key-value store, so a fast rank takes more
tasks. Results travel back to rank 0 through the same store as JSON (never pickle),
and rank 0 records them as they arrive, so its resumable sidecar keeps up with every rank.
"""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .util import BadInput, resolve_device

Task = TypeVar("Task")
T = TypeVar("T")
_queues = 0  # queues created so far; equal on every rank, so keys never collide


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's place in the job (rank 0 of 1 without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def launched() -> bool:
    """True when started by `torchrun` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str | torch.device | None = "auto") -> torch.device:
    """Join the `torchrun` process group if there is one; return this rank's device.

    On CUDA each rank takes the GPU of its local rank (`cuda:LOCAL_RANK`).
    """
    dev = resolve_device(device)
    if not launched():
        return dev
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise BadInput(
                f"local rank {local} has no GPU ({torch.cuda.device_count()} visible); "
                "start at most one process per GPU"
            )
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
        atexit.register(shutdown)  # also on sys.exit after an error, without a warning line
    return dev


def shutdown(wait: bool = False) -> None:
    """Leave the process group; `wait` first meets every rank (the end of a successful run),
    so no rank tears its connections down while another still uses them."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if world().distributed:
        dist.barrier()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum `t` over ranks in place (identity in one process)."""
    if world().distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast(t: Tensor, src: int = 0) -> Tensor:
    """Rank `src`'s values of `t` on every rank, in place."""
    if world().distributed:
        dist.broadcast(t, src)
    return t


def broadcast_json(value: Any, src: int = 0) -> Any:
    """A small JSON-serialisable value from rank `src` on every rank (no pickle)."""
    if not world().distributed:
        return value
    store = dist.distributed_c10d._get_default_store()
    key = f"landscape/bcast/{_next_queue_id()}"
    if world().rank == src:
        store.set(key, json.dumps(value))
    out = json.loads(store.get(key))
    dist.barrier()
    if world().rank == src:
        store.delete_key(key)
    return out


def shard(n: int) -> range:
    """The indices of n items (batches, examples) that this rank handles."""
    w = world()
    return range(w.rank, n, w.size)


def share(n: int) -> slice:
    """This rank's contiguous share of n items (a global mini-batch): sizes differ by at most 1."""
    w = world()
    return slice(w.rank * n // w.size, (w.rank + 1) * n // w.size)


def on_main(fn: Callable[[], T]) -> T:
    """`fn()` run on rank 0 only (file checks, the results file); its JSON result on every rank.

    A BadInput on rank 0 is raised on every rank, so every rank exits with code 2 and
    none waits for the others; any other error on rank 0 stops the others too.
    """
    if not world().distributed:
        return fn()
    payload: dict[str, Any] = {}
    failure: BaseException | None = None
    if world().is_main:
        try:
            payload = {"ok": fn()}
        except BadInput as exc:
            payload, failure = {"bad": str(exc)}, exc
        except Exception as exc:
            payload, failure = {"failed": f"{exc.__class__.__name__} on rank 0"}, exc
    payload = broadcast_json(payload)
    if failure is not None:
        raise failure
    if "bad" in payload:
        raise BadInput(payload["bad"])
    if "failed" in payload:
        raise RuntimeError(payload["failed"])
    return payload["ok"]


def sync_done(done: Any) -> None:
    """Overwrite a grid's `done` mask (a numpy bool array) with rank 0's, in place.

    Rank 0 holds the resumable sidecar; the other ranks' grids are in memory. Flat
    indices travel as JSON.
    """
    if not world().distributed:
        return
    flat = broadcast_json([int(i) for i in done.reshape(-1).nonzero()[0]])
    done.reshape(-1)[:] = False
    done.reshape(-1)[flat] = True


def all_reduce_grads(tensors: Sequence[Tensor | None]) -> None:
    """Sum gradients over ranks in place, in one flat buffer (one collective per step)."""
    present = [t for t in tensors if t is not None]
    if not world().distributed or not present:
        return
    flat = torch.cat([t.reshape(-1) for t in present])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in present:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def sync_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, as DDP keeps them."""
    if world().distributed:
        for buf in module.buffers():
            dist.broadcast(buf, 0)


def _next_queue_id() -> int:
    global _queues
    _queues += 1
    return _queues


def run_queue(
    tasks: Sequence[Task],
    work: Callable[[Task], Any],
    record: Callable[[Task, Any], None],
) -> None:
    """Run `work` once per task on some rank; call `record(task, result)` on rank 0 only.

    `tasks` must be the same list on every rank. Results must be JSON-serialisable
    (floats, lists, dicts); NaN survives. In one process this is a plain loop.
    """
    w = world()
    if not w.distributed:
        for task in tasks:
            record(task, work(task))
        return
    store = dist.PrefixStore(
        f"landscape/queue/{_next_queue_id()}/", dist.distributed_c10d._get_default_store()
    )
    received = 0

    def drain(block: bool) -> None:
        nonlocal received
        available = len(tasks) if block else store.add("finished", 0)
        while received < available:
            index = int(store.get(f"order/{received}"))
            record(tasks[index], json.loads(store.get(f"result/{index}")))
            store.delete_key(f"result/{index}")
            store.delete_key(f"order/{received}")
            received += 1

    while (index := store.add("next", 1) - 1) < len(tasks):
        result = json.dumps(work(tasks[index]))
        store.set(f"result/{index}", result)
        slot = store.add("finished", 1) - 1
        store.set(f"order/{slot}", str(index))
        if w.is_main:
            drain(block=False)
    if w.is_main:
        drain(block=True)
    dist.barrier()
