"""Keeping an ai-toolkit training folder honest: atomic optimizer saves, unreadable ones named, config.yaml kept.

ai-toolkit writes ``optimizer.pt`` with a plain ``torch.save``; a run killed
in that write leaves it empty or cut off, and the next run then silently goes
on with a fresh optimizer while the LoRA and the vector resume. It also
rewrites ``config.yaml`` in the training folder when a process starts, before
zero-prior can refuse a resume that does not fit. The trainer uses:

- ``atomic_torch_save(path)``: while ai-toolkit saves, the ``torch.save`` of
  exactly ``path`` goes through ``fileio.atomic_file`` (every other call is
  untouched), so ``optimizer.pt`` is always a whole file;
- ``optimizer_state_unreadable(path)``: a cut-off ``optimizer.pt`` (not a
  complete zip archive, which every ``torch.save`` file is) is found before
  ai-toolkit tries it, so the trainer can say that the optimizer restarts;
- ``ConfigSnapshot``: ``config.yaml`` as it was before the process started,
  put back (or removed, with the folder ai-toolkit created) when zero-prior
  refuses the run.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_file, write_text_atomic

CONFIG_FILE = "config.yaml"  # BaseTrainProcess.save_training_config


@contextmanager
def atomic_torch_save(path: str | os.PathLike[str]) -> Iterator[None]:
    """Make ``torch.save(obj, path)`` atomic for the duration of the block (only for exactly ``path``)."""
    target = os.path.abspath(path)
    original = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(f, (str, os.PathLike)) and os.path.abspath(f) == target:
            with atomic_file(target) as tmp_name:
                return original(obj, tmp_name, *args, **kwargs)
        return original(obj, f, *args, **kwargs)

    torch.save = save
    try:
        yield
    finally:
        torch.save = original


def optimizer_state_unreadable(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` (an ``optimizer.pt``) cannot be loaded, or None when it is absent or a whole file."""
    path = Path(path)
    if not path.exists():
        return None
    if path.stat().st_size == 0:
        return "it is empty"
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        return f"it is cut off or damaged ({error})"
    return None


class ConfigSnapshot:
    """``config.yaml`` of a training folder before the process wrote it, to put back when the run is refused."""

    def __init__(self, save_root: str | os.PathLike[str]) -> None:
        self.save_root = Path(save_root)
        self.folder_existed = self.save_root.exists()
        config = self.save_root / CONFIG_FILE
        self.text = config.read_text(encoding="utf-8") if config.is_file() else None

    def restore(self) -> None:
        """Put ``config.yaml`` back as it was; remove it (and the folder, if it is now empty) when it was not there."""
        config = self.save_root / CONFIG_FILE
        if self.text is not None:
            write_text_atomic(config, self.text)
            return
        config.unlink(missing_ok=True)
        if not self.folder_existed and self.save_root.is_dir() and not any(self.save_root.iterdir()):
            self.save_root.rmdir()
