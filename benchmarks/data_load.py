"""Loading a real dataset: the first load (decode), the cached load, and memory per process.

Run: .venv/bin/python benchmarks/data_load.py PATH
(PATH: CIFAR-10 as cifar-10-python.tar.gz, its folder, or an image-folder tree or archive,
such as the JPEG copy at ../shared/data/cifar10-jpeg.tar.gz on the development machines.)

Prints the time of the first load into an empty cache and of a cached load, the resident
memory a loaded process adds, and what a second process loading the same cache adds while the
first is alive: its private memory stays small because the memory-mapped pages are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def child(path: str) -> None:
    """Load the dataset, touch every byte, report memory, and wait until told to exit."""
    import numpy as np

    from objectives.config import DataConfig
    from objectives.data import load_dataset

    process = psutil.Process()
    before = process.memory_full_info()
    started = time.perf_counter()
    dataset = load_dataset(DataConfig(dataset="cifar10", path=path), 0)
    seconds = time.perf_counter() - started
    total = sum(int(np.asarray(a, dtype=np.uint64).sum() % 7) for a in
                (dataset.x_train, dataset.x_val, dataset.x_test))  # reads every page
    after = process.memory_full_info()
    print(json.dumps({
        "seconds": seconds, "checksum": total,
        "rss_added_mb": (after.rss - before.rss) / 2**20,
        "uss_added_mb": (after.uss - before.uss) / 2**20,
        "arrays_mb": sum(a.nbytes for a in (dataset.x_train, dataset.x_val, dataset.x_test))
        / 2**20,
    }), flush=True)
    sys.stdin.readline()


def spawn(path: str, cache: str) -> tuple[subprocess.Popen[str], dict[str, float]]:
    env = {**os.environ, "HPSEARCH_CACHE": cache, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, __file__, "--child", path], env=env, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout is not None
    return process, json.loads(process.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.path)
        return
    with tempfile.TemporaryDirectory() as cache:
        first, cold = spawn(args.path, cache)
        first.communicate("\n")
        one, warm = spawn(args.path, cache)
        two, second = spawn(args.path, cache)
        for process in (one, two):
            process.communicate("\n")
    print(f"source: {args.path}")
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}")
    print(f"arrays (train + validation + test, uint8): {cold['arrays_mb']:.0f} MB")
    print(f"first load (decode into an empty cache): {cold['seconds']:.2f} s")
    print(f"cached load (memory-mapped):             {warm['seconds']:.3f} s")
    print(f"one loaded process:  +{warm['rss_added_mb']:.0f} MB resident, of which "
          f"+{warm['uss_added_mb']:.0f} MB private")
    print(f"a second process on the same cache: +{second['rss_added_mb']:.0f} MB resident, of "
          f"which +{second['uss_added_mb']:.0f} MB private (the rest are shared pages)")


if __name__ == "__main__":
    main()
