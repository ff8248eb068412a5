"""Writing files and folders so that a reader never sees half of one, and the digest every cache and log uses.

``atomic_file`` and ``atomic_folder`` build their result under a hidden
temporary sibling name (``.NAME.<random>.tmp``) and rename it into place only
when it is complete and flushed to disk, so an interrupted write leaves the
old content (or nothing) under the final name. Temporary names start with a
dot and end in ``.tmp``: ai-toolkit takes any ``*.safetensors`` in its folder
for a checkpoint. ``make_shareable`` gives results the permissions a plain
``open()`` would (``mkstemp``/``mkdtemp`` and safetensors create private
0600/0700 files, but a LoRA or an export is meant to be shared).
``sha256_file`` is the one file digest of the package.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".tmp"


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
def atomic_file(target: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary sibling of ``target`` to write; on success it replaces ``target``.

    On any error (or an interrupt) the temporary file is removed and ``target``
    is left as it was.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_file(folder / "log.json") as tmp:
    ...     _ = Path(tmp).write_text("{}")
    >>> sorted(p.name for p in folder.iterdir())
    ['log.json']
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(handle)
    try:
        yield tmp_name
        fsync_file(tmp_name)
        make_shareable(tmp_name)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` through ``atomic_file``; return ``target``."""
    with atomic_file(target) as tmp_name:
        Path(tmp_name).write_text(text, encoding="utf-8")
    return Path(target)


@contextmanager
def atomic_folder(target: str | os.PathLike[str], keep_existing: Callable[[], bool] | None = None) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of ``target``; on success it takes ``target``'s place.

    Every file in it is flushed to disk and made shareable first. An existing
    ``target`` is replaced, unless ``keep_existing()`` (asked just before the
    swap) says the existing one is already what was built, as when another
    process finished the same build first; then the new copy is discarded. On
    any error the temporary folder is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent))
    try:
        yield staging
        for path in [staging, *staging.rglob("*")]:
            if path.is_file():
                fsync_file(path)
            make_shareable(path)
        if target.exists() and keep_existing is not None and keep_existing():
            return
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; an existing ``target`` is moved aside first and removed after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent))
        os.replace(target, old / target.name)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            os.replace(old / target.name, target)
        raise
    if old is not None:
        shutil.rmtree(old)
