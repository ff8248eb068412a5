"""Content-checked build cache shared by the tokenizer and the tiny pipeline.

Tests and the demo ask for the same artefacts many times; rebuilding them each
time costs seconds, but silently reusing a half-written or stale folder would
make every later failure misleading. So each cached folder carries a manifest
with the sha256 of its inputs and of every file it holds, and is only trusted
when all of them still match. Folders are built next to their final place and
renamed in (``fileio.atomic_folder``), so an interrupted build never leaves a
folder that looks finished.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from ..fileio import atomic_folder, sha256_file

CACHE_ENV = "ZERO_PRIOR_CACHE"
MANIFEST_NAME = "zero_prior_build.json"


def cache_root() -> Path:
    """Root of every zero-prior cache: ``$ZERO_PRIOR_CACHE`` or ``~/.cache/zero_prior``."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "zero_prior"


def folder_digests(folder: Path) -> dict[str, str]:
    """Sha256 of every file under ``folder`` except the manifest, keyed by POSIX relative path."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }


def is_intact(folder: Path, inputs: Mapping[str, str]) -> bool:
    """True when ``folder`` has a manifest whose inputs and file hashes all still match."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return manifest.get("inputs") == dict(inputs) and manifest.get("files") == folder_digests(folder)


def write_manifest(folder: Path, inputs: Mapping[str, str]) -> None:
    """Record ``inputs`` and the hashes of everything now in ``folder``."""
    manifest = {"inputs": dict(inputs), "files": folder_digests(folder)}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")


def cached_build(target: Path, inputs: Mapping[str, str], build: Callable[[Path], None]) -> Path:
    """Return ``target`` if intact, else run ``build(tmp_dir)`` and move the result into place.

    ``inputs`` names everything the content depends on (source hashes, version
    strings); a change in any of them forces a rebuild. Concurrent callers may
    both build; the first to finish wins and the other's copy is discarded.
    """
    if is_intact(target, inputs):
        return target
    with atomic_folder(target, keep_existing=lambda: is_intact(target, inputs)) as staging:
        build(staging)
        write_manifest(staging, inputs)
    return target
