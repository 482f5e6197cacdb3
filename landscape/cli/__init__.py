"""The `landscape` command: parsing, errors, progress and summaries; no science here.

One module per family of commands; importing them registers their commands on `cli`.
Importing this package loads click and nothing heavy (no torch, numpy, rich or analyses):
each command imports what it needs when it runs, so help and usage errors answer at once.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Sequence

import click

from ..util import BadInput
from . import connect, grids, hessian, results, training  # noqa: F401  (registers the commands)
from .common import cli

__all__ = ["cli", "flag_for", "main"]

# Library arguments whose command-line option has another name, per command: the library
# names its arguments (`BadInput(argument=...)`); `flag_for` finds the option of the same
# name, or whose flag spells the argument (`eps` -> `--eps`), or the one named here.
ARGUMENT_OPTIONS: dict[str, dict[str, str]] = {
    "surface": {"kind": "dirs"},  # directions.load_directions(kind)
    "smoothness": {
        "directions": "dirs",
        "rule": "l2_match",
        "match": "l2_match",
        "radius": "radii",
    },
}


def _command(args: Sequence[str]) -> click.Command | None:
    """The command `args` run: the first word that is not an option (the group takes none)."""
    name = next((a for a in args if not a.startswith("-")), None)
    return cli.commands.get(name) if name else None


def flag_for(command: click.Command | None, argument: str) -> str:
    """How `command` spells a library argument: its option's long flag, else the name itself."""
    if command is None:
        return argument
    name = ARGUMENT_OPTIONS.get(command.name or "", {}).get(argument, argument)
    spelled = "--" + name.replace("_", "-")
    param = next((p for p in command.params if p.name == name), None) or next(
        (p for p in command.params if isinstance(p, click.Option) and spelled in p.opts), None
    )
    if isinstance(param, click.Option):
        return next((o for o in param.opts if o.startswith("--")), param.opts[0])
    return argument if param is None else param.human_readable_name


def error_message(exc: BadInput, args: Sequence[str]) -> str:
    """A library error in the words of the command line: each argument it names as the flag."""
    if exc.argument is None and not exc.mentions:
        return str(exc)
    flag = functools.partial(flag_for, _command(args))
    return exc.render(flag(exc.argument) if exc.argument else None, flag)


def main(argv: list[str] | None = None) -> None:
    """Entry point: exit 0 on success, 2 on bad input, 1 on internal errors."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    foreign = sys.modules.get("landscape.foreign")
    if foreign is not None:  # user code named by an earlier command in this process is not named
        foreign.forget_factories()
    try:
        cli.main(args=args, prog_name="landscape", standalone_mode=False)
        # Only a command that ran has loaded `distributed` (and, under torchrun, a process group).
        distributed = sys.modules.get("landscape.distributed")
        if distributed is not None:
            distributed.shutdown(wait=True)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Error: aborted", err=True)
        sys.exit(1)
    except click.UsageError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(2)
    except BadInput as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"Error: {error_message(exc, args)}", err=True)
        sys.exit(2)
    except Exception as exc:
        from ..train import Diverged

        if debug:
            traceback.print_exc()
        if isinstance(exc, Diverged):
            click.echo(f"Error: {exc}", err=True)
        else:
            click.echo(
                f"Error: internal error {exc.__class__.__name__}: {exc} (rerun with --debug for the traceback)",
                err=True,
            )
        sys.exit(1)
    sys.exit(0)
