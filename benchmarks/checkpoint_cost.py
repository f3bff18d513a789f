"""What checkpoints cost a trial: the deep reference MLP trained with a checkpoint after every
epoch beside the same training without, in alternating fresh processes, in one run.

Run: .venv/bin/python benchmarks/checkpoint_cost.py [--rounds 3] [--epochs 4]
         [--data-path ../shared/data/cifar10-jpeg.tar.gz] [--no-docs]

Both contenders are ``objectives.mlp.train`` with a study's default training settings (as every
trial runs), one with ``checkpoint_every = 0``, one with ``checkpoint_every = 1`` writing to a
real checkpoint folder (``search.artifacts.checkpoints.FolderCheckpoints``: written beside, renamed
into place) on this machine's disk. Printed: the median seconds per epoch of each (each run's
first epoch, which traces, not counted), the median seconds each checkpoint took to capture and
write (timed around the store's ``save``, plus the capture), the checkpoint's size, and the
cost as a share of an epoch (the target: at most 3 %). Random images by default (the speed does
not depend on them); ``--data-path`` uses CIFAR-10.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from train_throughput import PARAMS, _data, run_one  # noqa: E402  (the same MLP, data, runs)

CONTENDERS = ("checkpoints off", "checkpoints on")


def train_epochs(contender: str, epochs: int, path: str | None) -> dict[str, object]:
    from objectives import checkpoints
    from objectives.config import TrainingConfig
    from objectives.keras_setup import keras
    from objectives.mlp import train
    from search.artifacts.checkpoints import FolderCheckpoints

    data = _data(path)
    keras.utils.set_random_seed(0)
    every = 1 if contender == "checkpoints on" else 0
    training = TrainingConfig(max_epochs=epochs, early_stopping_patience=epochs,
                              reduce_lr_patience=epochs, checkpoint_every=every)
    saves: list[float] = []
    sizes: list[int] = []
    with tempfile.TemporaryDirectory(prefix="hpsearch-checkpoints-", dir=REPO) as folder:
        store = FolderCheckpoints(Path(folder))

        def save(data: bytes) -> None:
            started = time.perf_counter()
            store.save(0, data)
            saves[-1] += time.perf_counter() - started
            sizes.append(len(data))

        capture = checkpoints.Checkpointer.state

        def timed_state(self: checkpoints.Checkpointer, done: int) -> checkpoints.TrainingState:
            started = time.perf_counter()
            state = capture(self, done)
            saves.append(time.perf_counter() - started)
            return state

        checkpoints.Checkpointer.state = timed_state  # type: ignore[method-assign]
        to_bytes = checkpoints.TrainingState.to_bytes

        def timed_bytes(self: checkpoints.TrainingState) -> bytes:
            started = time.perf_counter()
            data = to_bytes(self)
            saves[-1] += time.perf_counter() - started
            return data

        checkpoints.TrainingState.to_bytes = timed_bytes  # type: ignore[method-assign]
        outcome = train(dict(PARAMS), data, training, "val_accuracy",  # type: ignore[arg-type]
                        save_checkpoint=save)
    return {"seconds": outcome.recorder.seconds, "saves": saves, "bytes": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run, the first "
                        "(tracing) not counted")
    parser.add_argument("--data-path")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(train_epochs(args.one, args.epochs, args.data_path)))
        return

    from _docs import command, machine, write_section

    print(f"machine: {machine()}")
    epochs: dict[str, list[float]] = {c: [] for c in CONTENDERS}
    saves: list[float] = []
    sizes: list[float] = []
    for round_number in range(args.rounds):
        for contender in CONTENDERS:
            result: Any = run_one(contender, args.epochs, args.data_path, script=__file__)
            measured = [float(s) for s in result["seconds"]][1:]
            epochs[contender] += measured
            saves += [float(s) for s in result["saves"]]
            sizes += [float(b) for b in result["bytes"]]
            shown = " ".join(f"{s:.2f}" for s in measured)
            if result["saves"]:
                shown += "; saves " + " ".join(f"{s * 1000:.0f}" for s in result["saves"]) + " ms"
            print(f"  round {round_number + 1}: {contender:<16} {shown} s/epoch", flush=True)
    off, on = (statistics.median(epochs[c]) for c in CONTENDERS)
    save = statistics.median(saves)
    size = statistics.median(sizes) / 2**20
    print(f"\ncheckpoints off: {off:.3f} s/epoch; on: {on:.3f} s/epoch "
          f"({(on / off - 1) * 100:+.1f} %)")
    print(f"one checkpoint: {save * 1000:.0f} ms ({size:.1f} MB), {save / off * 100:.1f} % of an "
          "epoch (target: at most 3 %)")
    if not args.no_docs:
        body = "\n".join([
            "## Checkpoint cost (`benchmarks/checkpoint_cost.py`)", "",
            f"Command: `{command()}`  ",
            f"Machine: {machine()}", "",
            "The deep reference MLP with the default training settings, a checkpoint after "
            "every epoch to a folder on this machine's disk (written beside, renamed into place) "
            "beside the same training without, alternating fresh processes, "
            f"{args.rounds} rounds of {args.epochs} epochs (the first of each run not "
            "counted). The checkpoint is written after the epoch's clock stops: its own time is "
            "the column \"one checkpoint\".", "",
            "| | s/epoch | one checkpoint | size | share of an epoch |",
            "| --- | --- | --- | --- | --- |",
            f"| checkpoints off | {off:.3f} | | | |",
            f"| checkpoints on | {on:.3f} ({(on / off - 1) * 100:+.1f} %) | {save * 1000:.0f} ms "
            f"| {size:.1f} MB | {save / off * 100:.1f} % |",
        ])
        print(f"\nwritten to {write_section('checkpoint_cost', body)}")


if __name__ == "__main__":
    main()
