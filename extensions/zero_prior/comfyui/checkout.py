"""Finding and checking a ComfyUI checkout without importing it."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InstallError
from ..plugin_folder import check_checkout, checkout_path

# The ComfyUI commit the custom node is tested against (master, 2025-10-12).
TESTED_COMMIT = "a125cd84b054a57729b5eecab930ca9408719832"
COMFYUI_ENV = "COMFYUI_DIR"
# Files that make a folder a ComfyUI checkout (and that the node's imports need).
CHECKOUT_FILES = ("main.py", "nodes.py", "folder_paths.py", "comfy/sd.py", "comfy/text_encoders/qwen_image.py")


def check_comfyui(path: Path) -> str | None:
    """Refuse a folder that is not a ComfyUI checkout; return its git commit if known."""
    return check_checkout(path, CHECKOUT_FILES, "a ComfyUI", "ComfyUI's main.py", InstallError)


def find_comfyui(path: str | os.PathLike[str] | None = None) -> Path:
    """The ComfyUI checkout to use: ``path``, else ``$COMFYUI_DIR``, else ``~/ComfyUI``.

    Raises ``InstallError`` saying what is missing when it is not a checkout.

    Example::

        find_comfyui()  # -> PosixPath('/home/me/ComfyUI')
    """
    candidate = checkout_path(path, COMFYUI_ENV, "ComfyUI")
    check_comfyui(candidate)
    return candidate.resolve()
