"""Checks that need files, made before ai-toolkit loads a model or writes anything.

``settings`` checks what the YAML says; these check what it points at, in the
seconds before ai-toolkit spends minutes loading the model and creates the
training folder: every dataset folder exists and holds images ai-toolkit
trains on, and the placeholder token is free and stays one id in the
family's template in the model's own tokenizer (loaded alone, from disk or
the Hugging Face cache, never downloaded). A tokenizer that is not on disk
yet is checked after the model loads, as before, with the same messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..placeholder.vocabulary import check_placeholders
from .datasets import find_images
from .facts import CONTROL_PATH_KEYS, IMAGE_EXTENSIONS
from .settings import ZeroPriorSettings


def check_datasets(process: Mapping[str, Any], path: str) -> None:
    """Every dataset's ``folder_path`` exists and holds images ai-toolkit trains on; its control folders exist."""
    for index, dataset in enumerate(process.get("datasets") or []):
        if not isinstance(dataset, Mapping):
            continue
        _check_control_folders(dataset, f"{path}.datasets[{index}]")
        if dataset.get("folder_path") is None:
            continue
        key = f"{path}.datasets[{index}].folder_path"
        folder = Path(str(dataset["folder_path"])).expanduser()
        if not folder.exists():
            raise ConfigError(f"{key} {str(folder)!r} does not exist; point it at the folder of training images")
        if folder.is_dir() and not find_images(folder):
            raise ConfigError(f"{key} {str(folder)!r} holds no images ai-toolkit trains on "
                              f"({', '.join(IMAGE_EXTENSIONS)}); add the training images or fix the path")


def _check_control_folders(dataset: Mapping[str, Any], where: str) -> None:
    """Each control folder a dataset names exists (in a missing one ai-toolkit silently finds no control images)."""
    for key in CONTROL_PATH_KEYS:
        value = dataset.get(key)
        for folder in (value if isinstance(value, list) else [value] if value else []):
            if not Path(str(folder)).expanduser().is_dir():
                raise ConfigError(f"{where}.{key} {str(folder)!r} is not a folder; point it at the folder of "
                                  "control images (named like the training images)")


def check_token(process: Mapping[str, Any], settings: ZeroPriorSettings) -> str | None:
    """Check the placeholder in the model's tokenizer; returns a note when that tokenizer is not on disk yet."""
    assert settings.family is not None, "check_token is for settings with the toggle on"
    source, subfolder = settings.family.aitk_tokenizer_source(process.get("model") or {})
    tokenizer = _local_tokenizer(source, subfolder)
    if tokenizer is None:
        return (f"zero-prior: the tokenizer of {source!r} is not on disk yet; the placeholder "
                f"{settings.placeholder.token!r} is checked after the model loads")
    check_placeholders(tokenizer, [settings.placeholder], settings.family)
    return None


def _local_tokenizer(source: str, subfolder: str) -> Any:
    """The tokenizer from a local folder or the hub cache, or None (never a download)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, subfolder=subfolder, local_files_only=True)
    except (OSError, ValueError):  # not a folder, not cached, or no tokenizer there
        return None
