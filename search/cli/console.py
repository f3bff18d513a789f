"""The command line's console: logging, the tables' output, one-line errors, and what a stop
signal does."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from search.errors import UserError

# What an interrupted command tells the user, after "interrupted" (set by the command).
ON_INTERRUPT = "on_interrupt"
STARTED = "started"  # time.monotonic() when the command started


def what_the_stop_did() -> str:
    from objectives import interrupts

    failed = interrupts.failed_trials
    return (f"trial {', '.join(map(str, failed))} marked failed" if failed
            else "no trial was running")


def resumable() -> str:
    """What a stopped run or worker did, and what to do next."""
    return f": {what_the_stop_did()}; run the same command to resume the study"


def worker_of_run() -> str:
    """What one of ``run --workers``'s workers did; the run itself says what to do next."""
    return f" (worker {os.getpid()}): {what_the_stop_did()}"


WORKERS_STOPPED = ": every worker stopped; run the same command to resume the study"

class HpsearchGroup(click.Group):
    """Turns user errors into one-line messages and Ctrl-C into a clean exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            from objectives import interrupts

            told = (ctx.obj or {}).get(ON_INTERRUPT, "")
            click.echo(f"interrupted{told() if callable(told) else told}", err=True)
            ctx.exit(interrupts.exit_code())
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.ClickException(
                f"internal error: {type(exc).__name__}: {exc} (run with --debug for the "
                "traceback)"
            ) from None


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def setup_logging(verbose: bool) -> None:
    """Our own lines at INFO; Optuna's (which repeat ours) and TensorFlow's only when verbose."""
    import os

    import optuna
    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(stderr=True)
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, show_level=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("search", "objectives"):
        named = logging.getLogger(name)
        named.handlers[:] = [handler]
        named.setLevel(logging.DEBUG if verbose else logging.INFO)
        named.propagate = False
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.ERROR)
    # TensorFlow's Python warnings (retracing, one model per trial) are not the user's concern.
    # A filter, not only a level: in an interactive Python (a notebook's kernel) TensorFlow sets
    # its logger's level to INFO when it is imported, after this.
    tensorflow = logging.getLogger("tensorflow")
    tensorflow.setLevel(logging.NOTSET if verbose else logging.ERROR)
    tensorflow.removeFilter(_errors_only)
    if not verbose:
        tensorflow.addFilter(_errors_only)
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")


def stdout() -> Any:
    from rich.console import Console

    # A pipe gets full-width lines rather than rich's 80 columns.
    console = Console()
    return console if console.is_terminal else Console(width=10_000, soft_wrap=True)


def on_stop_signals(told: str | Callable[[], str]) -> None:
    """SIGTERM, and Ctrl-C unless ignored, stop the command like Ctrl-C (:func:`interrupt`);
    ``told`` follows "interrupted"."""
    click.get_current_context().obj[ON_INTERRUPT] = told
    signal.signal(signal.SIGTERM, interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not if ignored (nohup)
        signal.signal(signal.SIGINT, interrupt)


def interrupt(signum: int, frame: Any) -> None:
    """A stop signal: ``KeyboardInterrupt``, which the command turns into exit 128 + the signal
    (130 for Ctrl-C, 143 for SIGTERM; a run's running trial is failed first, the study stays
    resumable). While TensorFlow works, it stops at its next step rather than here
    (``objectives.interrupts.on_signal``); a second signal stops at once."""
    from objectives import interrupts

    interrupts.on_signal(signum, frame)
