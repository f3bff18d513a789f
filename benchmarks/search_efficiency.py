"""Best validation accuracy per minute of search: hpsearch against random search, a plain Optuna
loop, KerasTuner's Hyperband and the hand-built experiments, on CIFAR-10.

Run (once: ``make bench-env``, which makes ``.venv-bench`` with keras-tuner beside hpsearch):

    .venv-bench/bin/python benchmarks/search_efficiency.py \
        --data-path ../shared/data/cifar10-jpeg.tar.gz [--minutes 30] [--methods ...]
        [--seed 0] [--keep DIR [--resume]] [--no-docs]

Every method gets the same wall-clock budget (``--minutes``, 30 by default) on this whole
machine, one after the other, the same search space (``space()`` below: 1-4 layers, 32-1024
units, relu/tanh/gelu, BatchNorm, dropout, L2, initializer, four optimizers with their own
parameters, learning rate, batch size) and the same train/validation split of CIFAR-10:

- hpsearch: ``hpsearch run`` of a study file that gives only the data and the space, so
  every other setting (sampler, pruner, epochs, early stopping, ``--workers auto``) is
  hpsearch's default;
- random: the same, with ``[sampler] type = "random"`` and ``[pruner] type = "none"``;
- hpsearch-recipes: hpsearch in the seed's space widened by the training recipes
  (``RECIPES_TOML``: widths to 4096, Nadam and Lion, learning-rate schedules, label smoothing,
  flips and shifts, standardization and PCA/ZCA whitening), otherwise as hpsearch;
- hpsearch-recipes-share-off: the same with ``max_trial_share = 1``: any trial may take any
  part of the budget, as before that rule (``objectives.budget``);
- plain-optuna, kerastuner, hand-built: see ``benchmarks/_others.py`` (Keras ``model.fit`` on
  float32 arrays, as their users write them). The hand-built experiments run to their end.

At the end of its budget a method is stopped (SIGTERM); trials finished by then count.
hpsearch (all three of its methods) is given ``--timeout`` a minute shorter than the budget:
when it ends, its trials still training stop and are recorded at their best epoch, as a user's
run with a timeout ends; the other tools lose the trial they were training, as they do. With
``--keep DIR --resume``, methods whose results are already in DIR are read back, not rerun
(for a run that was stopped, or one method run again). Printed
and written to docs/benchmarks.md, with the plot docs/search-efficiency.png: the best
validation accuracy over time, the time to reach 0.55, the best at the end of the budget, and
the test accuracy of each method's best configuration retrained by ``hpsearch evaluate``
twice: as searched (the training split with hpsearch's early stopping, for at most the number
of epochs that method trained it) and with ``--full-train`` (training plus validation, for the
epochs it chose), each tested once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
HPSEARCH = Path(sys.executable).parent / "hpsearch"
PLOT = REPO / "docs" / "search-efficiency.png"
TARGETS = (0.55, 0.60)  # times to reach these are shown
WRAP_UP_S = 60  # hpsearch's --timeout is the budget less this (see run_hpsearch)
METHODS = ["hpsearch-recipes", "hpsearch-recipes-share-off", "hpsearch", "random",
           "plain-optuna", "kerastuner", "hand-built"]
HPSEARCH_METHODS = ("hpsearch", "random", "hpsearch-recipes", "hpsearch-recipes-share-off")

SPACE_TOML = """
[space]
activation = ["relu", "tanh", "gelu"]
"""

# The seed's space widened by the training recipes of objectives.space's later entries, as
# studies/cifar10-mlp.toml widens it (shifts up to 2 pixels: benchmarks/recipe_ablation.py).
RECIPES_TOML = """
[space]
activation = ["relu", "tanh", "gelu"]
units = {low = 32, high = 4096, log = true}
optimizer = ["adam", "adamw", "sgd", "rmsprop", "nadam", "lion"]
lr_schedule = ["plateau", "cosine", "warmup_cosine", "one_cycle"]
label_smoothing = {low = 0.0, high = 0.2}
augment_flip = [true, false]
augment_shift = [0, 1, 2]
preprocessing = ["scale", "standardize", "pca", "zca"]
"""


def space() -> Any:
    """The benchmark's search space: hpsearch's defaults with three activations."""
    from objectives.space import SearchSpace

    return SearchSpace.model_validate({"activation": ["relu", "tanh", "gelu"]})


@dataclass
class Result:
    method: str
    points: list[tuple[float, float]] = field(default_factory=list)  # (seconds, value)
    # the trials that were no proposal of the method's sampler (warm starts, fixed trials)
    # as (seconds, value), also in ``points``
    given: list[tuple[float, float]] = field(default_factory=list)
    given_kind: str = "warm start"
    best_params: dict[str, Any] | None = None
    best_epochs: int | None = None
    test_accuracy: float | None = None  # retrained as searched (training split)
    test_full: float | None = None  # retrained on training + validation (--full-train)
    note: str = ""

    def best_at(self, seconds: float) -> float | None:
        values = [v for t, v in self.points if t <= seconds]
        return max(values) if values else None

    def best_source(self, seconds: float) -> str:
        """Where the best trial within ``seconds`` came from: the sampler or a warm start."""
        best = self.best_at(seconds)
        given = [v for t, v in self.given if t <= seconds]
        if best is None:
            return "-"
        return self.given_kind if given and max(given) >= best else "sampler"

    def best_sampled(self, seconds: float) -> float | None:
        """The best value of the sampler's own trials within ``seconds``."""
        given = list(self.given)
        values = [v for t, v in self.points if t <= seconds and (t, v) not in given]
        return max(values) if values else None

    def best_given(self, seconds: float) -> float | None:
        values = [v for t, v in self.given if t <= seconds]
        return max(values) if values else None

    def time_to(self, target: float) -> float | None:
        best = None
        for t, v in sorted(self.points):
            best = v if best is None else max(best, v)
            if best >= target:
                return t
        return None


def _run(cmd: list[str], budget: float, log: Path, env: dict[str, str] | None = None) -> None:
    """Run ``cmd`` until it ends or its budget is spent (then SIGTERM, SIGKILL a minute on)."""
    with log.open("w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})})
        try:
            process.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _fresh(folder: Path, method: str) -> None:
    """Remove what an earlier run of ``method`` left in ``folder``."""
    for path in folder.glob(f"{method}.*"):
        path.unlink()
    for path in folder.glob(f"retrain-{method}.*"):
        path.unlink()


def evaluate_both(url: str, study: str, number: int, args: argparse.Namespace,
                  folder: Path) -> tuple[float | None, float | None]:
    """Test accuracy of trial ``number`` retrained as the search trained it, and retrained on
    training plus validation (``--full-train``); kept in ``folder`` for ``--resume``."""
    kept = folder / f"{study}.evaluations.json"
    saved = json.loads(kept.read_text()) if args.resume and kept.exists() else {}
    if saved.get("number") != number:
        saved = {}
    # A retraining that failed (None) is tried again.
    searched = saved.get("searched")
    if searched is None:
        searched = evaluate(url, study, number, args, folder, full_train=False)
    full = saved.get("full")
    if full is None:
        full = evaluate(url, study, number, args, folder, full_train=True)
    kept.write_text(json.dumps({"number": number, "searched": searched, "full": full}))
    return searched, full


def run_hpsearch(method: str, args: argparse.Namespace, folder: Path) -> Result:
    import optuna

    from objectives.record import Key

    study_file = folder / f"{method}.toml"
    url = f"sqlite:///{folder / f'{method}.db'}"
    budget = args.minutes * 60
    reuse = args.resume and (folder / f"{method}.t0").exists()
    if reuse:
        t0 = float((folder / f"{method}.t0").read_text())
    else:
        _fresh(folder, method)
        # Random search is the baseline: no pruner, no warm start and no share of the time
        # budget either.
        warm, extra = (("warm_start = false\nmax_trial_share = 1\n",
                        '[sampler]\ntype = "random"\n[pruner]\ntype = "none"\n')
                       if method == "random" else ("", ""))
        if method == "hpsearch-recipes-share-off":
            warm = "max_trial_share = 1\n"
        space = RECIPES_TOML if method.startswith("hpsearch-recipes") else SPACE_TOML
        study_file.write_text(f'[study]\nname = "{method}"\nseed = {args.seed}\n{warm}'
                              f'[data]\ndataset = "cifar10"\n{extra}{space}')
        t0 = time.time()
        # hpsearch's own time budget ends a minute before the benchmark's: its trials still
        # training then stop and are recorded at their best epoch (objectives.budget), and the
        # minute covers its start-up and that wrap-up, so they are in before the SIGTERM.
        _run([str(HPSEARCH), "run", str(study_file), "--storage", url, "--workers", "auto",
              "--timeout", str(budget - WRAP_UP_S), "--data-path", args.data_path], budget,
             folder / f"{method}.log",
             {"HPSEARCH_ARTIFACTS": str(folder / f"{method}-artifacts")})
        (folder / f"{method}.t0").write_text(repr(t0))
    study = optuna.load_study(study_name=method, storage=url)
    result = Result(method)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    for trial in complete:
        assert trial.datetime_complete is not None and trial.value is not None
        point = (trial.datetime_complete.timestamp() - t0, trial.value)
        result.points.append(point)
        if trial.user_attrs.get(Key.WARM_START):
            result.given.append(point)
    finished = [t for t in complete if t.datetime_complete.timestamp() - t0 <= budget]
    result.note = f"{len(study.trials)} trials started"
    if finished:
        best = max(finished, key=lambda t: t.value)
        result.best_params = best.params
        result.test_accuracy, result.test_full = evaluate_both(url, method, best.number, args,
                                                               folder)
    return result


def run_other(method: str, args: argparse.Namespace, folder: Path) -> Result:
    out = folder / f"{method}.jsonl"
    budget = args.minutes * 60
    if not (args.resume and (folder / f"{method}.done").exists()):
        _fresh(folder, method)
        t0 = time.time()
        _run([sys.executable, str(REPO / "benchmarks" / "_others.py"), method, "--data-path",
              args.data_path, "--out", str(out), "--t0", str(t0), "--budget", str(budget),
              "--seed", str(args.seed)],
             budget if method != "hand-built" else 24 * 3600, folder / f"{method}.log")
        (folder / f"{method}.done").touch()
    result = Result(method)
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if method == "hand-built":
        result.given_kind = "by hand"
    for record in records:
        result.points.append((record["seconds"], record["value"]))
        if method == "hand-built":
            result.given.append(result.points[-1])
    counted = [r for r in records if r["seconds"] <= budget or method == "hand-built"]
    result.note = f"{len(records)} trials finished"
    if counted:
        best = max(counted, key=lambda r: r["value"])
        result.best_params, result.best_epochs = best["params"], best["epochs"]
        database = folder / f"retrain-{method}.db"
        database.unlink(missing_ok=True)  # made again: cheap, and from this version's fields
        url = f"sqlite:///{database}"
        number = _retrain_study(url, f"retrain-{method}", best, args)
        result.test_accuracy, result.test_full = evaluate_both(url, f"retrain-{method}", number,
                                                               args, folder)
    return result


def _retrain_study(url: str, name: str, best: dict[str, Any], args: argparse.Namespace) -> int:
    """An hpsearch study holding another tool's best configuration as a complete trial (the
    space widened to hold the hand-built experiments), so ``hpsearch evaluate`` can retrain it."""
    import optuna

    from objectives.record import Key
    from objectives.space import suggest
    from search.studies import open_study
    from search.studyfile import StudyFile

    raw = {"study": {"name": name, "seed": args.seed, "n_trials": 1, "warm_start": False},
           "data": {"dataset": "cifar10", "path": args.data_path},
           "space": {"activation": ["relu", "tanh", "gelu"], "l2": {"low": 0.0, "high": 1e-3},
                     "batch_size": [32, 64, 128, 256]}}
    spec = StudyFile.model_validate(raw)
    study = open_study(spec, optuna.storages.RDBStorage(url))
    study.enqueue_trial(best["params"], user_attrs={Key.MAX_EPOCHS: best["epochs"]})
    trial = study.ask()
    suggest(trial, spec.space)
    # The epochs that tool chose for this configuration, which --full-train trains for.
    trial.set_user_attr("best_epoch", int(best.get("best_epoch", best["epochs"])))
    study.tell(trial, best["value"])
    return trial.number


def evaluate(url: str, study: str, number: int, args: argparse.Namespace,
             folder: Path, *, full_train: bool) -> float | None:
    import optuna

    mode = "full" if full_train else "searched"
    log = folder / f"evaluate-{study}-{mode}.log"
    with log.open("w") as out:
        code = subprocess.run([str(HPSEARCH), "evaluate", "--storage", url, "--study", study,
                               "--trial", str(number), "--data-path", args.data_path,
                               "--output", str(folder / f"evaluation-{study}-{mode}"),
                               *(["--full-train"] if full_train else [])],
                              stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ,
                                   "HPSEARCH_ARTIFACTS": str(folder / f"{study}-artifacts")}
                              ).returncode
    if code != 0:
        print(f"  hpsearch evaluate failed for {study}: see {log}", flush=True)
        return None
    record = optuna.load_study(study_name=study, storage=url).user_attrs.get(
        f"evaluation:{number}", {})
    return record.get("test_accuracy")


def plot(results: list[Result], minutes: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    for result in results:
        xs, ys, best = [], [], None
        gave: list[bool] = []  # whether each new best came from a given trial
        for t, v in sorted(result.points):
            if best is not None and v <= best:
                continue
            best = v
            xs.append(t / 60)
            ys.append(best)
            gave.append((t, v) in result.given)
        if not xs:
            continue
        end = max(minutes, xs[-1]) if result.method == "hand-built" else minutes
        ax.step([*xs, end], [*ys, ys[-1]], where="post", label=result.method, linewidth=1.8)
        color = ax.lines[-1].get_color()
        for x, y, given in zip(xs, ys, gave):
            ax.plot(x, y, "x" if given else "o", markersize=7 if given else 4, color=color)
    for target in TARGETS:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("minutes of search (wall clock, whole machine)")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title("CIFAR-10 MLP: best validation accuracy over time\n"
                 "(o: a trial of the sampler, x: a warm start or hand-built trial)", fontsize=10)
    ax.set_xlim(0, minutes)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(value: float | None, spec: str = ".4f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="keep studies, logs and models here")
    parser.add_argument("--resume", action="store_true",
                        help="with --keep: reuse the results of methods already run there")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    args.data_path = str(Path(args.data_path).resolve())
    if args.resume and not args.keep:
        parser.error("--resume needs --keep DIR, the folder of the run to resume")
    if "kerastuner" in args.methods:
        try:
            import keras_tuner  # noqa: F401
        except ImportError:
            sys.exit("kerastuner needs keras-tuner: run `make bench-env` and this script with "
                     ".venv-bench/bin/python (or leave kerastuner out of --methods)")
    from _docs import command, machine, write_section

    from objectives.config import DataConfig
    from objectives.data import load_dataset

    print(f"machine: {machine()}", flush=True)
    load_dataset(DataConfig(dataset="cifar10", path=args.data_path), args.seed)  # warm cache
    budget = args.minutes * 60
    results = []
    with tempfile.TemporaryDirectory(prefix="search-efficiency-") as tmp:
        folder = args.keep.resolve() if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for method in args.methods:
            print(f"{method}: searching for {args.minutes:g} min ...", flush=True)
            started = time.perf_counter()
            runner = run_hpsearch if method in HPSEARCH_METHODS else run_other
            result = runner(method, args, folder)
            results.append(result)
            horizon = budget if method != "hand-built" else 1e9
            reached = result.time_to(TARGETS[0])
            print(f"  {result.note}; best validation accuracy "
                  f"{_fmt(result.best_at(horizon))} (from the "
                  f"{result.best_source(horizon)}; the sampler's own best "
                  f"{_fmt(result.best_sampled(horizon))}), {TARGETS[0]} reached "
                  f"{'after ' + _fmt(reached, '.0f') + ' s' if reached is not None else 'never'}"
                  f"; retrained best: test accuracy {_fmt(result.test_accuracy)}, on "
                  f"training + validation {_fmt(result.test_full)} "
                  f"({time.perf_counter() - started:.0f} s in all)", flush=True)
    # A run of some of the methods gets its own section and plot, beside the full comparison.
    suffix = "" if args.methods == METHODS else f"-{'-'.join(args.methods)}-{args.minutes:g}min"
    figure = plot(results, args.minutes, PLOT.with_name(f"{PLOT.stem}{suffix}.png"))
    print(f"plot: {figure}")
    rows = []
    for r in results:
        horizon = 1e9 if r.method == "hand-built" else budget
        times = []
        for target in TARGETS:
            reached = r.time_to(target)
            times.append(_fmt(reached, ".0f", "not reached") + (" s" if reached else ""))
        rows.append(f"| {r.method} | {len([p for p in r.points if p[0] <= horizon])} | "
                    f"{_fmt(r.best_at(horizon))} | {r.best_source(horizon)} | "
                    f"{_fmt(r.best_sampled(horizon))} | {_fmt(r.best_given(horizon))} | "
                    f"{' | '.join(times)} | {_fmt(r.test_accuracy)} | {_fmt(r.test_full)} |")
    table = ["| method | trials finished | best val_accuracy | best from | the sampler's best "
             "| the best warm start (or hand-built) | "
             + " | ".join(f"time to {t:.2f}" for t in TARGETS) + " | "
             "test accuracy (best, retrained as searched) | test accuracy (best, retrained on "
             "training + validation) |", "| --- " * (8 + len(TARGETS)) + "|", *rows]
    print("\n".join(table))
    if not args.no_docs:
        body = "\n".join([
            f"## Search efficiency{' of ' + ', '.join(args.methods) if suffix else ''} "
            "(`benchmarks/search_efficiency.py`)", "",
            f"Command: `{command()}`  ", f"Machine: {machine()}", "",
            f"Budget: {args.minutes:g} minutes of wall clock per method on the whole machine "
            "(the hand-built experiments run to their end); trials finished within it count. "
            f"hpsearch's runs get `--timeout` {WRAP_UP_S} s shorter: their trials still "
            "training then are recorded at their best epoch, within the budget, as a user's "
            "run with a timeout ends; the other tools lose the trial they were training. "
            "The same validation split for all and the same search space, the seed's, for all "
            "but hpsearch-recipes (and -share-off: with `max_trial_share = 1`), which search it "
            "widened by the training recipes. \"Best "
            "from\" says whether the best trial was one the method's sampler proposed or a "
            "configuration given to it (hpsearch's warm-start references, the hand-built "
            "experiments). The best configuration of each is "
            "retrained with `hpsearch evaluate` twice, as the search trained it (training split, "
            "early stopping on validation) and with `--full-train` (training plus validation, "
            "for the epochs the trial chose), each tested once.", "",
            *table, "", f"![best validation accuracy over time]({figure.name})",
        ])
        print(f"written to {write_section('search_efficiency' + suffix, body)}")


if __name__ == "__main__":
    main()
