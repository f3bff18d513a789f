"""Shared by the benchmarks: the machine they ran on, and their section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import shlex
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Each section below is written by the benchmark script it names, with the command that produced
it and the machine it ran on. Run a script again to replace its section.

The coordination overhead of many workers on one study (PostgreSQL and SQLite, 1 to 8
workers) is measured by [`benchmarks/coordination.py`](../benchmarks/coordination.py), the
distributed-workers benchmark, which writes its own section here.
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = [f"Python {platform.python_version()}"]
    for name in ("tensorflow", "keras", "optuna", "numpy"):
        try:
            module = __import__(name)
            versions.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.machine()}; " + ", ".join(versions)


def command() -> str:
    python = Path(sys.executable)
    try:
        shown = str(python.relative_to(DOCS.parent.parent))  # .venv/bin/python, .venv-bench/...
    except ValueError:
        shown = "python"
    return " ".join(shlex.quote(arg) for arg in [shown, *sys.argv])


def write_section(name: str, body: str) -> Path:
    """Replace (or add) the section of ``name`` in docs/benchmarks.md."""
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else \
        text.rstrip() + "\n\n" + section + "\n"
    DOCS.write_text(text, encoding="utf-8")
    return DOCS
