"""``zero-prior demo``: baseline vs zero-prior on the built-in tiny model, through real ai-toolkit."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..models import DEFAULT_FAMILY, family_named
from ..testbed.tiny_model import BUILDERS

# A family zero-prior cannot train through ai-toolkit (ModelFamily.training_refusal) has no demo.
DEMO_FAMILIES = sorted(name for name in BUILDERS if family_named(name).training_refusal() is None)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="train baseline and zero-prior on the tiny built-in model through ai-toolkit and compare"
    )
    parser.add_argument("--out", type=Path, default=Path("zero_prior_demo"), help="output folder (default "
                                                                                  "./zero_prior_demo)")
    parser.add_argument("--ai-toolkit", metavar="PATH", help="ai-toolkit checkout (default $AI_TOOLKIT_DIR or "
                                                             "~/ai-toolkit)")
    parser.add_argument("--steps", type=int, default=4, help="training steps per arm (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="subject and generation seed")
    parser.add_argument("--family", default=DEFAULT_FAMILY.name, choices=DEMO_FAMILIES,
                        help=f"model family of the tiny model (default {DEFAULT_FAMILY.name})")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..testbed.demo import run_demo

    result = run_demo(args.out, ai_toolkit=args.ai_toolkit, steps=args.steps, seed=args.seed, family=args.family)
    print(result.summary)
    print(f"done in {result.seconds:.0f} s; training log: {result.log}")
    return 0
