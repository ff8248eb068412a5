"""``run_experiment``: captions -> every arm through ai-toolkit -> evaluation -> report, in one call."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..aitk.checkout import find_ai_toolkit
from .arms import build_arm_jobs
from .evaluate import evaluate_experiment
from .layout import LOG_FILE, read_log, write_log
from .report import write_report
from .spec import ExperimentSpec
from .train import input_hashes, prepare_captions, start_log, train_arms


@dataclass(frozen=True)
class ExperimentResult:
    """Where the experiment's outputs are."""

    log: Path
    metrics: Path | None
    report: Path | None


def run_experiment(
    spec: ExperimentSpec,
    ai_toolkit: str | os.PathLike[str] | None = None,
    fresh: bool = False,
    evaluate: bool = True,
    echo: bool = True,
    env: Mapping[str, str] | None = None,
) -> ExperimentResult:
    """Captions -> every arm through ai-toolkit -> evaluation -> report.

    ``fresh`` deletes earlier runs of these jobs first; ``env`` adds variables
    for the ``run.py`` subprocesses (for example ``HF_HUB_OFFLINE=1``).

    Example::

        result = run_experiment(load_spec("experiment.yaml"))
        result.report  # -> PosixPath('.../experiments/my_subject/report.md')
    """
    checkout = find_ai_toolkit(ai_toolkit)
    jobs = build_arm_jobs(spec)
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    log = start_log(spec, checkout)
    log["arms"] = read_log(spec.output_dir).get("arms", [])  # how reused results were made, kept by train_arms
    log["captions"] = prepare_captions(spec)
    log["inputs"] = input_hashes(spec)
    write_log(spec.output_dir, log)
    train_arms(spec, jobs, checkout, log, fresh=fresh, echo=echo, env=env)
    if not evaluate:
        return ExperimentResult(spec.output_dir / LOG_FILE, None, None)
    metrics = evaluate_experiment(spec, jobs, echo=echo)
    report = write_report(spec, jobs)
    return ExperimentResult(spec.output_dir / LOG_FILE, metrics, report)
