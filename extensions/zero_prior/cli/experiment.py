"""``zero-prior experiment EXPERIMENT.yaml``: every arm through ai-toolkit, then evaluation and report."""

from __future__ import annotations

import argparse
import os
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="train every arm of an experiment through ai-toolkit's run.py, evaluate them and write the report",
    )
    parser.add_argument("spec", help="EXPERIMENT.yaml: a base ai-toolkit job plus an experiment: block")
    parser.add_argument("--set", dest="values", action="append", default=[], metavar="NAME=VALUE",
                        help="fill a ${NAME} field of the experiment file or base job (repeatable); "
                             "environment variables fill the rest")
    parser.add_argument("--ai-toolkit", metavar="PATH", help="ai-toolkit checkout (default $AI_TOOLKIT_DIR or "
                                                             "~/ai-toolkit)")
    parser.add_argument("--fresh", action="store_true", help="delete earlier runs of these jobs and retrain every arm")
    parser.add_argument("--dry-run", action="store_true",
                        help="write the arms' jobs, print how each differs from the baseline and the smallest "
                             "adjusted p the design can reach per comparison family; train nothing")
    parser.add_argument("--no-evaluate", action="store_true", help="train only; run `zero-prior evaluate` later")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..experiment.pipeline import run_experiment
    from ..experiment.spec import load_spec

    spec = load_spec(args.spec, parse_values(args.values))
    if args.dry_run:
        return dry_run(spec)
    result = run_experiment(spec, ai_toolkit=args.ai_toolkit, fresh=args.fresh, evaluate=not args.no_evaluate)
    print(f"experiment log: {result.log}")
    if result.report is not None:
        print(f"metrics: {result.metrics}\nreport: {result.report}")
    return 0


def parse_values(pairs: list[str]) -> dict[str, str]:
    """The environment plus ``--set NAME=VALUE`` pairs (which win); a pair without '=' is an error."""
    from ..errors import ConfigError

    values = dict(os.environ)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--set {pair!r}: write NAME=VALUE, e.g. --set DATASET_PATH=/data/me")
        values[name] = value
    return values


def dry_run(spec: Any) -> int:
    """Write the jobs under OUTPUT/jobs, print each arm's differences from the baseline and what verdicts can reach."""
    from ..aitk.launch import write_config
    from ..experiment.arms import build_arm_jobs, job_differences
    from ..experiment.design import design_lines
    from ..experiment.layout import JOBS_FOLDER

    jobs = build_arm_jobs(spec)
    folder = spec.output_dir / JOBS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        write_config(job.job, folder / f"{job.name}.yaml")
    for seed in spec.training_seeds:
        baseline = next(job for job in jobs if job.arm == "baseline" and job.training_seed == seed)
        for job in jobs:
            if job.training_seed == seed:
                changes = job_differences(baseline.job, job.job)
                print(f"{job.name}: " + ("the reference" if job is baseline else
                      "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())))
    print(f"jobs written to {folder}")
    for line in design_lines(spec):
        print(f"statistics: {line}")
    return 0
