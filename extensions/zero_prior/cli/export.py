"""``zero-prior export FILE --to DIR --format zip|comfyui|diffusers``: package a trained LoRA for another runtime."""

from __future__ import annotations

import argparse
from typing import Any

FORMAT_HELP = {
    "zip": "DIR/weights.zip: lora/lora_weights.safetensors + meta.json (Cog/Replicate predictors)",
    "comfyui": "folder DIR: loras/, embeddings/ (key qwen25_7b), meta.json, README.txt",
    "diffusers": "folder DIR: pytorch_lora_weights.safetensors (transformer.* keys, exact strength) + meta.json",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained LoRA + placeholder as a Cog weights.zip, for ComfyUI or for diffusers",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="formats:\n" + "\n".join(f"  {name:10s} {text}" for name, text in FORMAT_HELP.items()),
    )
    parser.add_argument("file", help="the trained .safetensors (or a weights.zip / exported folder)")
    parser.add_argument("--to", required=True, help="output folder")
    parser.add_argument("--format", required=True, choices=sorted(FORMAT_HELP), dest="fmt")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export at the same place")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..weights.export import export_weights

    print(export_weights(args.file, args.to, args.fmt, overwrite=args.overwrite).summary())
    return 0
