"""``zero-prior install --ai-toolkit PATH | --comfyui PATH``: put the package into ai-toolkit or ComfyUI."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("install", help="link (or copy) the package into ai-toolkit or ComfyUI")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--ai-toolkit", metavar="PATH", help="the ai-toolkit checkout (holds run.py): the extension "
                       "and the example configs")
    where.add_argument("--comfyui", metavar="PATH", help="the ComfyUI checkout (holds main.py): the custom node "
                       '"Load zero-prior LoRA" in custom_nodes/zero_prior')
    parser.add_argument("--copy", action="store_true", help="copy the package instead of linking it")
    parser.add_argument("--uninstall", action="store_true", help="remove what install added")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.comfyui is not None:
        from ..comfyui.install import install, uninstall

        path = args.comfyui
    else:
        from ..aitk.install import install, uninstall

        path = args.ai_toolkit
    report = uninstall(path) if args.uninstall else install(path, copy=args.copy)
    print(report.summary())
    return 0
