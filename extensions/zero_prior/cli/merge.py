"""``zero-prior merge A.safetensors B.safetensors ... -o OUT``: merge LoRAs, keeping the placeholder."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="merge LoRA files exactly into one, keeping the (one) placeholder vector; "
             "ai-toolkit's UI Merge LoRAs drops it",
    )
    parser.add_argument("files", nargs="+", help="LoRA .safetensors files (at most one placeholder among them)")
    parser.add_argument("-o", "--output", required=True, help="the merged .safetensors to write")
    parser.add_argument("--strength", type=float, action="append", dest="strengths",
                        help="scale of each file's LoRA update, once per file in order (default 1.0 each); "
                             "the placeholder vector is not scaled")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..weights.merge import merge_loras

    print(merge_loras(args.files, args.output, args.strengths, overwrite=args.overwrite).summary())
    return 0
