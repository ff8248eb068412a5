"""Placing this package into a host application's plugin folder (ai-toolkit, ComfyUI) and taking it out again.

Both hosts find plugins by importing every package in one folder
(ai-toolkit's ``extensions/``, ComfyUI's ``custom_nodes/``), and this folder
is the package for both, so installing is the same act for each: link (or
copy) the package folder to ``PLUGINS/zero_prior``. A copy carries a marker
file so a later run knows it is ours; anything else at that place is left
alone and refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InstallError, ZeroPriorError

# The folder name both hosts import this package under.
PLUGIN_NAME = "zero_prior"
# Written inside a copied package so a later run knows the copy is ours.
COPY_MARKER = ".installed-by-zero-prior"


def package_dir() -> Path:
    """The folder that is the package ``zero_prior``, the ai-toolkit extension and the ComfyUI custom node."""
    return Path(__file__).resolve().parent


@dataclass
class InstallReport:
    """What an install or uninstall into a host's checkout did, line by line."""

    host: str  # "ai-toolkit", "ComfyUI"
    root: Path
    commit: str | None
    tested_commit: str
    tested_what: str  # what was tested against ``tested_commit``: "zero-prior", "the node"
    actions: list[str] = field(default_factory=list)

    def summary(self) -> str:
        commit = self.commit or "unknown commit (not a git checkout)"
        tested = "" if self.commit == self.tested_commit else (
            f"; {self.tested_what} is tested against {self.tested_commit[:8]}")
        return "\n".join([f"{self.host} at {self.root}: {commit}{tested}", *self.actions])


def check_checkout(path: Path, needed: Sequence[str], host: str, entry: str,
                   error: type[ZeroPriorError]) -> str | None:
    """Refuse a folder that lacks any of a host's ``needed`` files (naming them); return its git commit if known."""
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        raise error(f"{path} is not {host} checkout (missing {', '.join(missing)}); pass the folder that holds "
                    f"{entry}")
    result = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def checkout_path(path: str | os.PathLike[str] | None, env: str, default: str) -> Path:
    """``path``, else the environment variable ``env``, else ``~/default``: where a host's checkout is looked for."""
    return Path(path or os.environ.get(env) or Path.home() / default).expanduser()


def check_free(target: Path) -> None:
    """Refuse ``target`` when something that zero-prior did not install is there."""
    if installed_as(target) is None and (target.exists() or target.is_symlink()):
        raise InstallError(f"{target} exists and was not installed by zero-prior; remove it first")


def place(target: Path, copy: bool) -> str:
    """Link (or copy) the package to ``target``, replacing an earlier install of ours; returns what was done.

    Call ``check_free`` first: this replaces whatever is at ``target``.
    """
    state = installed_as(target)
    if copy:
        remove(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(package_dir(), target, ignore=shutil.ignore_patterns("__pycache__"))
        (target / COPY_MARKER).write_text("zero-prior\n")
        return f"{'refreshed the copy' if state == 'copy' else 'copied the package'} at {target}"
    if state == "link":
        return f"already linked: {target}"
    remove(target)  # an earlier copy of ours becomes a link
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(package_dir(), target_is_directory=True)
    return f"linked {target} -> {package_dir()}"


def take_out(target: Path) -> str | None:
    """Remove ``target`` if zero-prior installed it; returns what was done (None: nothing was there)."""
    if installed_as(target) is not None:
        remove(target)
        return f"removed {target}"
    if target.exists() or target.is_symlink():
        return f"left {target}: not installed by zero-prior"
    return None


def installed_as(target: Path) -> str | None:
    """'link' or 'copy' when ``target`` is an install of this package, else None."""
    if target.is_symlink():
        return "link" if target.resolve() == package_dir() else None
    if (target / COPY_MARKER).is_file():
        return "copy"
    return None


def remove(target: Path) -> None:
    """Delete a link or a folder (nothing if absent)."""
    if target.is_symlink():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
