"""Small shared pieces: the bad-input error, device choice, eps parsing, atomic files."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads where a device or generator is made, not on import
    import torch


# A run or model of seed k is named `<name>-s<k>`, the seed part possibly followed by more:
# `e01-s2`, `e01-s2-top2` (recipes, their groups, the plots and the verdicts all read it).
SEED_SUFFIX = re.compile(r"-s(\d+)(?=-|$)")


class BadInput(ValueError):
    """A user-facing input problem. The CLI prints it as one `Error: ...` line and exits 2.

    Library code names the argument at fault with `argument=` and writes `{arg}` where the
    message names it: `str(exc)` says the argument (`top 25 must be ...`), and the CLI
    renders its own flag there instead (`--top 25 must be ...`, `BadInput.render`).
    Another argument the message mentions is written `{arg:name}` (`{arg} adv needs
    {arg:eps} > 0`): the argument's name in `str(exc)`, its flag on the command line.
    """

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        self.template, self.argument = message, argument
        super().__init__(self.render(argument))

    @property
    def mentions(self) -> tuple[str, ...]:
        """The other arguments the message names (`{arg:name}`)."""
        return tuple(_OTHER_ARGUMENT.findall(self.template))

    def render(self, name: str | None, others: Callable[[str], str] | None = None) -> str:
        """The message with `{arg}` replaced by `name` (the argument, or a CLI flag) and each
        `{arg:other}` by `others(other)` (default: the argument's own name)."""
        say = others or (lambda other: other)
        text = _OTHER_ARGUMENT.sub(lambda m: say(m.group(1)), self.template)
        return text.replace("{arg}", name or self.argument or "")


_OTHER_ARGUMENT = re.compile(r"\{arg:(\w+)\}")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; `cuda[:N]` must exist."""
    import torch

    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise BadInput(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"device {device!r} asked for, but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BadInput(f"device {device!r} does not exist ({torch.cuda.device_count()} GPUs)")
    elif dev.type not in ("cpu", "mps"):
        raise BadInput(f"unsupported device {device!r}; use auto, cpu or cuda[:N]")
    return dev


def parse_eps(text: str | float | int) -> float:
    """Parse an attack budget given as `8/255`, `0.031` or `0`; finite and >= 0."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        raw = str(text).strip()
        try:
            if "/" in raw:
                num, den = raw.split("/", 1)
                if float(den) == 0:
                    raise BadInput(f"eps {raw!r} divides by zero")
                value = float(Fraction(num.strip()) / Fraction(den.strip()))
            else:
                value = float(raw)
        except (ValueError, ZeroDivisionError) as exc:
            if isinstance(exc, BadInput):
                raise
            raise BadInput(f"eps {raw!r} is not a number; write it as 8/255, 0.031 or 0") from exc
    if not math.isfinite(value) or value < 0:
        raise BadInput(f"eps {text!r} must be a finite number >= 0")
    return value


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on `device`, so random draws happen where the tensors live."""
    import torch

    return torch.Generator(device=device).manual_seed(int(seed))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    On any exception the temporary file is removed and `path` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
        with contextlib.suppress(OSError):
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An advisory lock on the folder of `path`, so read-modify-replace cycles do not race.

    Locking the folder rather than a `.lock` file leaves nothing behind.
    """
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def tune_cpu_allocator() -> bool:
    """Stop glibc malloc from returning freed tensor memory to the OS after every call.

    By default large blocks are mmapped and the heap top is trimmed, so each batched
    forward of a small model faults its activations in afresh: on digits LeNet surfaces
    that cost more than the arithmetic (1,691 vs 655 points/s). The `landscape` command
    and the benchmarks call this once; it raises the mmap threshold to glibc's 32 MiB
    maximum and the trim threshold to 1 GiB. False where the C library is not glibc.
    """
    trim_threshold, mmap_threshold = -1, -3  # mallopt parameter numbers in malloc.h
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(trim_threshold, 1 << 30) and libc.mallopt(mmap_threshold, 32 << 20)
        )
    except (OSError, AttributeError):
        return False
