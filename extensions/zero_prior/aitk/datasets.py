"""Which files of a dataset folder ai-toolkit trains on (toolkit/data_loader.py, ``AiToolkitDataset``).

Image files by extension, found recursively, hidden files and folders and
``_controls`` folders skipped: the same walk ai-toolkit does, so captions are
written for, and checks count, exactly the images that train.
"""

from __future__ import annotations

import os
from pathlib import Path

from .facts import IMAGE_EXTENSIONS


def find_images(dataset: Path) -> list[Path]:
    """The images ai-toolkit trains on in ``dataset``, sorted by their path inside it."""
    found = []
    for root, dirs, files in os.walk(dataset):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if Path(root).name == "_controls":
            continue
        found += [Path(root) / f for f in files if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return sorted(found, key=lambda p: p.relative_to(dataset).as_posix())
