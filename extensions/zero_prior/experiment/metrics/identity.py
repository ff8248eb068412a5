"""Which metric model produced a number: its name, hub revision, weight-file sha256, and whether it is random.

Recorded in ``metrics.json`` for every metric model, so a score can be traced
to the exact weights, and a report made with the tiny random models of
``zero_prior.testbed.metric_models`` (a ``RANDOM_WEIGHTS.txt`` beside the
weights) says so in its first lines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...fileio import sha256_file

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
RANDOM_WEIGHTS_FILE = "RANDOM_WEIGHTS.txt"  # the marker zero_prior.testbed.metric_models writes


def model_identity(name_or_path: str) -> dict[str, Any]:
    """``{"name", "revision", "sha256": {file: hex}, "random"}`` of a transformers model folder or hub name.

    A hub name is looked up in the local hub cache only (the evaluation never
    downloads); its snapshot folder's name is the revision.
    """
    folder, revision = Path(name_or_path), None
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(str(name_or_path), local_files_only=True))
            revision = folder.name
        except Exception as error:  # noqa: BLE001 - any cache miss leaves the identity incomplete, said so below
            return {"name": str(name_or_path), "revision": None, "sha256": {},
                    "random": False, "unidentified": f"not in the local hub cache ({type(error).__name__})"}
    return {"name": str(name_or_path), "revision": revision, "sha256": _weight_hashes(folder),
            "random": (folder / RANDOM_WEIGHTS_FILE).is_file()}


def file_identity(name: str, path: Path) -> dict[str, Any]:
    """The identity of a single weight file (an LPIPS backbone), by sha256; ``random`` from the marker beside it."""
    return {"name": name, "revision": None, "sha256": {path.name: sha256_file(path)},
            "random": (path.parent / RANDOM_WEIGHTS_FILE).is_file()}


def _weight_hashes(folder: Path) -> dict[str, str]:
    return {name: sha256_file(folder / name) for name in sorted(os.listdir(folder))
            if name.endswith(WEIGHT_SUFFIXES) and (folder / name).is_file()}
