"""The ``zero-prior`` command: a short root that registers subcommands and dispatches.

Each subcommand lives in its own module with ``register(subparsers)`` and a
``run(args) -> int``; heavy imports (torch, diffusers) happen inside ``run``
so that ``zero-prior --help`` is instant. Known errors (``ZeroPriorError``)
and failed file operations (``OSError``: a full disk, a folder you may not
write to) become one line naming the path and the next step; ``--traceback``
shows the full trace.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand modules, in the order the data path runs.
SUBCOMMANDS = ("demo", "tiny_model", "install", "captions", "inspect", "generate", "export", "merge", "experiment",
               "evaluate", "metric_models")


def build_parser() -> argparse.ArgumentParser:
    """Build the root parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="zero-prior",
        description="Zero-prior placeholder tokens for LoRAs of Qwen-Image and the other LLM-encoder models.",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback on errors"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zero-prior`` console script."""
    from ..errors import ZeroPriorError
    from ..fileio import describe_os_error

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (ZeroPriorError, OSError) as error:
        if args.traceback:
            raise
        message = describe_os_error(error) if not isinstance(error, ZeroPriorError) else str(error)
        print(f"zero-prior {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
