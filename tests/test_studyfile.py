"""Study files: every problem reported at once, each naming its key and what must hold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from objectives.space import SearchSpace
from search import studyfile
from search.errors import UserError

REPO = Path(__file__).resolve().parent.parent
BUDGET = "[study]\nn_trials = 3\n"

BAD_FILES = [
    ("[study\nn_trials = 3\n",
     ["not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 7)"]),
    ("[study]\nseed = 1\n",
     ["study: give a budget: `n_trials`, `timeout` (seconds) or both"]),
    ("[study]\nn_trial = 3\n",
     ["study.n_trial: unknown key (did you mean 'n_trials'?)"]),
    (BUDGET + "[trainig]\nmax_epochs = 3\n",
     ["trainig: unknown key (did you mean 'training'?)"]),
    ("[study]\nn_trials = 0\n",
     ["study.n_trials: Input should be greater than or equal to 1, but got 0"]),
    ("[study]\ntimeout = -5\n",
     ["study.timeout: Input should be greater than 0, but got -5"]),
    (BUDGET + 'direction = "minimize"\n',
     ["study: direction 'minimize' does not fit metric 'val_accuracy' (it must be 'maximize'; "
      "leave it out to get it)"]),
    (BUDGET + 'name = "my study!"\n',
     ["study.name: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$', but got "
      "'my study!'"]),
    (BUDGET + f'name = "{"n" * 5000}"\n',  # not echoed whole
     ["study.name: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$', but got "
      f"'{'n' * 59}... (5000 characters)"]),
    (BUDGET + 'objective = "xgboost"\n',
     ["study: objective must be one of ['keras-mlp', 'tabular-mlp'], but got 'xgboost'"]),
    (BUDGET + '[sampler]\ntype = "bayes"\n',
     ["sampler.type: must be one of 'tpe', 'random', 'cmaes', 'gp', 'qmc', 'nsga2', 'nsga3', "
      "but got 'bayes'"]),
    (BUDGET + '[sampler]\ntype = "random"\nn_startup_trials = 5\n',
     ["sampler.n_startup_trials: unknown key for sampler type 'random' (it takes no arguments)"]),
    (BUDGET + '[pruner]\ntype = "asha"\n',
     ["pruner.type: must be one of 'percentile', 'median', 'successive_halving', 'hyperband', "
      "'wilcoxon', 'none', but got 'asha'"]),
    (BUDGET + '[pruner]\ntype = "hyperband"\nmax_resource = 50\n',
     ["pruner.max_resource: `min_resource < max_resource <= training.max_epochs` must hold, but "
      "got (min_resource=1, max_resource=50, max_epochs=40)"]),
    (BUDGET + '[data]\ndataset = "mnist"\n',
     ["data.dataset: Input should be 'stub', 'cifar10', 'images', 'hpobench' or 'fcnet', "
      "but got 'mnist'"]),
    (BUDGET + "[data]\nvalidation_fraction = 1.0\n",
     ["data.validation_fraction: Input should be less than 1, but got 1.0"]),
    (BUDGET + '[training]\nmax_epochs = "ten"\n',
     ["training.max_epochs: Input should be a valid integer, but got 'ten'"]),
    (BUDGET + "[training]\nmax_epochs = 3\npruning_interval = 5\n",
     ["training: `pruning_interval <= max_epochs` must hold, but got (pruning_interval=5, "
      "max_epochs=3)"]),
    (BUDGET + '[space]\noptimizer = ["adam", "adagrad"]\n',
     ["space.optimizer.choices[1]: Input should be 'adam', 'adamw', 'sgd', 'rmsprop', 'nadam' "
      "or 'lion', but got 'adagrad'"]),
    (BUDGET + '[space]\nlr_schedule = "cosin"\n',
     ["space.lr_schedule: Input should be 'plateau', 'cosine', 'warmup_cosine' or 'one_cycle', "
      "but got 'cosin' (did you mean 'cosine'?)"]),
    (BUDGET + '[space]\nwarmup_epochs = 3\n',
     ["space.warmup_epochs: applies only to lr_schedule 'warmup_cosine' or 'one_cycle', which "
      "`lr_schedule` does not allow (it allows ['plateau'])"]),
    (BUDGET + '[space]\nlr_schedule = ["plateau", "cosine"]\n'
     'final_lr_fraction = {low = 0.0, high = 1.5}\n',
     ["space.final_lr_fraction.high: Input should be less than or equal to 1, but got 1.5"]),
    (BUDGET + '[space]\npreprocessing = ["scale", "zac"]\n',
     ["space.preprocessing.choices[1]: Input should be 'scale', 'standardize', 'pca' or 'zca', "
      "but got 'zac' (did you mean 'zca'?)"]),
    (BUDGET + '[space]\npreprocessing = ["scale", "zca"]\npca_components = 256\n',
     ["space.pca_components: applies only to preprocessing 'pca', which `preprocessing` does "
      "not allow (it allows ['scale', 'zca'])"]),
    (BUDGET + '[space]\nlabel_smoothing = 1.0\n',
     ["space.label_smoothing: Input should be less than 1, but got 1.0"]),
    (BUDGET + '[space]\nactivation = "relux"\n',
     ["space.activation: Input should be 'relu', 'tanh', 'gelu', 'selu', 'elu', 'swish', "
      "'sigmoid' or 'leaky_relu', but got 'relux' (did you mean 'relu'?)"]),
    (BUDGET + "[space]\nactivation = []\n",
     ["space.activation.choices: List should have at least 1 item after validation, not 0"]),
    (BUDGET + "[space]\nactivation = {low = 1, high = 2}\n",
     ["space.activation.low: unknown key (`activation` takes `value`, `choices`)",
      "space.activation.high: unknown key (`activation` takes `value`, `choices`)"]),
    (BUDGET + '[space]\nbatch_norm = "yes"\n',
     ["space.batch_norm: Input should be a valid boolean, but got 'yes'"]),
    (BUDGET + "[space]\ndropout = {low = 0.1, high = 1.5}\n",
     ["space.dropout.high: Input should be less than 1, but got 1.5"]),
    (BUDGET + "[space]\nunits = {low = 512, high = 32}\n",
     ["space.units: `low <= high` must hold, but got (low=512, high=32)"]),
    (BUDGET + "[space]\nunits = {low = 3}\n",
     ["space.units: a range needs both `low` and `high`, but got (low=3, high=None)"]),
    (BUDGET + "[space]\nunits = {value = 3, low = 1, high = 4}\n",
     ["space.units: give exactly one of a value, `choices` or `low` and `high`, but got "
      "['value', 'low/high']"]),
    (BUDGET + "[space]\nl2 = {low = 0.0, high = 1e-3, log = true}\n",
     ["space.l2: a log-scale range needs `low > 0`, but got (low=0.0)"]),
    (BUDGET + "[space]\nbatch_size = [64, 64]\n",
     ["space.batch_size: choices must be distinct, but got [64, 64]"]),
    (BUDGET + "[space]\nn_layers = {low = 0, high = 40}\n",
     ["space.n_layers.low: Input should be greater than or equal to 1, but got 0",
      "space.n_layers.high: Input should be less than or equal to 16, but got 40"]),
    (BUDGET + '[[fixed_trials]]\nlabel = "a"\nhidden_layers = [5000]\ndropout = 0.9\nfoo = 1\n',
     ["fixed_trials[0].dropout: 0.9 is outside the space ([0.0, 0.5])",
      "fixed_trials[0].foo: not a parameter of the space",
      "fixed_trials[0].units_l0: 5000 is outside the space ([32, 1024], log)"]),
    # every problem of every fixed trial at once: a missing label hides nothing
    (BUDGET + '[training]\nmax_epochs = 0\n[[fixed_trials]]\nmax_epochs = 0\nlearnig_rate = 0.1\n'
     '[[fixed_trials]]\nlabel = "b"\nlearnig_rate = 0.1\n[[fixed_trials]]\nlabel = "b"\n',
     ["training.max_epochs: Input should be greater than or equal to 1, but got 0",
      "fixed_trials[0].label: Field required",
      "fixed_trials[0].max_epochs: Input should be greater than or equal to 1, but got 0",
      "fixed_trials[1].learnig_rate: not a parameter of the space (did you mean "
      "'learning_rate'?)",
      "fixed_trials: labels must be distinct, but got [None, 'b', 'b']"]),
    (BUDGET + "[pruner]\npercentile = 150\n",
     ["pruner.percentile: Input should be less than or equal to 100, but got 150"]),
    (BUDGET + "[space]\nl2 = {low = -1e-5, high = 1e-3, log = true}\n",
     ["space.l2: a log-scale range needs `low > 0`, but got (low=-1e-05)"]),
    ('[study]\nn_trials = 2\nwarm_start = "yes"\n[training]\nfused_optimizer = "no"\n',
     ["study.warm_start: Input should be a valid boolean, but got 'yes'",
      "training.fused_optimizer: Input should be a valid boolean, but got 'no'"]),
    (BUDGET + '[space]\noptimizer = ["adam", "adamw"]\nmomentum = 0.9\n',
     ["space.momentum: applies only to optimizer 'sgd', which `optimizer` does not allow (it "
      "allows ['adam', 'adamw'])"]),
    # every bound finite, NaN refused (a range to inf passed and ended in an OverflowError)
    (BUDGET + "[space]\nlearning_rate = {low = 1e-3, high = inf, log = true}\n",
     ["space.learning_rate.high: Input should be a finite number, but got inf"]),
    (BUDGET + "[space]\ndropout = nan\n",
     ["space.dropout: Input should be a finite number, but got nan"]),
    ("[study]\ntimeout = inf\n[study.constraints]\nn_params = nan\n",
     ["study.constraints.n_params: Input should be a finite number, but got nan",
      "study.timeout: Input should be a finite number, but got inf"]),
    # booleans are not numbers anywhere in the file
    ("[study]\nn_trials = true\n",
     ["study.n_trials: Input should be a valid integer, but got True"]),
    (BUDGET + "[training]\nmax_epochs = false\n[space]\nunits = true\n"
     "[[fixed_trials]]\nlabel = \"a\"\nmax_epochs = true\n",
     ["training.max_epochs: Input should be a valid integer, but got False",
      "space.units: Input should be a valid integer, but got True",
      "fixed_trials[0].max_epochs: Input should be a valid integer, but got True"]),
    # a pruner that could never prune is refused alike by successive halving and hyperband
    (BUDGET + '[training]\nmax_epochs = 2\n[pruner]\ntype = "successive_halving"\n'
     "min_resource = 100\n",
     ["pruner.min_resource: `min_resource < training.max_epochs` must hold, but got "
      "(min_resource=100, max_epochs=2)"]),
    (BUDGET + '[training]\nmax_epochs = 2\n[pruner]\ntype = "hyperband"\n'
     "min_resource = 100\n",
     ["pruner.min_resource: `min_resource < training.max_epochs` must hold, but got "
      "(min_resource=100, max_epochs=2)"]),
    # a fixed trial that contradicts itself, or sets what its own choices leave unused
    (BUDGET + '[[fixed_trials]]\nlabel = "a"\nhidden_layers = [32]\nn_layers = 2\n',
     ["fixed_trials[0]: hidden_layers [32] has 1 layers but n_layers is 2: give one of them"]),
    (BUDGET + '[[fixed_trials]]\nlabel = "a"\nhidden_layers = [32]\nunits_l0 = 64\n',
     ["fixed_trials[0]: units_l0 given beside hidden_layers [32], which sets the widths: give "
      "one of them"]),
    (BUDGET + '[[fixed_trials]]\nlabel = "a"\noptimizer = "adam"\nweight_decay = 1e-4\n'
     "n_layers = 1\nunits_l0 = 64\nunits_l1 = 64\n",
     ["fixed_trials[0].weight_decay: applies only to optimizer 'adamw', but the trial's "
      "optimizer is 'adam'",
      "fixed_trials[0].units_l1: the trial has 1 layers (n_layers), so it has no layer 1"]),
    (BUDGET + '[space]\noptimizer = "sgd"\n[[fixed_trials]]\nlabel = "a"\nrho = 0.9\n',
     ["fixed_trials[0].rho: applies only to optimizer 'rmsprop', but the trial's optimizer "
      "is 'sgd'"]),
]


@pytest.mark.parametrize(("text", "problems"), BAD_FILES)
def test_bad_study_file_lists_every_problem(
    write_study: Callable[..., Path], text: str, problems: list[str]
) -> None:
    path = write_study(text, name="bad.toml")
    with pytest.raises(UserError) as caught:
        studyfile.load(path)
    assert str(caught.value).splitlines() == [f"{path}: {problem}" for problem in problems]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope.toml: no such study file$"):
        studyfile.load(tmp_path / "nope.toml")


def test_several_sections_wrong_at_once(write_study: Callable[..., Path]) -> None:
    path = write_study('[study]\nn_trials = 0\n[data]\ndataset = "x"\n[space]\ndropout = 2.0\n')
    with pytest.raises(UserError) as caught:
        studyfile.load(path)
    keys = [line.split(": ")[1] for line in str(caught.value).splitlines()]
    assert keys == ["study.n_trials", "data.dataset", "space.dropout"]


def test_minimal_file_gets_every_default(write_study: Callable[..., Path]) -> None:
    spec = studyfile.load(write_study("[study]\nn_trials = 5\n", name="minimal.toml"))
    assert spec.name == "minimal"
    assert spec.study.resolved_direction == "maximize"
    assert spec.sampler.type == "tpe" and spec.pruner.type == "percentile"
    assert spec.pruner.percentile == 80.0  # type: ignore[union-attr]
    assert spec.space == SearchSpace()
    assert spec.data.dataset == "stub" and spec.data.validation_fraction == 0.1


def test_val_loss_minimizes(write_study: Callable[..., Path]) -> None:
    spec = studyfile.load(write_study('[study]\nn_trials = 1\nmetric = "val_loss"\n'))
    assert spec.study.resolved_direction == "minimize"


def test_command_line_overrides_win(write_study: Callable[..., Path]) -> None:
    spec = studyfile.load(write_study(), {"study": {"n_trials": 9, "timeout": None}})
    assert spec.study.n_trials == 9 and spec.study.timeout is None


def test_sampler_without_type_is_tpe(write_study: Callable[..., Path]) -> None:
    spec = studyfile.load(write_study(BUDGET + "[sampler]\nn_startup_trials = 4\n"))
    assert spec.sampler.type == "tpe" and spec.sampler.n_startup_trials == 4


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_study_files_are_valid(path: Path) -> None:
    studyfile.load(path)


def test_a_study_file_with_a_byte_order_mark_and_crlf_line_ends_loads(tmp_path: Path) -> None:
    path = tmp_path / "windows.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'[study]\r\nn_trials = 3\r\n[space]\r\n'
                     b'activation = ["relu", "tanh"]\r\n')
    spec = studyfile.load(path)
    assert spec.study.n_trials == 3 and spec.space.activation.choices == ["relu", "tanh"]
