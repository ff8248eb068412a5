"""Finding and checking an ai-toolkit checkout, and where this extension lives, without importing ai-toolkit."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import AiToolkitError
from ..plugin_folder import PLUGIN_NAME, check_checkout, checkout_path, package_dir

# The ai-toolkit commit the extension is tested against.
TESTED_COMMIT = "27a03a91f23eb1b757d5ec2e80ee3e129cfcc350"
# The folder name ai-toolkit imports this package under (extensions/zero_prior).
EXTENSION_NAME = PLUGIN_NAME
AI_TOOLKIT_ENV = "AI_TOOLKIT_DIR"

__all__ = ["AI_TOOLKIT_ENV", "EXTENSION_NAME", "TESTED_COMMIT", "check_ai_toolkit", "find_ai_toolkit", "package_dir"]


def check_ai_toolkit(path: Path) -> str | None:
    """Refuse a folder that is not an ai-toolkit checkout; return its git commit if known."""
    needed = ("run.py", "toolkit/extension.py", "extensions_built_in/sd_trainer/SDTrainer.py")
    return check_checkout(path, needed, "an ai-toolkit", "ai-toolkit's run.py", AiToolkitError)


def find_ai_toolkit(path: str | os.PathLike[str] | None = None) -> Path:
    """The ai-toolkit checkout to use: ``path``, else ``$AI_TOOLKIT_DIR``, else ``~/ai-toolkit``.

    Raises ``AiToolkitError`` saying what is missing when it is not a checkout.

    Example::

        find_ai_toolkit()  # -> PosixPath('/home/me/ai-toolkit')
    """
    candidate = checkout_path(path, AI_TOOLKIT_ENV, "ai-toolkit")
    check_ai_toolkit(candidate)
    return candidate.resolve()
