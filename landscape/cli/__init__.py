"""The `landscape` command: parsing, errors, progress and summaries; no science here.

One module per family of commands; importing them registers their commands on `cli`.
"""

from __future__ import annotations

import sys
import traceback

import click

from .. import distributed
from ..foreign import forget_factories
from ..util import BadInput, tune_cpu_allocator
from . import connect, grids, hessian, results, training  # noqa: F401  (registers the commands)
from .common import cli

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: exit 0 on success, 2 on bad input, 1 on internal errors."""
    args = sys.argv[1:] if argv is None else argv
    tune_cpu_allocator()
    debug = "--debug" in args
    forget_factories()  # user code named by an earlier command in this process is not named
    try:
        cli.main(args=args, prog_name="landscape", standalone_mode=False)
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
        click.echo(f"Error: {exc}", err=True)
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
