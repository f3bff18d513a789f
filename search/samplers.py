"""Optuna samplers and pruners from the study file's ``[sampler]`` and ``[pruner]`` sections."""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from search.equal_time_pruner import EqualTimePruner
from search.errors import UserError
from search.studyfile import (
    CmaEsSamplerSection,
    GPSamplerSection,
    HyperbandPrunerSection,
    MedianPrunerSection,
    NoPrunerSection,
    NSGAIIISamplerSection,
    NSGAIISamplerSection,
    PercentilePrunerSection,
    QMCSamplerSection,
    RandomSamplerSection,
    StudyFile,
    SuccessiveHalvingPrunerSection,
    TPESamplerSection,
    WilcoxonPrunerSection,
)


@contextlib.contextmanager
def _stable_enough() -> Iterator[None]:
    # TPE's `multivariate`/`group`/`constant_liar`, QMC and Wilcoxon have been "experimental"
    # for years; a notice on every start says nothing the user can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def make_sampler(spec: StudyFile) -> optuna.samplers.BaseSampler:
    """The configured sampler, each trial's draws seeded by the study's seed and the trial's
    number (:class:`TrialSeededSampler`): the same study file run by one worker proposes the
    same trials again, and no worker, resumed run or fresh process repeats another's draws."""
    def build(seed: int) -> optuna.samplers.BaseSampler:
        with _stable_enough():
            return _make_sampler(spec, seed)

    return TrialSeededSampler(build, spec.study.seed)


def draw_seed(study_seed: int, number: int) -> int:
    """The seed of trial ``number``'s draws: NumPy's ``SeedSequence`` of the study's seed and
    the number, so that neighbouring numbers give unrelated streams. (The seed it trains with
    is another: ``objectives.record.trial_seed``.)"""
    return int(np.random.SeedSequence([study_seed, number]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Each trial's draws from a sampler seeded with the study's seed and the trial's number.

    Optuna seeds a sampler once per process, so every fresh process (a second worker, a run
    resumed after Ctrl-C, SIGKILL or a larger ``n_trials``, a worker that started afresh)
    replays the same random stream and proposes the same first configurations again. Here a
    trial's sampler is made anew from ``build(draw_seed(seed, number))``: what it draws
    depends on the study's seed, the trial's number (unique in the study) and the finished
    trials it learns from, never on the process. Samplers keep their state across trials in the
    storage (CMA-ES's and NSGA-II's generations, QMC's sample index), which stays shared.
    """

    def __init__(self, build: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._build = build
        self._seed = seed
        self._by_number: dict[int, optuna.samplers.BaseSampler] = {}
        self._lock = threading.Lock()
        # made once now: a sampler that cannot be made (a missing package) fails here
        self.kind = type(build(seed))

    def __str__(self) -> str:
        return f"{self.kind.__name__} (seeded per trial)"

    def _for(self, number: int) -> optuna.samplers.BaseSampler:
        with self._lock:
            sampler = self._by_number.get(number)
            if sampler is None:
                sampler = self._by_number[number] = self._build(draw_seed(self._seed, number))
            return sampler

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(trial.number).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._for(trial.number).sample_independent(study, trial, param_name,
                                                          param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial.number).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        try:
            self._for(trial.number).after_trial(study, trial, state, values)
        finally:
            with self._lock:
                self._by_number.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Nothing to do: each trial's sampler is seeded when the trial starts."""


def make_pruner(spec: StudyFile) -> optuna.pruners.BasePruner:
    """The configured pruner; epochs are its steps. A multi-objective study gets Optuna's
    no-op pruner: Optuna refuses intermediate values there (optuna#3450), so none of its
    pruners can work."""
    if spec.study.multi_objective:
        return optuna.pruners.NopPruner()
    with _stable_enough():
        return _make_pruner(spec)


def _make_sampler(spec: StudyFile, seed: int) -> optuna.samplers.BaseSampler:
    config = spec.sampler
    if isinstance(config, TPESamplerSection):
        return optuna.samplers.TPESampler(
            n_startup_trials=config.n_startup_trials, multivariate=config.multivariate,
            group=config.group and config.multivariate, constant_liar=config.constant_liar,
            seed=seed,
        )
    if isinstance(config, RandomSamplerSection):
        return optuna.samplers.RandomSampler(seed=seed)
    if isinstance(config, CmaEsSamplerSection):
        _require("cmaes", "sampler.type 'cmaes' needs the package cmaes: pip install cmaes")
        return optuna.samplers.CmaEsSampler(
            n_startup_trials=config.n_startup_trials, sigma0=config.sigma0,
            restart_strategy=config.restart_strategy, seed=seed,
        )
    if isinstance(config, GPSamplerSection):
        _require("torch", "sampler.type 'gp' needs PyTorch: pip install 'hpsearch[gp]'")
        return optuna.samplers.GPSampler(n_startup_trials=config.n_startup_trials, seed=seed)
    if isinstance(config, QMCSamplerSection):
        # The study's seed scrambles the one sequence that all trials share (its index is kept
        # in the storage); only the draws outside the sequence's space vary by trial.
        return optuna.samplers.QMCSampler(
            qmc_type=config.qmc_type, scramble=config.scramble, seed=spec.study.seed,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
        )
    if isinstance(config, (NSGAIISamplerSection, NSGAIIISamplerSection)):
        kind = (optuna.samplers.NSGAIISampler if isinstance(config, NSGAIISamplerSection)
                else optuna.samplers.NSGAIIISampler)
        return kind(population_size=config.population_size, mutation_prob=config.mutation_prob,
                    crossover_prob=config.crossover_prob, swapping_prob=config.swapping_prob,
                    seed=seed)
    raise AssertionError(f"unhandled sampler {config!r}")


def _make_pruner(spec: StudyFile) -> optuna.pruners.BasePruner:
    config = spec.pruner
    if isinstance(config, MedianPrunerSection) and config.compare_at == "seconds":
        return EqualTimePruner(  # Optuna's median rule: 50 %, judged against one trial
            50.0, n_startup_trials=config.n_startup_trials,
            n_warmup_steps=config.n_warmup_steps, interval_steps=config.interval_steps)
    if isinstance(config, PercentilePrunerSection) and config.compare_at == "seconds":
        return EqualTimePruner(
            config.percentile, n_startup_trials=config.n_startup_trials,
            n_warmup_steps=config.n_warmup_steps, interval_steps=config.interval_steps,
            n_min_trials=config.n_min_trials)
    if isinstance(config, MedianPrunerSection):
        return optuna.pruners.MedianPruner(
            n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps,
            interval_steps=config.interval_steps,
        )
    if isinstance(config, PercentilePrunerSection):
        return optuna.pruners.PercentilePruner(
            config.percentile, n_startup_trials=config.n_startup_trials,
            n_warmup_steps=config.n_warmup_steps, interval_steps=config.interval_steps,
            n_min_trials=config.n_min_trials,
        )
    if isinstance(config, SuccessiveHalvingPrunerSection):
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=config.min_resource, reduction_factor=config.reduction_factor,
            min_early_stopping_rate=config.min_early_stopping_rate,
        )
    if isinstance(config, HyperbandPrunerSection):
        max_resource = (
            spec.training.max_epochs if config.max_resource == "auto" else config.max_resource
        )
        return optuna.pruners.HyperbandPruner(
            min_resource=config.min_resource, max_resource=max_resource,
            reduction_factor=config.reduction_factor,
        )
    if isinstance(config, WilcoxonPrunerSection):
        return optuna.pruners.WilcoxonPruner(
            p_threshold=config.p_threshold, n_startup_steps=config.n_startup_steps
        )
    if isinstance(config, NoPrunerSection):
        return optuna.pruners.NopPruner()
    raise AssertionError(f"unhandled pruner {config!r}")


def _require(module: str, message: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(message)
