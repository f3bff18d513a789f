"""optuna-dashboard in a real browser: a trial's page lists the trial's artifacts.

Needs Chromium (Debian's ``chromium`` package); without it the test is skipped, saying so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from screenshots import dashboard, find_chromium, render  # noqa: E402

from conftest import stub_study_text  # noqa: E402
from search.cli import cli  # noqa: E402

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="no Chromium (apt-get install chromium)")


def test_a_trials_page_lists_its_artifacts(tmp_path: Path) -> None:
    study_file = tmp_path / "tiny.toml"
    study_file.write_text(stub_study_text(artifacts={"figures": True}))
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    result = CliRunner().invoke(cli, ["run", str(study_file), "--storage", url])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage=url)
    best = study.best_trial
    pruned_or_other = [t for t in study.trials if t.number != best.number
                       and t.state == TrialState.COMPLETE]

    with dashboard(url, tmp_path) as base:
        page = render(f"{base}/dashboard/studies/{study._study_id}/trials?numbers={best.number}")
    assert f"Trial {best.number}" in page
    assert "Artifacts" in page
    for name in ("curves.png", "confusion_matrix.png", "classification_report.txt",
                 f"model-trial-{best.number}.keras"):
        assert name in page, name
    # the images are served: the page shows them from the dashboard's artifact route
    assert f"/artifacts/{study._study_id}/{best._trial_id}/" in page
    for other in pruned_or_other:
        assert f"model-trial-{other.number}.keras" not in page
