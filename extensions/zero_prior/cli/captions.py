"""``zero-prior captions DATASET``: paired baseline / zero-prior captions next to every image."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "captions",
        help="write paired captions (NAME.baseline.txt, NAME.zero_prior.txt) for every image of a dataset",
    )
    parser.add_argument("dataset", help="folder of training images (png, jpg, jpeg, webp; subfolders included)")
    parser.add_argument("--seed", type=int, default=0, help="template choice seed (same seed, same captions "
                                                            "everywhere)")
    parser.add_argument("--subject-class", default="person", help="person, woman, man, dog, cat or object")
    parser.add_argument(
        "--subject-phrase",
        action="append",
        help='semantic phrase for the baseline, repeatable (replaces the class phrases), e.g. --subject-phrase "a '
             'toy robot"',
    )
    parser.add_argument("--token", default="<zwx>", help="placeholder written in the zero_prior captions")
    parser.add_argument("--rare-word", help="also write NAME.rare_word.txt with this literal word (ablation arm), "
                                            "e.g. zwx")
    parser.add_argument("--overwrite", action="store_true", help="replace existing caption files")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..experiment.captions import STATS_FILE, plan_captions, write_captions

    plan = plan_captions(
        args.dataset,
        seed=args.seed,
        subject_class=args.subject_class,
        token=args.token,
        rare_word=args.rare_word,
        subject_phrases=args.subject_phrase,
    )
    stats = write_captions(plan, overwrite=args.overwrite)
    print(f"{stats['count']} images in {plan.dataset}, seed {stats['seed']}")
    modes = list(stats["modes"])
    print("mode".ljust(12) + "caption_ext".ljust(18) + "mean words")
    for mode in modes:
        info = stats["modes"][mode]
        print(mode.ljust(12) + repr(info["caption_ext"]).ljust(18) + f"{info['mean_words']:.2f}")
    print("template".ljust(48) + "".join(m.rjust(12) for m in modes))
    for template in stats["modes"][modes[0]]["template_counts"]:
        counts = (str(stats["modes"][m]["template_counts"][template]).rjust(12) for m in modes)
        print(template.ljust(48) + "".join(counts))
    print(f"statistics and every caption: {plan.dataset / STATS_FILE}")
    return 0
