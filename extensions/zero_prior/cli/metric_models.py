"""``zero-prior metric-models --tiny --out DIR``: random tiny CLIP, DINOv2 and LPIPS backbone (tiny experiment)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``metric-models`` subcommand."""
    parser = subparsers.add_parser(
        "metric-models",
        help="write tiny random metric models (CLIP, DINOv2, LPIPS backbone) for the tiny experiment",
        description="Write DIR/clip, DIR/dino and DIR/torch (a TORCH_HOME holding a random LPIPS 'squeeze' "
                    "backbone). Their weights are random: scores made with them check the machinery and mean "
                    "nothing, and reports made with them say so.",
    )
    parser.add_argument("--tiny", action="store_true", required=True,
                        help="random tiny models (the only kind this command writes)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..testbed.metric_models import TINY_LPIPS_NET, write_tiny_metric_models

    written = write_tiny_metric_models(args.out, args.seed)
    print(f"CLIP_MODEL={written['clip']}\nDINO_MODEL={written['dino']}\nTORCH_HOME={written['torch_home']}  "
          f"(LPIPS net {TINY_LPIPS_NET!r})\nrandom weights: scores made with these models are not meaningful")
    return 0
