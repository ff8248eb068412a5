"""``zero-prior generate``: one image from a pipeline folder (any supported family) and an optional zero-prior LoRA."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("generate", help="generate an image with a zero-prior LoRA (progress bar shown)")
    parser.add_argument("--model", required=True,
                        help="pipeline folder or hub name (e.g. Qwen/Qwen-Image, Tongyi-MAI/Z-Image-Turbo)")
    parser.add_argument("--lora", help="LoRA .safetensors written by a zero-prior or baseline training")
    parser.add_argument("--prompt", required=True, help='prompt, e.g. "a photo of <zwx> on a beach"')
    parser.add_argument("--out", required=True, help="output image path (.png)")
    parser.add_argument("--lora-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--cfg", type=float, default=1.0,
                        help="CFG scale (true_cfg_scale; guidance_scale on Z-Image); above 1 uses --negative-prompt")
    parser.add_argument("--negative-prompt", default=None)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..serving.generate import generate_to_file

    result = generate_to_file(
        args.model,
        args.prompt,
        args.out,
        lora=args.lora,
        lora_scale=args.lora_scale,
        seed=args.seed,
        steps=args.steps,
        height=args.height,
        width=args.width,
        true_cfg_scale=args.cfg,
        negative_prompt=args.negative_prompt,
    )
    if result is not None:
        print(result.summary())
    print(f"wrote {args.out}")
    return 0
