"""The entries of a search space: one hyperparameter each, fixed, one of some choices, or a
range, as a study file's ``[space]`` writes them::

    activation = "relu"                                   # fixed to one value
    activation = ["relu", "tanh", "gelu"]                 # choices (also {choices = [...]})
    learning_rate = {low = 1e-4, high = 1e-2, log = true} # inclusive range (numbers only)

``Entries`` is the base of every group of entries: the core MLP's (``objectives.space``) and
each training recipe's (``objectives.recipes``), which ``SearchSpace`` puts together. This
module imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

import optuna
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator


class Entries(BaseModel):
    """A group of space entries; every entry has a default, so a study file overrides only
    what it needs."""

    # strict: a boolean is not a number (`n_trials = true` is no budget); every number finite
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


T = TypeVar("T")


class _Param(BaseModel, Generic[T]):
    """One hyperparameter: a fixed ``value``, a list of ``choices`` or a ``low``/``high`` range."""

    # booleans are not numbers, and every bound is finite
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    value: T | None = None
    choices: list[T] | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"choices": data}
        if isinstance(data, dict):
            return data
        return {"value": data}

    def _forms(self) -> list[str]:
        return [name for name in ("value", "choices") if getattr(self, name) is not None]

    @model_validator(mode="after")
    def _one_form(self) -> _Param[T]:
        forms = self._forms()
        if len(forms) != 1:
            raise ValueError(
                f"give exactly one of {self._form_names()}, but got {forms or 'none of them'}"
            )
        if self.choices is not None and len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"choices must be distinct, but got {self.choices}")
        return self

    @classmethod
    def _form_names(cls) -> str:
        return "a value or `choices`"

    @property
    def fixed(self) -> bool:
        return self.value is not None or (self.choices is not None and len(self.choices) == 1)

    def describe(self) -> str:
        if self.value is not None:
            return f"fixed {self.value!r}"
        return f"one of {self.choices!r}"

    def contains(self, value: Any) -> bool:
        if self.value is not None:
            return bool(value == self.value and type(value) is type(self.value))
        assert self.choices is not None
        return any(value == c and type(value) is type(c) for c in self.choices)

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Any:
        if self.value is not None:
            return trial.suggest_categorical(name, [self.value])  # type: ignore[list-item]
        assert self.choices is not None
        return trial.suggest_categorical(name, self.choices)  # type: ignore[arg-type]


class Categorical(_Param[T], Generic[T]):
    """A categorical hyperparameter: fixed or one of some choices."""


class Numeric(_Param[T], Generic[T]):
    """A numeric hyperparameter: fixed, one of some choices, or an inclusive range."""

    low: T | None = None
    high: T | None = None
    log: StrictBool = False
    step: T | None = None

    def _forms(self) -> list[str]:
        forms = super()._forms()
        if self.low is not None or self.high is not None:
            forms.append("low/high")
        return forms

    @classmethod
    def _form_names(cls) -> str:
        return "a value, `choices` or `low` and `high`"

    @model_validator(mode="before")
    @classmethod
    def _log_needs_positive_low(cls, data: Any) -> Any:
        # Before the bounds' own checks, which would say ">= 0" for a rate although a log
        # scale refuses 0 as well.
        if isinstance(data, dict) and data.get("log") is True:
            low = data.get("low")
            if isinstance(low, (int, float)) and not isinstance(low, bool) and low <= 0:
                raise ValueError(f"a log-scale range needs `low > 0`, but got (low={low})")
        return data

    @model_validator(mode="after")
    def _valid_range(self) -> Numeric[T]:
        if self.low is None and self.high is None:
            if self.log or self.step is not None:
                raise ValueError("`log` and `step` apply only to a `low`/`high` range")
            return self
        if self.low is None or self.high is None:
            raise ValueError(
                f"a range needs both `low` and `high`, but got (low={self.low}, high={self.high})"
            )
        if self.low > self.high:  # type: ignore[operator]
            raise ValueError(f"`low <= high` must hold, but got (low={self.low}, high={self.high})")
        if self.log and self.low <= 0:  # type: ignore[operator]
            raise ValueError(f"a log-scale range needs `low > 0`, but got (low={self.low})")
        if self.log and self.step is not None:
            raise ValueError("`step` cannot be combined with `log = true`")
        if self.step is not None and self.step <= 0:  # type: ignore[operator]
            raise ValueError(f"`step > 0` must hold, but got (step={self.step})")
        return self

    @property
    def fixed(self) -> bool:
        return super().fixed or (self.low is not None and self.low == self.high)

    def describe(self) -> str:
        if self.low is None:
            return super().describe()
        scale = ", log" if self.log else ""
        step = f", step {self.step}" if self.step is not None else ""
        return f"[{self.low}, {self.high}]{scale}{step}"

    def contains(self, value: Any) -> bool:
        if self.low is None:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                allowed = [self.value] if self.value is not None else self.choices or []
                return any(value == v for v in allowed)
            return False
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(self.low, int) and not isinstance(value, int):
            return False
        return self.low <= value <= self.high  # type: ignore[operator]

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Any:
        if self.low is None:
            return super().suggest(trial, name)
        low, high, step = self.low, self.high, self.step  # T is int or float here
        step_value: Any = step
        if isinstance(low, int) and isinstance(high, int):
            return trial.suggest_int(name, low, high,
                                     step=1 if step is None else int(step_value), log=self.log)
        assert isinstance(low, (int, float)) and isinstance(high, (int, float))
        return trial.suggest_float(name, float(low), float(high), log=self.log,
                                   step=None if step is None else float(step_value))


Depth = Annotated[int, Field(ge=1, le=16)]
Width = Annotated[int, Field(ge=1, le=65536)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Positive = Annotated[float, Field(gt=0.0)]
BatchSize = Annotated[int, Field(ge=1, le=65536)]
Rho = Annotated[float, Field(gt=0.0, lt=1.0)]
Epochs = Annotated[int, Field(ge=1, le=10000)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Shift = Annotated[int, Field(ge=0, le=16)]
