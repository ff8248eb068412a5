"""``zero-prior inspect FILE``: the placeholder metadata and a LoRA summary, as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("inspect", help="print a LoRA file's placeholder metadata and LoRA summary as JSON")
    parser.add_argument("file", help="a .safetensors LoRA written by zero-prior or ai-toolkit")
    parser.add_argument("--vectors", action="store_true", help="include the base64 vectors (long)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(json.dumps(describe(args.file, include_vectors=args.vectors), indent=2, sort_keys=True))
    return 0


def describe(path: str, include_vectors: bool = False) -> dict[str, Any]:
    """The JSON-ready description printed by ``inspect`` (checksums verified)."""
    from safetensors import safe_open

    from ..weights.format import METADATA_KEY, read_header, read_zero_prior

    record = read_zero_prior(path)
    header = read_header(path)
    with safe_open(path, framework="pt") as handle:
        keys = list(handle.keys())
        down = [k for k in keys if k.endswith((".lora_A.weight", ".lora_down.weight"))]
        ranks = sorted({handle.get_slice(k).get_shape()[0] for k in down})
        dtypes = sorted({handle.get_slice(k).get_dtype() for k in keys})
    placeholder = None
    if record is not None:
        placeholder = json.loads(header[METADATA_KEY])
        for item in placeholder["placeholders"]:
            if not include_vectors:
                item["vectors"].pop("base64")
    return {
        "file": path,
        "lora": {"tensors": len(keys), "ranks": ranks, "dtypes": dtypes, "key_example": keys[0] if keys else None},
        "zero_prior": placeholder,
        "other_metadata_keys": sorted(k for k in header if k != METADATA_KEY),
    }
