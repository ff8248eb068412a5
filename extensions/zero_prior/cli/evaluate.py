"""``zero-prior evaluate EXPERIMENT.yaml``: evaluate arms already trained, then write the report."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="generate held-out images from an experiment's trained arms, measure, compare and write the report",
    )
    parser.add_argument("spec", help="the EXPERIMENT.yaml the arms were trained with")
    parser.add_argument("--set", dest="values", action="append", default=[], metavar="NAME=VALUE",
                        help="fill a ${NAME} field of the experiment file or base job (repeatable)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite report.md, grids and plots from the existing metrics.json")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..experiment.evaluate import evaluate_experiment
    from ..experiment.report import write_report
    from ..experiment.spec import load_spec
    from .experiment import parse_values

    spec = load_spec(args.spec, parse_values(args.values))
    if not args.report_only:
        print(f"metrics: {evaluate_experiment(spec)}")
    print(f"report: {write_report(spec)}")
    return 0
