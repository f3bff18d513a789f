"""A stop request (SIGTERM, Ctrl-C) that cannot be lost inside TensorFlow.

A signal handler that raises ``KeyboardInterrupt`` raises it wherever the main thread happens to
be; when that is inside TensorFlow's own C++ bindings the exception can be cleared there and
the run would carry on as if nothing had happened. So the handler also leaves a flag, and
training checks it after every step and every epoch (``callbacks.StopOnRequest``), raising
again where Keras passes it on. Nothing here imports TensorFlow: the handler stays cheap.
"""

from __future__ import annotations

_requested = False


def request() -> None:
    """Note that the user asked this process to stop."""
    global _requested
    _requested = True


def requested() -> bool:
    return _requested


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a stop was requested."""
    if _requested:
        raise KeyboardInterrupt
