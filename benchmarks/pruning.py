"""What pruning saved in a study, and whether it would have cost the best trial.

Run: .venv/bin/python benchmarks/pruning.py [--storage URL] [--study NAME] [--no-docs]

Reads a finished study (any hpsearch study; run one first, e.g. ``hpsearch run
studies/cifar10-mlp.toml --data-path ...``) and prints:

- epochs trained in all, and the epochs pruning saved: for each pruned trial, the epochs its
  budget (``max_epochs``) still allowed. Early stopping might have ended some of those runs
  sooner, so this is an upper bound of the saving; the share is saved / (trained + saved);
- whether the study's pruner would have pruned the best trial (and each of the five best) at
  any of its epochs, replayed against every other finished trial of the study: more than the
  best trial saw when it ran, so a stricter test than the search itself. It must not;
- how well an early epoch ranks the configurations as their whole training does (Spearman's
  rank correlation, over the completed trials, of the value at epoch 1, 2, 5, 10 and 20 with
  the trial's best value): the ground on which epochs serve as the cheap fidelity that a
  pruner judges trials by.

- both rules of the percentile pruner side by side, each replayed for every finished trial
  against every other: at the same epoch (Optuna's way, ``compare_at = "epoch"``) and after
  the same seconds of training (``compare_at = "seconds"``): the trials each would stop, the
  training seconds that would save (of what those trials trained past that epoch), and
  whether it would stop any of the five best;
- a trial's share of the time budget (``[study] max_trial_share``, ``objectives.budget``)
  replayed in the study's own time: each finished trial, from the moment it had run for the
  share, against the trials that had completed by then; the trials the rule would stop, the
  seconds of workers' time that saves, whether it would stop any of the five best, and which
  trials ran past the share leading. A trial's epochs are taken to end evenly over its time
  from start to end; the study's later history is kept as it was (the seconds saved would have
  gone to other trials);
- how well the seconds per epoch predicted before each trial trained
  (``predicted_epoch_seconds``) matched those it measured: the median and largest factor
  between them, and the share within a factor of 1.5.

For a study of several objectives (pruned by hpsearch's cost-aware rule,
``objectives.pruning``), instead of the best trial: whether the rule would have stopped any
trial of the final Pareto front at any of its epochs, replayed against every other completed
trial of the study. It must not.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from objectives import budget  # noqa: E402
from objectives.config import direction  # noqa: E402
from objectives.record import Key, StopReason  # noqa: E402
from objectives.pruning import CostAwareRule, peer_of  # noqa: E402
from search.results.evaluate import stored_spec  # noqa: E402
from search.results.tables import pick_study  # noqa: E402
from search.samplers import make_pruner  # noqa: E402
from search.storage.address import redact, resolve_url  # noqa: E402
from search.storage.opening import open_storage  # noqa: E402
from search.studyfile import (MedianPrunerSection, PercentilePrunerSection,  # noqa: E402
                              StudyFile)


def epochs_saved(study: optuna.Study, max_epochs: int) -> tuple[int, int, int]:
    """(epochs trained, epochs saved at most, pruned trials)."""
    trained = saved = pruned = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                         TrialState.PRUNED)):
        run = int(trial.user_attrs.get("epochs_run") or len(trial.intermediate_values))
        trained += run
        if trial.state == TrialState.PRUNED:
            pruned += 1
            saved += max(0, int(trial.user_attrs.get(Key.MAX_EPOCHS) or max_epochs) - run)
    return trained, saved, pruned


def best_would_be_pruned(study: optuna.Study, pruner: optuna.pruners.BasePruner
                         ) -> int | None:
    """The first step at which ``pruner`` would stop the best trial, judged against every
    other finished trial; None if it never would."""
    return would_be_pruned(study, study.best_trial, pruner)


def would_be_pruned(study: optuna.Study, best: optuna.trial.FrozenTrial,
                    pruner: optuna.pruners.BasePruner) -> int | None:
    """The first step at which ``pruner`` would stop ``best``, judged against every other
    finished trial of ``study``; None if it never would."""
    others = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                  TrialState.PRUNED))
              if t.number != best.number]
    replay = optuna.create_study(direction=study.direction)
    for trial in others:
        replay.add_trial(trial)
    for step in sorted(best.intermediate_values):
        if pruner.prune(replay, running_copy(best, step)):
            return step
    return None


def best_completed(study: optuna.Study, count: int = 5) -> list[optuna.trial.FrozenTrial]:
    """The ``count`` best completed trials, best first."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda t: t.value, reverse=maximize)[:count]


def top_would_be_pruned(study: optuna.Study, pruner: optuna.pruners.BasePruner,
                        count: int = 5) -> list[tuple[int, int | None]]:
    """(trial number, first step it would be pruned at, or None) for the ``count`` best
    completed trials, each replayed against every other finished trial."""
    return [(trial.number, would_be_pruned(study, trial, pruner))
            for trial in best_completed(study, count)]


def running_copy(trial: optuna.trial.FrozenTrial, step: int) -> optuna.trial.FrozenTrial:
    """``trial`` as it stood at ``step``, running; its predicted seconds per epoch (what the
    equal-time rule reads of a running trial) its measured ones where none were predicted."""
    running = copy.deepcopy(trial)
    running.state = TrialState.RUNNING
    running.values = None  # type: ignore[assignment]
    running.datetime_complete = None
    running.intermediate_values = {s: v for s, v in trial.intermediate_values.items()
                                   if s <= step}
    if Key.PREDICTED_EPOCH_SECONDS not in running.user_attrs:
        running.user_attrs[Key.PREDICTED_EPOCH_SECONDS] = running.user_attrs.get(
            Key.SECONDS_PER_EPOCH)
    return running


def rules_side_by_side(study: optuna.Study, spec: StudyFile) -> list[str]:
    """The percentile rule at equal epochs and at equal seconds, each replayed for every
    finished trial against every other finished trial."""
    if not isinstance(spec.pruner, (PercentilePrunerSection, MedianPrunerSection)):
        return []  # the rules with an equal-time variant
    finished = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                    TrialState.PRUNED))
                if t.intermediate_values and t.user_attrs.get(Key.SECONDS_PER_EPOCH)]
    top = {t.number for t in best_completed(study)}
    trained = sum(len(t.intermediate_values) * t.user_attrs[Key.SECONDS_PER_EPOCH]
                  for t in finished)
    lines = [f"the two rules of the {spec.pruner.type} pruner, each replayed for the "
             f"{len(finished)} finished trials against all others ({trained:,.0f} s of "
             "training in all):"]
    for compare_at in ("epoch", "seconds"):
        rule = make_pruner(spec.model_copy(update={"pruner": spec.pruner.model_copy(
            update={"compare_at": compare_at})}))
        stopped, saved, top_hit = [], 0.0, []
        for trial in finished:
            others = optuna.create_study(direction=study.direction)
            for other in finished:
                if other.number != trial.number:
                    others.add_trial(other)
            step = next((s for s in sorted(trial.intermediate_values)
                         if rule.prune(others, running_copy(trial, s))), None)
            if step is None:
                continue
            stopped.append(trial.number)
            saved += (len(trial.intermediate_values) - step - 1) * \
                trial.user_attrs[Key.SECONDS_PER_EPOCH]
            if trial.number in top:
                top_hit.append(f"{trial.number} at epoch {step + 1}")
        lines.append(
            f"  at the same {'epoch' if compare_at == 'epoch' else 'seconds of training'}: "
            f"{len(stopped)} trials stopped, {saved:,.0f} s saved ({saved / trained:.0%}); "
            + ("none of the five best stopped" if not top_hit
               else "of the five best, stopped: " + ", ".join(top_hit)))
    return lines


def _timed(study: optuna.Study) -> dict[int, optuna.trial.FrozenTrial]:
    """The finished trials with their start and end, by number."""
    return {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                          TrialState.PRUNED))
            if t.datetime_start is not None and t.datetime_complete is not None}


def _took(trial: optuna.trial.FrozenTrial, until: dt.datetime | None = None) -> float:
    """Seconds from ``trial``'s start to ``until`` (its end)."""
    end = until or trial.datetime_complete
    assert end is not None and trial.datetime_start is not None
    return (end - trial.datetime_start).total_seconds()


def share_stops(study: optuna.Study, limit_s: float
                ) -> dict[int, tuple[dt.datetime | None, bool]]:
    """For each finished trial of a study of one objective that ran longer than ``limit_s``:
    when the share rule would have stopped it (None: never) and whether it led when it passed
    the limit, replayed in the study's own time against the trials completed by then."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    finished = _timed(study)
    completed = [(t.datetime_complete, float(t.value), t.number) for t in finished.values()
                 if t.state == TrialState.COMPLETE and t.value is not None]
    found: dict[int, tuple[dt.datetime | None, bool]] = {}
    for trial in finished.values():
        start, end = trial.datetime_start, trial.datetime_complete
        assert start is not None and end is not None
        passed = start + dt.timedelta(seconds=limit_s)
        if passed >= end:
            continue
        resumed = int(trial.user_attrs.get(Key.RESUMED_AT) or 0)  # restored: known at start
        steps = sorted(trial.intermediate_values)
        trained = [step for step in steps if step >= resumed]
        ended = {step: start if step < resumed
                 else start + (end - start) * (trained.index(step) + 1) / len(trained)
                 for step in steps}
        moments = sorted({passed, *(m for m in ended.values() if passed < m < end),
                          *(done for done, _, _ in completed if done and passed < done < end)})
        stop: dt.datetime | None = None
        first: bool | None = None
        for moment in moments:
            own = [trial.intermediate_values[step] for step in steps if ended[step] <= moment]
            best = [value for done, value, number in completed
                    if done and done <= moment and number != trial.number]
            leads = budget.leads((max(own) if maximize else min(own)) if own else None,
                                 (max(best) if maximize else min(best)) if best else None,
                                 maximize)
            first = leads if first is None else first
            if not leads:
                stop = moment
                break
        found[trial.number] = (stop, bool(first))
    return found


def share_lines(study: optuna.Study, budget_s: float | None, share: float) -> list[str]:
    """The share rule replayed (:func:`share_stops`), as lines."""
    if budget_s is None:
        return ["no time budget (`timeout`, or --budget): no share of it to replay"]
    limit = share * budget_s
    finished = _timed(study)
    total = sum(_took(t) for t in finished.values())
    top = {t.number for t in best_completed(study)}
    found = share_stops(study, limit)
    live = [n for n, t in finished.items()
            if t.user_attrs.get(Key.STOP_REASON) == StopReason.TIME_SHARE]
    stopped = {n: when for n, (when, _) in found.items() if when is not None}
    saved = sum(_took(finished[n]) - _took(finished[n], when) for n, when in stopped.items())
    past = ", ".join(
        f"{n} ({_took(finished[n]):.0f} s, {'leading' if led else 'behind'} at {limit:.0f} s, "
        + (f"stopped at {_took(finished[n], when):.0f} s)" if when is not None else "ran on)")
        for n, (when, led) in sorted(found.items()))
    hit = sorted(set(stopped) & top)
    return [
        f"a trial's share of the time budget, {share:g} of {budget_s:.0f} s ({limit:.0f} s), "
        f"replayed in the study's own time over its {len(finished)} finished trials "
        f"({total:,.0f} s of workers' time): {len(stopped)} stopped, {saved:,.0f} s saved "
        f"({saved / total if total else 0:.0%}); "
        + ("none of the five best stopped" if not hit else
           "of the five best, stopped: " + ", ".join(map(str, hit)))
        + (f"; stopped by the rule as the study ran: {', '.join(map(str, live))}" if live
           else ""),
        "  trials that ran past the share: " + (past or "none"),
    ]


def prediction_error(study: optuna.Study) -> str | None:
    """How the seconds per epoch predicted before each trial matched those it measured."""
    pairs = [(t.user_attrs[Key.SECONDS_PER_EPOCH], t.user_attrs[Key.PREDICTED_EPOCH_SECONDS])
             for t in study.get_trials(deepcopy=False)
             if t.user_attrs.get(Key.SECONDS_PER_EPOCH)
             and t.user_attrs.get(Key.PREDICTED_EPOCH_SECONDS)]
    if not pairs:
        return None
    factors = sorted(max(m / p, p / m) for m, p in pairs)
    median = factors[len(factors) // 2]
    within = sum(f <= 1.5 for f in factors) / len(factors)
    return (f"seconds per epoch predicted before training against measured, {len(pairs)} "
            f"trials: median factor {median:.2f}, largest {factors[-1]:.2f}, "
            f"{within:.0%} within a factor of 1.5")


def rank_correlations(study: optuna.Study, epochs: tuple[int, ...] = (1, 2, 5, 10, 20)
                      ) -> list[tuple[int, int, float]]:
    """(epoch, completed trials that reached it, Spearman's rho of their value there with
    their best value), for each of ``epochs`` that at least 5 completed trials reached."""
    from scipy.stats import spearmanr

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    found = []
    for epoch in epochs:
        pairs = [(t.intermediate_values[epoch - 1], t.value) for t in complete
                 if epoch - 1 in t.intermediate_values]
        if len(pairs) >= 5:
            rho = spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic
            found.append((epoch, len(pairs), float(rho)))
    return found


def front_would_be_pruned(study: optuna.Study, rule: CostAwareRule, metric: str,
                          costs: tuple[str, ...]) -> list[tuple[int, int | None]]:
    """(trial number, first epoch index the cost-aware rule would stop it at, or None) for
    each trial of the Pareto front, replayed against every other completed trial."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    peers = {t.number: peer for t in complete
             if (peer := peer_of(t.user_attrs, costs, metric, Key.EPOCH_VALUES)) is not None}
    maximize = direction(metric) == "maximize"
    found: list[tuple[int, int | None]] = []
    for trial in study.best_trials:
        own = peers.get(trial.number)
        if own is None:
            continue
        others = [peer for number, peer in peers.items() if number != trial.number]
        step = next((step for step in range(len(own.values))
                     if rule.prunes(step, own.values, own.costs, others, maximize=maximize)),
                    None)
        found.append((trial.number, step))
    return found


def _front_lines(study: optuna.Study, spec: StudyFile) -> list[str]:
    goals = spec.goals
    if goals.pruning is None:
        return ["no cost-aware pruning in this study (pruner none)"]
    front = front_would_be_pruned(study, goals.pruning, goals.metric, goals.cost_objectives)
    stopped = [(number, step) for number, step in front if step is not None]
    return [f"the Pareto front's {len(front)} trials, each replayed against all other completed "
            f"trials by the cost-aware {spec.pruner.type} rule: "
            + ("none would be pruned" if not stopped else "; ".join(
                f"trial {number} PRUNED at epoch {step + 1}" for number, step in stopped))]


def _verdict(step: int | None) -> str:
    return ("never pruned when replayed against all other trials" if step is None
            else f"WOULD BE PRUNED at epoch {step + 1} against all other trials")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage")
    parser.add_argument("--study")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--budget", type=float,
                        help="the time budget (s) the share rule is replayed for (default: "
                             "the study's timeout)")
    parser.add_argument("--share", type=float, default=0.25,
                        help="the share of it a trial may take unless it leads (default 0.25)")
    args = parser.parse_args()
    url = resolve_url(args.storage)
    study = pick_study(open_storage(url, create=False), args.study)
    spec = stored_spec(study, None)  # as resolved when the study was made
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trained, saved, pruned = epochs_saved(study, spec.training.max_epochs)
    share = saved / (trained + saved) if trained + saved else 0.0
    lines = [
        f"study {study.study_name} on {redact(url)}: {len(study.trials)} trials, {pruned} "
        f"pruned by {spec.pruner.type} ({spec.pruner.model_dump(exclude={'type'})})",
        f"epochs trained: {trained}; saved by pruning: at most {saved} "
        f"({share:.0%} of what the study would have trained without it)",
    ]
    if spec.study.multi_objective:
        _finish(study, lines + _front_lines(study, spec), args.no_docs)
        return
    step = best_would_be_pruned(study, make_pruner(spec))
    best = study.best_trial
    lines.append(
        f"best trial {best.number} ({best.value:.4f}, {len(best.intermediate_values)} epochs): "
        + _verdict(step))
    if spec.pruner.type != "median":  # the earlier default, for comparison
        median = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
        lines.append("the same trial replayed with a median pruner (n_startup_trials 2, "
                     "n_warmup_steps 2, hpsearch's earlier default): "
                     + _verdict(best_would_be_pruned(study, median)))
    top = top_would_be_pruned(study, make_pruner(spec))
    lines.append(f"the {len(top)} best completed trials, each replayed against all others: "
                 + "; ".join(f"trial {number} "
                             + ("never pruned" if step is None else f"PRUNED at epoch {step + 1}")
                             for number, step in top))
    lines += rules_side_by_side(study, spec)
    lines += share_lines(study, args.budget or spec.study.timeout, args.share)
    error = prediction_error(study)
    if error is not None:
        lines.append(error)
    correlations = rank_correlations(study)
    if correlations:
        lines.append("rank correlation of a completed trial's value at an epoch with its best "
                     "value (Spearman): " + "; ".join(
                         f"epoch {epoch}: {rho:.2f} ({count} trials)"
                         for epoch, count, rho in correlations))
    _finish(study, lines, args.no_docs)


def _finish(study: optuna.Study, lines: list[str], no_docs: bool) -> None:
    print("\n".join(lines))
    if not no_docs:
        from _docs import command, machine, write_section

        title = "" if study.study_name == "hpsearch" else f" of study {study.study_name}"
        body = "\n".join([f"## Pruning{title} (`benchmarks/pruning.py`)", "",
                          f"Command: `{command()}`  ", f"Machine: {machine()}", "",
                          *[f"- {line}" for line in lines]])
        section = "pruning" if study.study_name == "hpsearch" else f"pruning-{study.study_name}"
        print(f"written to {write_section(section, body)}")


if __name__ == "__main__":
    main()
