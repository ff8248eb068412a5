"""``zero-prior install --ai-toolkit PATH``: put the extension and example configs into ai-toolkit."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("install", help="link (or copy) the extension into an ai-toolkit checkout")
    parser.add_argument("--ai-toolkit", required=True, metavar="PATH", help="the ai-toolkit checkout (holds run.py)")
    parser.add_argument("--copy", action="store_true", help="copy the extension instead of linking it")
    parser.add_argument("--uninstall", action="store_true", help="remove what install added")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..aitk.install import install, uninstall

    report = uninstall(args.ai_toolkit) if args.uninstall else install(args.ai_toolkit, copy=args.copy)
    print(report.summary())
    return 0
