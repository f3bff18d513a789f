"""A stop request (SIGTERM, Ctrl-C) that never lands inside TensorFlow.

A signal handler that raises ``KeyboardInterrupt`` raises it wherever the main thread happens to
be. Inside TensorFlow that can be Python code that TensorFlow's C++ called back (a destructor, a
conversion, a traced function): there the exception is dropped or, worse, leaves TensorFlow
half-way through something it then trips over. So while a trial's TensorFlow work runs (the
block under :func:`deferred`), the handler only leaves a flag, which training, evaluation and
prediction check after every step and epoch (``callbacks.StopOnRequest``) and the block checks
again when it ends: the exception is raised where Keras passes exceptions on, at most one step
later. Outside that block, and at a second request, the handler raises at once. Nothing here
imports TensorFlow: the handler stays cheap.

A worker defers the stop in the same way while Optuna keeps a trial's books (creating it,
starting and stopping its heartbeat thread, storing its result): an exception there could leave
the trial running in the storage, or Optuna's heartbeat thread beating on after the process
meant to end (it is not a daemon thread: the process then never exits). Only the trial's own
code (:func:`immediate`) is stopped at once again, as the objective records the stop on its
trial.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_requested = False
_deferring = 0
_signal = signal.SIGINT  # the first stop signal received; Ctrl-C unless told otherwise
failed_trials: list[int] = []  # the trials this process failed because of the stop


def request(signum: int = signal.SIGINT) -> bool:
    """Note that the user asked this process to stop (with signal ``signum``).

    True when the stop is left to the running TensorFlow work, which ends at its next step;
    False when the caller should raise ``KeyboardInterrupt`` itself: no such work is running,
    or the user asks a second time.
    """
    global _requested, _signal
    again = _requested
    if not again:
        _signal = signal.Signals(signum)
    _requested = True
    return _deferring > 0 and not again


def reason() -> str:
    """What stopped this process, as a trial's ``fail_reason`` says it."""
    return "interrupted by SIGTERM" if _signal == signal.SIGTERM else "interrupted by Ctrl-C"


def exit_code() -> int:
    """The exit status of a process a stop signal ended: 128 + the signal (130, 143)."""
    return 128 + int(_signal)


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a stop was requested."""
    if _requested:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Run a block of work that a stop request must not interrupt mid-way (TensorFlow's, or
    Optuna's bookkeeping of a trial): inside, a request only leaves the flag; a block that ends
    normally checks it."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    check()


@contextlib.contextmanager
def immediate() -> Iterator[None]:
    """Run a block, inside a :func:`deferred` one, where a stop request raises at once again,
    as it does outside every deferred block. A request that came before the block is not raised
    as it begins: the block's own checks raise it (a trial's next training step), or the
    deferred block around it when that ends."""
    global _deferring
    outer, _deferring = _deferring, 0
    try:
        yield
    finally:
        _deferring = outer


def on_signal(signum: int, frame: Any) -> None:
    """A stop signal's handler: while TensorFlow works, a request it sees at its next step;
    else, or at a second signal, ``KeyboardInterrupt`` at once."""
    if not request(signum):
        raise KeyboardInterrupt


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """A block run from Python (a notebook's cell, ``hpsearch.Study.run``) that Ctrl-C (a
    notebook's stop button) stops as it stops the command line: at the running TensorFlow
    work's next step. Starts with no stop requested (an earlier block's request is spent), and
    puts the previous handler back after; where Ctrl-C is not Python's default (ignored, or
    handled by the caller), or off the main thread, the handler is left as it is."""
    global _requested, _signal
    _requested, _signal = False, signal.SIGINT
    failed_trials.clear()
    previous = signal.getsignal(signal.SIGINT)
    install = (previous is signal.default_int_handler
               and threading.current_thread() is threading.main_thread())
    if install:
        signal.signal(signal.SIGINT, on_signal)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, previous)
