"""The study file: the one description of a study, validated completely before anything runs.

A study file is TOML with the sections ``[study]``, ``[sampler]``, ``[pruner]``, ``[data]``,
``[training]``, ``[space]``, ``[workers]`` and ``[artifacts]``; every key has a default except
the budget (``n_trials`` and/or ``timeout``). Validation reports every problem at once, each
naming its key.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from objectives.config import (
    METRICS,
    TABULAR,
    DataConfig,
    Direction,
    Measure,
    Metric,
    ObjectiveName,
    TrainingConfig,
    direction,
)
from objectives.goals import Goals
from objectives.pruning import CostAwareRule
from objectives.space import SearchSpace
from search.errors import UserError, shown
from search.registry import OBJECTIVES

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# The share of a time budget a trial may take unless it leads, where `max_trial_share` is left
# out (objectives.budget): judged on CIFAR-10 (docs/study-file.md, "A trial's share of the time").
DEFAULT_TRIAL_SHARE = 0.25


class _Section(BaseModel):
    # strict: a boolean is not a number (`n_trials = true` is no budget); every number finite
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class StudySection(_Section):
    name: str | None = Field(default=None, pattern=STUDY_NAME.pattern)
    objective: str = "keras-mlp"
    metric: Metric = "val_accuracy"
    direction: Literal["maximize", "minimize"] | None = None
    # Several objectives (a multi-objective study, its Pareto front): the validation metric
    # and what the model costs, e.g. ["val_accuracy", "n_params"]; directions follow from the
    # names. Or one objective with constraints on the costs: {n_params = 1_000_000}.
    objectives: list[ObjectiveName] | None = Field(default=None, min_length=1)
    constraints: dict[Measure, Annotated[float, Field(gt=0)]] = {}
    n_trials: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    seed: int = Field(default=0, ge=0, lt=2**31)
    # A new study without fixed trials tries the reference configurations first (the parts of
    # them that its space holds); see objectives.space.REFERENCES and docs/benchmarks.md.
    warm_start: StrictBool = True
    # With a `timeout`, a trial that has taken more than this share of it stops (pruned) unless
    # its best epoch leads the study then (objectives.budget); 1 turns the rule off. Studies of
    # one objective; left out, DEFAULT_TRIAL_SHARE (see `trial_share`).
    max_trial_share: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _metric_from_objectives(cls, data: Any) -> Any:
        """The validation metric among ``objectives`` is the study's metric."""
        if isinstance(data, dict) and isinstance(data.get("objectives"), list) \
                and "metric" not in data:
            metrics = [name for name in data["objectives"] if name in METRICS]
            if len(metrics) == 1:
                data = {**data, "metric": metrics[0]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> StudySection:
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"objective must be one of {sorted(OBJECTIVES)}, but got {self.objective!r}"
            )
        if self.n_trials is None and self.timeout is None:
            raise ValueError("give a budget: `n_trials`, `timeout` (seconds) or both")
        natural = direction(self.metric)
        if self.direction is not None and self.direction != natural:
            raise ValueError(
                f"direction {self.direction!r} does not fit metric {self.metric!r} "
                f"(it must be {natural!r}; leave it out to get it)"
            )
        if self.objectives is not None:
            self._check_objectives(self.objectives)
        if self.multi_objective and self.max_trial_share is not None:
            raise ValueError("max_trial_share: in a study of several objectives no one trial "
                             "leads (it keeps a Pareto front); leave it out")
        return self

    def _check_objectives(self, names: Sequence[str]) -> None:
        if len(set(names)) != len(names):
            raise ValueError(f"objectives: each name once, but got {names}")
        metrics = [name for name in names if name in METRICS]
        if len(metrics) != 1:
            raise ValueError(
                "objectives: exactly one validation metric (val_accuracy or val_loss) with "
                f"the measures to trade it against, but got {names}")
        if metrics[0] != self.metric:
            raise ValueError(f"objectives name {metrics[0]!r} but metric is {self.metric!r}: "
                             "leave metric out")
        if self.direction is not None and len(names) > 1:
            raise ValueError("direction: a study of several objectives takes each one's "
                             "direction from its name; leave it out")

    @property
    def goals(self) -> Goals:
        """The objectives in order and the constraints."""
        constraints = {str(name): limit for name, limit in self.constraints.items()}
        return Goals(tuple(self.objectives or (self.metric,)), constraints)

    @property
    def multi_objective(self) -> bool:
        return self.goals.multi

    @property
    def trial_share(self) -> float | None:
        """The share of the time budget a trial may take without leading; None in a study of
        several objectives, where none leads."""
        if self.multi_objective:
            return None
        return DEFAULT_TRIAL_SHARE if self.max_trial_share is None else self.max_trial_share

    @property
    def resolved_direction(self) -> Direction:
        return direction(self.metric)


# Samplers: each kind takes only its own arguments.
class TPESamplerSection(_Section):
    type: Literal["tpe"]
    n_startup_trials: int = Field(default=10, ge=0)
    multivariate: StrictBool = True
    group: StrictBool = True
    constant_liar: StrictBool = False


class RandomSamplerSection(_Section):
    type: Literal["random"]


class CmaEsSamplerSection(_Section):
    type: Literal["cmaes"]
    n_startup_trials: int = Field(default=1, ge=0)
    sigma0: float | None = Field(default=None, gt=0)
    restart_strategy: Literal["ipop", "bipop"] | None = None


class GPSamplerSection(_Section):
    type: Literal["gp"]
    n_startup_trials: int = Field(default=10, ge=0)


class QMCSamplerSection(_Section):
    type: Literal["qmc"]
    qmc_type: Literal["sobol", "halton"] = "sobol"
    scramble: StrictBool = True


class _GeneticSamplerSection(_Section):
    """The arguments Optuna's NSGA-II and NSGA-III share."""

    population_size: int = Field(default=50, ge=2)
    mutation_prob: float | None = Field(default=None, ge=0, le=1)
    crossover_prob: float = Field(default=0.9, ge=0, le=1)
    swapping_prob: float = Field(default=0.5, ge=0, le=1)


class NSGAIISamplerSection(_GeneticSamplerSection):
    """Optuna's NSGA-II, a genetic algorithm for several objectives."""

    type: Literal["nsga2"]


class NSGAIIISamplerSection(_GeneticSamplerSection):
    """Optuna's NSGA-III: NSGA-II with reference points, for three objectives or more."""

    type: Literal["nsga3"]


SamplerConfig = Annotated[
    Union[TPESamplerSection, RandomSamplerSection, CmaEsSamplerSection, GPSamplerSection,
          QMCSamplerSection, NSGAIISamplerSection, NSGAIIISamplerSection],
    Field(discriminator="type"),
]
# Samplers that take one objective only (Optuna's CMA-ES).
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)
# Pruners hpsearch applies itself, by cost, in studies of several objectives.
MULTI_OBJECTIVE_PRUNERS = ("percentile", "median", "none")


# Pruners: epochs are the steps they see. The percentile and median rules compare a trial with
# the completed trials at the same epoch (Optuna's way), or after the same seconds of training
# (search.equal_time_pruner).
CompareAt = Literal["epoch", "seconds"]


class MedianPrunerSection(_Section):
    type: Literal["median"]
    # Two complete trials (the warm start's, by default) set the bar: with 40 epochs per trial,
    # waiting for five would spend a 30-minute search on whole random trials.
    n_startup_trials: int = Field(default=2, ge=0)
    n_warmup_steps: int = Field(default=2, ge=0)
    interval_steps: int = Field(default=1, ge=1)
    compare_at: CompareAt = "epoch"


class PercentilePrunerSection(_Section):
    """Optuna's percentile pruner: at each epoch a trial whose best value so far is outside the
    top ``percentile`` % of the completed trials' values at that epoch is stopped."""

    type: Literal["percentile"]
    # The default stops the lowest fifth only. Completed trials are the strong ones, and good
    # configurations that learn slowly at first (large batches, small steps) trail them for
    # many epochs: replayed at the end of the search-efficiency benchmark's 30-minute studies,
    # one best trial fell below the completed trials' median at epoch 3 and into their lowest
    # quarter at epoch 6; no trial of the five best of two studies fell into their lowest
    # fifth. Keeping 90 % stopped no trial at all in a live study (docs/benchmarks.md).
    percentile: float = Field(default=80.0, gt=0.0, le=100.0)
    n_startup_trials: int = Field(default=2, ge=0)
    n_warmup_steps: int = Field(default=2, ge=0)
    interval_steps: int = Field(default=1, ge=1)
    # Judge an epoch only against three completed trials that reached it. With one, a trial
    # is held to that trial's curve: the benchmark lost one at 0.58 after 24 epochs, stopped
    # against the only completed trial that had trained that long.
    n_min_trials: int = Field(default=3, ge=1)
    compare_at: CompareAt = "epoch"


class SuccessiveHalvingPrunerSection(_Section):
    type: Literal["successive_halving"]
    min_resource: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, ge=2)
    min_early_stopping_rate: int = Field(default=0, ge=0)


class HyperbandPrunerSection(_Section):
    type: Literal["hyperband"]
    min_resource: int = Field(default=1, ge=1)
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, ge=2)


class WilcoxonPrunerSection(_Section):
    type: Literal["wilcoxon"]
    p_threshold: float = Field(default=0.1, gt=0, lt=1)
    n_startup_steps: int = Field(default=2, ge=0)


class NoPrunerSection(_Section):
    type: Literal["none"]


PrunerConfig = Annotated[
    Union[PercentilePrunerSection, MedianPrunerSection, SuccessiveHalvingPrunerSection,
          HyperbandPrunerSection, WilcoxonPrunerSection, NoPrunerSection],
    Field(discriminator="type"),
]


class WorkersSection(_Section):
    """How workers watch each other: heartbeats, retries of dead workers' trials, patience
    with an unreachable database. Not part of what must match when a study is resumed."""

    heartbeat_interval: int = Field(default=10, ge=1)
    grace_period: int = Field(default=60, ge=2)
    max_retry: int = Field(default=1, ge=0)
    storage_wait: float = Field(default=120.0, gt=0)
    # MB a worker may grow by after its first trial before it starts afresh (0: never); see
    # search/workers/fresh_start.py for what TensorFlow keeps.
    max_memory_growth: float = Field(default=256.0, ge=0)

    @model_validator(mode="after")
    def _grace_exceeds_interval(self) -> WorkersSection:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                "`grace_period > heartbeat_interval` must hold, but got (grace_period="
                f"{self.grace_period}, heartbeat_interval={self.heartbeat_interval})"
            )
        return self


class ArtifactsSection(_Section):
    """What each trial leaves besides its figures in the storage: plots, reports and the best
    models, in an artifact store. Not part of what must match when a study is resumed."""

    store: str | None = Field(default=None, min_length=1)
    keep_models: int = Field(default=3, ge=0)
    figures: StrictBool = True
    tensorboard: StrictBool = False
    tensorboard_dir: str | None = Field(default=None, min_length=1)

    @field_validator("store")
    @classmethod
    def _store_kind(cls, store: str | None) -> str | None:
        if store is not None and "://" in store and not store.startswith("s3://"):
            raise ValueError(f"a folder or s3://bucket, but got {store!r}")
        return store


class FixedTrial(BaseModel):
    """A configuration to run as it is, before the sampler proposes any (``[[fixed_trials]]``).

    Every key besides ``label``, ``max_epochs`` and ``hidden_layers`` is a parameter of the
    space by its name; ``hidden_layers = [512, 256]`` stands for ``n_layers = 2``,
    ``units_l0 = 512``, ``units_l1 = 256``.
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=True, allow_inf_nan=False)

    label: str = Field(min_length=1)
    max_epochs: int | None = Field(default=None, ge=1)
    hidden_layers: list[Annotated[int, Field(ge=1)]] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_depth(self) -> FixedTrial:
        if self.hidden_layers is None:
            return self
        extra = self.model_extra or {}
        given = extra.get("n_layers")
        if given is not None and given != len(self.hidden_layers):
            raise ValueError(f"hidden_layers {self.hidden_layers} has {len(self.hidden_layers)} "
                             f"layers but n_layers is {given!r}: give one of them")
        widths = sorted(name for name in extra if re.fullmatch(r"units_l\d+", name))
        if widths:
            raise ValueError(f"{', '.join(widths)} given beside hidden_layers "
                             f"{self.hidden_layers}, which sets the widths: give one of them")
        return self

    def params(self) -> dict[str, Any]:
        params = dict(self.model_extra or {})
        if self.hidden_layers is not None:
            params["n_layers"] = len(self.hidden_layers)
            params.update({f"units_l{i}": w for i, w in enumerate(self.hidden_layers)})
        return params


class StudyFile(_Section):
    """A whole study file, resolved: every default filled in."""

    study: StudySection
    sampler: SamplerConfig = TPESamplerSection(type="tpe")
    pruner: PrunerConfig = PercentilePrunerSection(type="percentile")
    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()
    space: SearchSpace = SearchSpace()
    workers: WorkersSection = WorkersSection()
    artifacts: ArtifactsSection = ArtifactsSection()
    fixed_trials: list[FixedTrial] = []

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            data.setdefault("study", {})
            for section, kind in (("sampler", "tpe"), ("pruner", "percentile")):
                if isinstance(data.get(section), dict):
                    data[section] = {"type": kind, **data[section]}
        return data

    @model_validator(mode="after")
    def _pruner_fits_training(self) -> StudyFile:
        pruner = self.pruner
        if isinstance(pruner, (SuccessiveHalvingPrunerSection, HyperbandPrunerSection)) \
                and isinstance(pruner.min_resource, int) \
                and not pruner.min_resource < self.training.max_epochs:
            # its first rung would come after the last epoch: it could never prune
            raise ValueError(
                "pruner.min_resource: `min_resource < training.max_epochs` must hold, but got "
                f"(min_resource={pruner.min_resource}, max_epochs={self.training.max_epochs})")
        if isinstance(pruner, HyperbandPrunerSection) and isinstance(pruner.max_resource, int):
            if not pruner.min_resource < pruner.max_resource <= self.training.max_epochs:
                raise ValueError(
                    "pruner.max_resource: `min_resource < max_resource <= training.max_epochs` "
                    "must hold, but "
                    f"got (min_resource={pruner.min_resource}, max_resource="
                    f"{pruner.max_resource}, max_epochs={self.training.max_epochs})"
                )
        return self

    @model_validator(mode="after")
    def _sampler_fits_objectives(self) -> StudyFile:
        if self.study.multi_objective and self.sampler.type in SINGLE_OBJECTIVE_SAMPLERS:
            raise ValueError(
                f"sampler.type: {self.sampler.type!r} takes one objective, but the study has "
                f"{len(self.study.goals.objectives)} ({list(self.study.goals.objectives)}); "
                "take tpe, nsga2, nsga3, gp or random")
        if self.study.multi_objective and self.pruner.type not in MULTI_OBJECTIVE_PRUNERS:
            raise ValueError(
                f"pruner.type: {self.pruner.type!r} cannot prune a study of several objectives "
                "(Optuna refuses their intermediate values); take percentile or median, which "
                "hpsearch applies among trials of no larger cost, or none")
        if self.study.multi_objective and getattr(self.pruner, "compare_at", "epoch") != "epoch":
            raise ValueError(
                "pruner.compare_at: 'seconds' judges a study of one objective; a study of "
                "several compares trials of no larger cost at the same epoch: leave it 'epoch'")
        return self

    @property
    def goals(self) -> Goals:
        """The study's goals with, for several objectives, the cost-aware pruning rule of its
        percentile or median pruner (``objectives.pruning``)."""
        goals = self.study.goals
        pruner = self.pruner
        if not goals.multi or not goals.cost_objectives:
            return goals
        rule: CostAwareRule | None = None
        if isinstance(pruner, PercentilePrunerSection):
            rule = CostAwareRule(pruner.percentile, pruner.n_startup_trials,
                                 pruner.n_warmup_steps, pruner.interval_steps,
                                 pruner.n_min_trials)
        elif isinstance(pruner, MedianPrunerSection):  # Optuna's median: percentile 50, 1 trial
            rule = CostAwareRule(50.0, pruner.n_startup_trials, pruner.n_warmup_steps,
                                 pruner.interval_steps, 1)
        return Goals(goals.objectives, goals.constraints, rule)

    @model_validator(mode="after")
    def _objective_fits_data(self) -> StudyFile:
        """The tabular objective takes a table's dataset, metric and space; the Keras MLP any
        other dataset."""
        tabular = self.study.objective == "tabular-mlp"
        if tabular != (self.data.dataset in TABULAR):
            raise ValueError(
                f"data.dataset: objective {self.study.objective!r} cannot take dataset "
                f"{self.data.dataset!r}: the tables (hpobench, fcnet) are the tabular-mlp "
                "objective's, the others the keras-mlp objective's")
        if not tabular:
            return self
        from objectives.tabular import TABLES

        metric = TABLES[self.data.dataset].metric
        given = self.model_fields_set
        problems = [problem for problem, broken in [
            (f"study.metric: dataset {self.data.dataset!r} records {metric}, so the study's "
             f"metric is {metric}", self.study.metric != metric),
            ("study.objectives, study.constraints: the tabular objective has one objective and "
             "no measures", self.study.multi_objective or bool(self.study.constraints)),
            ("space: the tabular objective's space is its table's: leave [space] out",
             "space" in given),
            ("study.warm_start: the reference configurations are the Keras MLP's: leave it "
             "out", "warm_start" in self.study.model_fields_set and self.study.warm_start),
        ] if broken]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def tabular(self) -> bool:
        """Whether the study looks its trials up in a table (``objectives.tabular``)."""
        return self.data.dataset in TABULAR

    @model_validator(mode="after")
    def _fixed_trials_fit_the_space(self) -> StudyFile:
        problems = [
            f"fixed_trials[{i}].{problem}"
            for i, fixed in enumerate(self.fixed_trials)
            for problem in self.space.check(fixed.params())
        ]
        labels = [fixed.label for fixed in self.fixed_trials]
        if len(set(labels)) != len(labels):
            problems.append(f"fixed_trials: labels must be distinct, but got {labels}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def name(self) -> str:
        assert self.study.name is not None  # filled from the file name by load()
        return self.study.name

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a stored study to be resumed with this file."""
        fingerprint: dict[str, Any] = {
            "objective": self.study.objective,
            "metric": self.study.metric,
            "space": self.space.fingerprint(),
        }
        # Only where set, so that studies made before these keys existed still resume.
        if self.study.multi_objective:
            fingerprint["objectives"] = list(self.study.goals.objectives)
        if self.study.constraints:
            fingerprint["constraints"] = dict(self.study.constraints)
        if self.tabular:
            fingerprint["table"] = f"{self.data.dataset}:{self.data.task}"
        return fingerprint


def load(path: str | Path, overrides: dict[str, dict[str, Any]] | None = None) -> StudyFile:
    """Read and validate a study file; ``overrides`` (from the command line) win over the file.

    Raises:
        UserError: the file is missing or is not TOML; ``StudyFileError`` where it breaks any
            rule, with every problem, one per line, each naming its key.
    """
    path = Path(path)
    try:
        # utf-8-sig: a byte-order mark, as some Windows editors write, is not TOML's
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such study file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a study file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the study file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(raw, overrides, name=path.stem, shown=str(path))


class StudyFileError(UserError):
    """A study's settings break rules: ``problems`` holds every one, one line each, as
    ``hpsearch validate`` prints them (the message is those lines, each after the source)."""

    def __init__(self, shown: str, problems: list[str]) -> None:
        super().__init__("\n".join(f"{shown}: {problem}" for problem in problems))
        self.problems = problems


def from_dict(settings: dict[str, Any], overrides: dict[str, dict[str, Any]] | None = None, *,
              name: str | None = None, shown: str = "study") -> StudyFile:
    """Validate a study's settings given as a study file's tables (``{"study": {...},
    "space": {...}, ...}``) exactly as :func:`load` validates a file; ``name`` is the study's
    name where ``[study] name`` gives none, ``shown`` what each problem is said to be in.

    Raises:
        StudyFileError: every problem, one per line, each naming its key.
    """
    raw = dict(settings)
    for section, values in (overrides or {}).items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            current = raw.get(section)
            raw[section] = {**(current if isinstance(current, dict) else {}), **given}
    study = raw.get("study")
    if name is not None:
        if isinstance(study, dict) and "name" not in study:
            raw["study"] = {**study, "name": name}
        elif "study" not in raw:
            raw["study"] = {"name": name}
    problems = _problems(raw)
    if problems:
        raise StudyFileError(shown, problems)
    return StudyFile.model_validate(raw)


def _problems(raw: dict[str, Any]) -> list[str]:
    """Every problem of a study file, one line each: the file without its fixed trials, then
    each fixed trial on its own, against the space (so that one trial's missing label does not
    hide the rest)."""
    fixed = raw.get("fixed_trials")
    problems: list[str] = []
    try:
        space: SearchSpace | None = StudyFile.model_validate(
            {k: v for k, v in raw.items() if k != "fixed_trials"}).space
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors()]
        try:
            space = SearchSpace.model_validate(raw.get("space", {}))
        except ValidationError:
            space = None
    if fixed is None:
        return problems
    study = raw.get("study")
    if isinstance(study, dict) and study.get("objective") == "tabular-mlp":
        return problems + ["fixed_trials: the tabular objective's configurations are its "
                           "table's: leave [[fixed_trials]] out"]
    if not isinstance(fixed, list) or not all(isinstance(t, dict) for t in fixed):
        return problems + ["fixed_trials: must be tables, [[fixed_trials]]"]
    for index, table in enumerate(fixed):
        try:
            params = FixedTrial.model_validate(table).params()
        except ValidationError as exc:
            problems += [_describe({**error, "loc": ("fixed_trials", index, *error["loc"])})
                         for error in exc.errors()]
            continue
        if space is not None:
            problems += [f"fixed_trials[{index}].{problem}" for problem in space.check(params)]
    labels = [table.get("label") for table in fixed]
    if len(set(map(str, labels))) != len(labels):
        problems.append(f"fixed_trials: labels must be distinct, but got {labels}")
    return problems


def _describe(error: Any) -> str:
    """One line for one pydantic error: the key, what must hold and what was given."""
    raw_loc = error["loc"]
    # the tag stands right after its section: `pruner.percentile.percentile` is the key
    # `pruner.percentile` of the percentile pruner
    loc = [part for i, part in enumerate(raw_loc)
           if not (i == 1 and raw_loc[0] in ("sampler", "pruner") and part in _TAGS)]
    if loc and loc[-1] == "value":  # the short form `key = 3` is validated as `value`
        loc = loc[:-1]
    loc = [part for part in loc if part != "[key]"]  # a table's key, not its value, is wrong
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        message = "unknown key" + _did_you_mean(error["loc"], loc)
    elif kind == "union_tag_invalid":
        tags = error["ctx"]["expected_tags"]
        return f"{key}.type: must be one of {tags}, but got {error['ctx']['tag']!r}"
    elif kind == "value_error":
        message = message.removeprefix("Value error, ")
    elif "input" in error and not isinstance(error["input"], (dict, list)):
        message = f"{message}, but got {shown(error['input'])}"
        if kind == "literal_error" and isinstance(error["input"], str):
            allowed = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
            close = difflib.get_close_matches(error["input"], allowed, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
    return f"{key}: {message}" if key else message


def _kinds(*unions: Any) -> dict[str, type[BaseModel]]:
    """Each sampler or pruner model by its ``type`` tag, read from the discriminated unions."""
    members = [model for union in unions for model in get_args(get_args(union)[0])]
    return {get_args(model.model_fields["type"].annotation)[0]: model for model in members}


# pydantic puts the chosen sampler's or pruner's tag into error locations
_KINDS = _kinds(SamplerConfig, PrunerConfig)
_TAGS = set(_KINDS)


def _did_you_mean(raw_loc: tuple[Any, ...], loc: list[Any]) -> str:
    name = str(loc[-1]) if loc else ""
    kind = raw_loc[1] if len(raw_loc) > 1 and raw_loc[0] in ("sampler", "pruner") \
        and raw_loc[1] in _TAGS else None
    if kind is not None:
        keys = [key for key in _KINDS[kind].model_fields if key != "type"]
        return f" for {loc[0]} type {kind!r} (it takes {keys or 'no arguments'})"
    candidates = [key for key in _known_keys(loc[:-1]) if key != name]
    close = difflib.get_close_matches(name, candidates, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if candidates and len(loc) == 3 and loc[0] == "space":
        return f" (`{loc[1]}` takes {', '.join(f'`{key}`' for key in candidates)})"
    return ""


def _known_keys(section: list[Any]) -> list[str]:
    models: dict[str, type[BaseModel]] = {
        "study": StudySection, "data": DataConfig, "training": TrainingConfig,
        "space": SearchSpace, "workers": WorkersSection, "artifacts": ArtifactsSection,
    }
    if not section:
        return list(StudyFile.model_fields)
    model = models.get(str(section[0]))
    if model is None:
        return []
    if len(section) == 1:
        return list(model.model_fields)
    field = model.model_fields.get(str(section[1]))
    annotation = field.annotation if field is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []
