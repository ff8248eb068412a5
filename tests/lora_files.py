"""Edited copies of a trained LoRA file, for the tests of what the loader refuses and reuses."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zero_prior.weights.format import METADATA_KEY


def rewrite(source: Path, target: Path, change: Callable[[dict], None]) -> Path:
    """Copy a LoRA file with its zero-prior JSON edited by ``change``."""
    with safe_open(str(source), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        header = dict(handle.metadata())
    data = json.loads(header[METADATA_KEY])
    change(data)
    header[METADATA_KEY] = json.dumps(data)
    save_file(tensors, str(target), metadata=header)
    return target


def set_vectors(item: dict, vectors: torch.Tensor) -> None:
    """Store ``vectors`` in a placeholder entry with a valid checksum (so only what the test changes is wrong)."""
    raw = vectors.float().numpy().astype("<f4").tobytes()
    item["vectors"].update(shape=list(vectors.shape), base64=base64.b64encode(raw).decode(),
                           sha256=hashlib.sha256(raw).hexdigest())


def vectors_of(item: dict) -> torch.Tensor:
    raw = base64.b64decode(item["vectors"]["base64"])
    return torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy()).reshape(item["vectors"]["shape"])


def scale_vectors(data: dict, factor: float) -> None:
    for item in data["placeholders"]:
        set_vectors(item, vectors_of(item) * factor)


def with_lora_scaled(source: Path, target: Path, factor: float) -> Path:
    """A copy of a LoRA file (metadata and vector kept) whose lora_B tensors are multiplied by ``factor``."""
    return with_tensors(source, target, lambda key, tensor: tensor * factor if "lora_B" in key else tensor)


def with_tensors(source: Path, target: Path, change: Callable[[str, torch.Tensor], torch.Tensor | None],
                 extra: dict[str, torch.Tensor] | None = None) -> Path:
    """A copy whose tensors are ``change(key, tensor)`` (None drops one), plus ``extra``; the metadata is kept."""
    with safe_open(str(source), framework="pt") as handle:
        header = dict(handle.metadata())
        tensors = {k: change(k, handle.get_tensor(k)) for k in handle.keys()}
    tensors = {k: v for k, v in tensors.items() if v is not None} | (extra or {})
    save_file(tensors, str(target), metadata=header)
    return target
