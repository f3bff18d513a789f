"""Screenshots of a study in optuna-dashboard (a trial's page with its artifacts) and of its
HTML report, taken with headless Chromium (Debian's ``chromium`` package).

Run: .venv/bin/python scripts/screenshots.py [--storage URL] [--study NAME] [--trial N]
         [--out docs] [--prefix NAME-]

Without ``--storage`` it runs ``studies/smoke.toml`` in a temporary folder first. It writes
``dashboard-trial.png`` and ``report.png`` into ``--out``, and for a study of several
objectives ``dashboard-study.png`` too (the dashboard's page of the study, with its Pareto
front), each name after ``--prefix``. The trial shown is the best one, or for several
objectives the trial of the Pareto front with the best validation metric.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HPSEARCH = Path(sys.executable).parent / "hpsearch"
# Chromium as a headless test browser on a machine with no outside network: without these
# flags it keeps trying to reach Google's services.
QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def render(url: str, *, screenshot: Path | None = None, size: str = "1400,1800",
           wait_ms: int = 15000) -> str:
    """Load ``url`` in headless Chromium, let its scripts run for ``wait_ms`` of virtual time,
    and return the resulting DOM (or write a screenshot)."""
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium: apt-get install chromium chromium-driver")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        args = [chromium, *QUIET, f"--user-data-dir={profile}", f"--window-size={size}",
                f"--virtual-time-budget={wait_ms}"]
        args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        done = subprocess.run([*args, url], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-500:]}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def dashboard(storage: str, cwd: Path) -> Iterator[str]:
    """``hpsearch dashboard`` on ``storage`` until the block ends; yields its base URL."""
    port = free_port()
    process = subprocess.Popen([str(HPSEARCH), "dashboard", "--storage", storage, "--port",
                                str(port)], cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/studies", timeout=2).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dashboard did not start: {process.stderr.read()}"
                                       if process.stderr else "dashboard did not start")
                time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage")
    parser.add_argument("--study", default=None)
    parser.add_argument("--trial", type=int, default=None, help="default: the best trial")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--prefix", default="", help="before each file's name")
    args = parser.parse_args()
    import optuna

    sys.path.insert(0, str(REPO))
    from search.results import fronts

    with tempfile.TemporaryDirectory(prefix="screenshots-") as tmp:
        work = Path(tmp)
        storage = args.storage
        if storage is None:
            storage = f"sqlite:///{work / 'hpsearch.db'}"
            subprocess.run([str(HPSEARCH), "run", str(REPO / "studies" / "smoke.toml"),
                            "--storage", storage], cwd=work, check=True)
        names = optuna.get_all_study_names(storage)
        name = args.study or names[0]
        study = optuna.load_study(study_name=name, storage=storage)
        if args.trial is not None:
            trial = study.trials[args.trial]
        else:
            best = fronts.best_trials(study)  # best validation metric first
            if not best:
                raise SystemExit(f"study {name} has no complete trial to show")
            trial = best[0]
        study_id = study._study_id
        args.out.mkdir(parents=True, exist_ok=True)
        written = [args.out / f"{args.prefix}{file}" for file in
                   ("report.png", "dashboard-trial.png", "dashboard-study.png")]
        subprocess.run([str(HPSEARCH), "report", "--storage", storage, "--study", name,
                        "--output", str(work / "report")], cwd=work, check=True)
        render((work / "report" / "report.html").as_uri(), screenshot=written[0],
               size="1400,2400")
        with dashboard(storage, work) as base:
            render(f"{base}/dashboard/studies/{study_id}/trials?numbers={trial.number}",
                   screenshot=written[1], size="1400,1500")
            if fronts.multi_objective(study):
                render(f"{base}/dashboard/studies/{study_id}", screenshot=written[2],
                       size="1400,1500")
            else:
                written.pop()
    print(f"wrote {', '.join(str(path) for path in written)} (study {name}, "
          f"trial {trial.number})")


if __name__ == "__main__":
    main()
