"""File helpers shared by the writers and the logs: durable renames, permissions, digests.

Files are written under a temporary sibling name and renamed into place, so a
reader never sees half of one; ``fsync_file`` flushes them first and
``make_shareable`` gives them the permissions an ordinary file would get
(``mkstemp``/``mkdtemp`` and safetensors create private 0600/0700 files, but a
LoRA or an export is meant to be shared). ``sha256_file`` is the one digest
used by caches, logs and the Cog server.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush ``path``'s contents to disk before it is renamed into place."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def make_shareable(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the mode a plain ``open()`` would (0666 or 0777 for folders, minus the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    full = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, full & ~mask)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of one file, read in 1 MiB chunks so large weights do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary sibling of ``target`` to write; on success it replaces ``target``.

    On any error (or an interrupt) the temporary file is removed and ``target``
    is left as it was. The temporary name starts with a dot and ends in
    ``.tmp``: ai-toolkit takes any ``*.safetensors`` in its folder for a checkpoint.

    >>> with atomic_path("out/lora.safetensors") as tmp:  # doctest: +SKIP
    ...     save_file(tensors, tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        yield tmp_name
        fsync_file(tmp_name)
        make_shareable(tmp_name)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
