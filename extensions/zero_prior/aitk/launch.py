"""Run ai-toolkit's own ``run.py`` with this extension, without installing it into the checkout.

Tests, the demo and benchmarks must exercise the real ``python run.py`` while
leaving the user's ai-toolkit checkout exactly as it is. ai-toolkit finds
extensions under ``TOOLKIT_ROOT/extensions``, and ``TOOLKIT_ROOT`` comes from
the *unresolved* absolute path of ``toolkit/paths.py``. So a staging folder
holding a symlink to every top-level entry of the checkout, a copy of
``run.py`` (a symlinked script would put the real checkout first on
``sys.path``) and its own ``extensions/`` (the checkout's extensions plus a
link to this package) is a complete ai-toolkit root that sees the extension.
Nothing here imports ai-toolkit.
"""

from __future__ import annotations

import os
import shutil
import string
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..errors import ConfigError
from ..installer import EXTENSION_NAME, check_ai_toolkit, package_dir

AI_TOOLKIT_ENV = "AI_TOOLKIT_DIR"


def find_ai_toolkit(path: str | os.PathLike[str] | None = None) -> Path:
    """The ai-toolkit checkout to use: ``path``, else ``$AI_TOOLKIT_DIR``, else ``~/ai-toolkit``.

    Raises ``ZeroPriorError`` saying what is missing when it is not a checkout.

    >>> find_ai_toolkit()  # doctest: +SKIP
    PosixPath('/home/me/ai-toolkit')
    """
    candidate = Path(path or os.environ.get(AI_TOOLKIT_ENV) or Path.home() / "ai-toolkit").expanduser()
    check_ai_toolkit(candidate)
    return candidate.resolve()


def stage_ai_toolkit(ai_toolkit: Path, folder: Path) -> Path:
    """Build the staged ai-toolkit root described above inside ``folder`` and return it.

    Delete ``folder`` to undo; the checkout is never written to.
    """
    root = Path(folder) / "ai-toolkit"
    root.mkdir(parents=True)
    for entry in sorted(ai_toolkit.iterdir()):
        if entry.name not in ("extensions", "run.py"):
            (root / entry.name).symlink_to(entry)
    shutil.copyfile(ai_toolkit / "run.py", root / "run.py")
    extensions = root / "extensions"
    extensions.mkdir()
    for entry in sorted((ai_toolkit / "extensions").iterdir()):
        if entry.name != EXTENSION_NAME:  # an installed copy or link is replaced by this package
            (extensions / entry.name).symlink_to(entry)
    (extensions / EXTENSION_NAME).symlink_to(package_dir(), target_is_directory=True)
    return root


def load_config_template(path: str | os.PathLike[str], values: Mapping[str, str]) -> dict[str, Any]:
    """Read a YAML config whose ``${NAME}`` fields (paths) are filled from ``values``.

    >>> load_config_template("config_examples/tiny_cpu.yaml", {"MODEL_PATH": "/m", ...})  # doctest: +SKIP
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        filled = string.Template(text).substitute(values)
    except KeyError as error:
        raise ConfigError(f"{path} needs a value for ${{{error.args[0]}}}") from None
    return yaml.safe_load(filled)


def write_config(config: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``config`` as a YAML file ``run.py`` can read, and return its path."""
    path = Path(path)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


def run_ai_toolkit(
    root: Path,
    configs: Sequence[str | os.PathLike[str]],
    recover: bool = False,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    launcher: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``python [LAUNCHER...] run.py [-r] CONFIG...`` in ``root`` with this interpreter; output is captured.

    ``recover`` (ai-toolkit's ``-r``) lets later configs run after one fails,
    so several short jobs can share one start-up (about 20 s of imports).
    ``launcher`` starts ``run.py`` through a module, e.g.
    ``["-m", "torch.distributed.run", "--nproc_per_node", "2"]`` for two ranks.
    """
    command = [sys.executable, *launcher, "run.py", *(["-r"] if recover else []), *(str(c) for c in configs)]
    return subprocess.run(
        command,
        cwd=root,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
