"""Writing files and folders so that a reader never sees half of one, and the digest every cache and log uses.

``atomic_file`` and ``atomic_folder`` build their result under a hidden
temporary sibling name (``.NAME.<pid>.<random>.tmp``) and rename it into
place only when it is complete and flushed to disk, so an interrupted write
leaves the old content (or nothing) under the final name, and folders this
package created for a write that failed are removed again. A replaced folder
is swapped in with one atomic exchange where the system has it (Linux
``renameat2``), so the destination always holds the old or the new content.
The process id in a temporary name says whose it is: ``remove_stale_temps``
(run before every write, and by the trainer at start) deletes only those of
processes that no longer run, never a live writer's. Temporary names start
with a dot and end in ``.tmp``: ai-toolkit takes any ``*.safetensors`` in its
folder for a checkpoint. ``make_shareable`` gives results the permissions a
plain ``open()`` would (``mkstemp``/``mkdtemp`` and safetensors create private
0600/0700 files, but a LoRA or an export is meant to be shared).
``sha256_file`` is the one file digest of the package; ``describe_os_error``
turns a failed write or read into one line that names the path and the fix.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")
# What to do when a write or read fails, by errno.
_OS_FIXES = {
    errno.ENOSPC: "free some disk space or write somewhere else",
    errno.EDQUOT: "free some of your disk quota or write somewhere else",
    errno.EACCES: "choose a place you may write to, or fix its permissions",
    errno.EPERM: "choose a place you may write to, or fix its permissions",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder; give a file path",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "choose a shorter path",
}


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


def describe_os_error(error: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """One line for a failed file operation: what failed on which path, and what to do.

    >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device"), "out/weights.zip")
    'out/weights.zip: No space left on device; free some disk space or write somewhere else'
    """
    where = path if path is not None else error.filename
    reason = error.strerror or str(error)
    fix = _OS_FIXES.get(error.errno or -1, "check the path and try again")
    return f"{where}: {reason}; {fix}" if where else f"{reason}; {fix}"


def remove_stale_temps(folder: str | os.PathLike[str], name_prefix: str = "") -> list[Path]:
    """Delete this package's temporary files and folders in ``folder`` left by processes that have ended.

    Only names ``.NAME.<pid>.<random>.tmp`` whose NAME starts with
    ``name_prefix`` and whose process is gone are removed: a temporary of a
    running writer (this process included) is never touched. Returns what was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match is None or not match["name"].startswith(name_prefix) or _alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def atomic_file(target: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path next to ``target`` to write; on success it replaces ``target``.

    The path lies in a private hidden folder beside ``target``. On any error
    (or an interrupt) that folder is removed, folders created for it are
    removed again, and ``target`` is left as it was.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_file(folder / "log.json") as tmp:
    ...     _ = Path(tmp).write_text("{}")
    >>> sorted(p.name for p in folder.iterdir())
    ['log.json']
    """
    target = Path(target)
    created = _make_parents(target.parent)
    staging = None
    try:
        remove_stale_temps(target.parent, target.name)
        # A private folder, not a file: writers such as safetensors make their own temporary next to the path
        # they are given, and a kill must leave that inside something this package can recognise and remove.
        staging = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=TEMP_SUFFIX, dir=target.parent))
        tmp_name = staging / target.name
        yield str(tmp_name)
        fsync_file(tmp_name)
        make_shareable(tmp_name)
        os.replace(tmp_name, target)
    except BaseException:
        _discard(staging, created)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` through ``atomic_file``; return ``target``."""
    with atomic_file(target) as tmp_name:
        Path(tmp_name).write_text(text, encoding="utf-8")
    return Path(target)


@contextmanager
def atomic_folder(target: str | os.PathLike[str], keep_existing: Callable[[], bool] | None = None) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of ``target``; on success it takes ``target``'s place.

    Every file in it is flushed to disk and made shareable first. An existing
    ``target`` is replaced (in one atomic exchange where the system has it),
    unless ``keep_existing()`` (asked just before the swap) says the existing
    one is already what was built, as when another process finished the same
    build first; then the new copy is discarded. On any error the temporary
    folder (and folders created for it) are removed and ``target`` is left as it was.
    """
    target = Path(target)
    created = _make_parents(target.parent)
    staging = None
    try:
        remove_stale_temps(target.parent, target.name)
        staging = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=TEMP_SUFFIX, dir=target.parent))
        yield staging
        for path in [staging, *staging.rglob("*")]:
            if path.is_file():
                fsync_file(path)
            make_shareable(path)
        if not (target.exists() and keep_existing is not None and keep_existing()):
            _swap_in(staging, target)
    except BaseException:
        _discard(staging, created)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, deepest first."""
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _discard(staging: Path | None, created: list[Path]) -> None:
    """After a failed write: remove its temporary, then the folders created for it."""
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    _remove_created(created)


def _remove_created(created: list[Path]) -> None:
    """Remove the folders ``_make_parents`` created, where they are still empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break


def _swap_in(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``: one atomic exchange when both exist and the system can, else renames."""
    if target.exists() and _exchange(staging, target):
        shutil.rmtree(staging)  # now the old content
        return
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=TEMP_SUFFIX, dir=target.parent))
        os.replace(target, old / target.name)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            os.replace(old / target.name, target)
        raise
    if old is not None:
        shutil.rmtree(old)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically with Linux ``renameat2(RENAME_EXCHANGE)``; False where it is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not supported here: fall back to renames
        return False
    raise OSError(code, os.strerror(code), str(second))
