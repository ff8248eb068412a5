"""The example configs, shipped with the package as ``zero_prior.config_examples``.

This folder is both the repository's ``config_examples/`` and package data of
an installed zero-prior (setup.py maps it), so the installer, the demo and
the Cog trainer find the same files however zero-prior was installed.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def example_path(name: str) -> Path:
    """The example config ``name`` (e.g. ``"zero_prior.yaml"``); a missing one is an ``InstallError``.

    >>> example_path("tiny_cpu.yaml").name
    'tiny_cpu.yaml'
    """
    from zero_prior.errors import InstallError

    path = FOLDER / name
    if not path.is_file():
        raise InstallError(f"example config {name!r} is not in {FOLDER}; reinstall zero-prior from its source")
    return path
