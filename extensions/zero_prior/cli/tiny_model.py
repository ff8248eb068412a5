"""``zero-prior tiny-model``: write a tiny test bed of a model family (and optionally a subject data set).

Lets a user try the whole train -> save -> load -> generate path on a laptop
CPU in seconds, with the real architectures and the real tokenizer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..testbed.tiny_model import BUILDERS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tiny-model`` subcommand."""
    parser = subparsers.add_parser(
        "tiny-model",
        help="write a tiny random-weight pipeline folder (Qwen-Image or another family) for CPU tests",
        description=(
            "Write a diffusers-layout pipeline folder of a model family with the real classes, tiny configs, "
            "seeded random fp32 weights and the family's real tokenizer; optionally also "
            "a procedurally drawn subject data set (NNN.png + NNN.txt)."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, help="new or empty folder for the pipeline")
    parser.add_argument("--seed", type=int, default=0, help="weight seed; the same seed gives identical files")
    parser.add_argument("--family", default="qwen_image", choices=sorted(BUILDERS),
                        help="model family to build (default qwen_image)")
    parser.add_argument("--subject", type=Path, help="also write a subject data set into this folder")
    parser.add_argument("--control", type=Path,
                        help="with --subject: also a control image per subject image in this folder (ai-toolkit's "
                             "control_path, which edit families such as qwen_image_edit_plus train with)")
    parser.add_argument("--num-images", type=int, default=8, help="subject images to draw (default 8)")
    parser.add_argument("--size", type=int, default=64, help="subject image side in pixels (default 64)")
    parser.add_argument("--overwrite", action="store_true", help="replace NNN.png/NNN.txt files already in --subject")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Build the pipeline folder, then the data set if asked, and list what was written."""
    from ..errors import ConfigError
    from ..testbed import build_tiny_pipeline, make_subject_dataset

    if args.control is not None and args.subject is None:
        raise ConfigError("--control needs --subject (control images pair with subject images); add --subject DIR")
    folder = build_tiny_pipeline(args.out, seed=args.seed, family=args.family)
    print(f"tiny {args.family} pipeline (seed {args.seed}) -> {folder}")
    for component in sorted(path.name for path in folder.iterdir()):
        print(f"  {component}")
    if args.subject is not None:
        images = make_subject_dataset(
            args.subject, num_images=args.num_images, size=args.size, seed=args.seed, overwrite=args.overwrite,
            control_dir=args.control,
        )
        print(f"subject data set: {len(images)} images of {args.size}x{args.size} px + captions -> {args.subject}")
        if args.control is not None:
            print(f"control images: {len(images)} (same names) -> {args.control}")
    return 0
