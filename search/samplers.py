"""Optuna samplers and pruners from the study file's ``[sampler]`` and ``[pruner]`` sections."""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from collections.abc import Iterator

import optuna

from search.errors import UserError
from search.studyfile import (
    CmaEsSampler, GPSampler, HyperbandPruner, MedianPruner, NoPruner, NSGAIIISampler,
    NSGAIISampler, PercentilePruner, QMCSampler, RandomSampler, StudyFile,
    SuccessiveHalvingPruner, TPESampler, WilcoxonPruner,
)


@contextlib.contextmanager
def _stable_enough() -> Iterator[None]:
    # TPE's `multivariate`/`group`/`constant_liar`, QMC and Wilcoxon have been "experimental"
    # for years; a notice on every start says nothing the user can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def make_sampler(spec: StudyFile, *, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with the study's seed (plus ``seed_offset``, which keeps
    several workers of one study from proposing the very same configurations)."""
    with _stable_enough():
        return _make_sampler(spec, spec.study.seed + seed_offset)


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
    if isinstance(config, TPESampler):
        return optuna.samplers.TPESampler(
            n_startup_trials=config.n_startup_trials, multivariate=config.multivariate,
            group=config.group and config.multivariate, constant_liar=config.constant_liar,
            seed=seed,
        )
    if isinstance(config, RandomSampler):
        return optuna.samplers.RandomSampler(seed=seed)
    if isinstance(config, CmaEsSampler):
        _require("cmaes", "sampler.type 'cmaes' needs the package cmaes: pip install cmaes")
        return optuna.samplers.CmaEsSampler(
            n_startup_trials=config.n_startup_trials, sigma0=config.sigma0,
            restart_strategy=config.restart_strategy, seed=seed,
        )
    if isinstance(config, GPSampler):
        _require("torch", "sampler.type 'gp' needs PyTorch: pip install 'hpsearch[gp]'")
        return optuna.samplers.GPSampler(n_startup_trials=config.n_startup_trials, seed=seed)
    if isinstance(config, QMCSampler):
        return optuna.samplers.QMCSampler(
            qmc_type=config.qmc_type, scramble=config.scramble, seed=seed
        )
    if isinstance(config, (NSGAIISampler, NSGAIIISampler)):
        kind = (optuna.samplers.NSGAIISampler if isinstance(config, NSGAIISampler)
                else optuna.samplers.NSGAIIISampler)
        return kind(population_size=config.population_size, mutation_prob=config.mutation_prob,
                    crossover_prob=config.crossover_prob, swapping_prob=config.swapping_prob,
                    seed=seed)
    raise AssertionError(f"unhandled sampler {config!r}")


def _make_pruner(spec: StudyFile) -> optuna.pruners.BasePruner:
    config = spec.pruner
    if isinstance(config, MedianPruner):
        return optuna.pruners.MedianPruner(
            n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps,
            interval_steps=config.interval_steps,
        )
    if isinstance(config, PercentilePruner):
        return optuna.pruners.PercentilePruner(
            config.percentile, n_startup_trials=config.n_startup_trials,
            n_warmup_steps=config.n_warmup_steps, interval_steps=config.interval_steps,
            n_min_trials=config.n_min_trials,
        )
    if isinstance(config, SuccessiveHalvingPruner):
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=config.min_resource, reduction_factor=config.reduction_factor,
            min_early_stopping_rate=config.min_early_stopping_rate,
        )
    if isinstance(config, HyperbandPruner):
        max_resource = (
            spec.training.max_epochs if config.max_resource == "auto" else config.max_resource
        )
        return optuna.pruners.HyperbandPruner(
            min_resource=config.min_resource, max_resource=max_resource,
            reduction_factor=config.reduction_factor,
        )
    if isinstance(config, WilcoxonPruner):
        return optuna.pruners.WilcoxonPruner(
            p_threshold=config.p_threshold, n_startup_steps=config.n_startup_steps
        )
    if isinstance(config, NoPruner):
        return optuna.pruners.NopPruner()
    raise AssertionError(f"unhandled pruner {config!r}")


def _require(module: str, message: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(message)
