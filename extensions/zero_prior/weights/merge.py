"""Merging LoRA files into one without losing the placeholder: ``zero-prior merge``.

Merge tools that sum LoRA tensors (ai-toolkit's UI "Merge LoRAs",
``ui_scripts/merge_loras.py``) keep a few metadata keys only, so the merged
file has no placeholder record and the token means nothing. This merge keeps
the record, and it merges exactly: each module's down (A) matrices are
stacked and its up (B) matrices placed side by side, scaled by the file's
strength and its ``alpha / rank``, so the merged update is the sum of the
inputs' updates. Every module is written at one rank (the largest sum of
ranks, smaller ones padded with zero rows): a file without alphas is read by
diffusers with one alpha for all modules, so modules of different ranks
would otherwise be applied at different strengths.

One file can carry one set of vectors for a token: inputs whose placeholder
records differ (another vector for the same token, or other tokens, which got
the same new token ids in training) are refused, before anything is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import FormatError
from .format import LORA_KEY_SUFFIXES, ZeroPriorRecord, read_zero_prior, save_lora_file, vector_sha256

DOWN_SUFFIXES = (".lora_A.weight", ".lora_down.weight")
UP_FOR_DOWN = {".lora_A.weight": ".lora_B.weight", ".lora_down.weight": ".lora_up.weight"}
ALPHA_SUFFIX = ".alpha"


@dataclass
class _Pair:
    down: torch.Tensor
    up: torch.Tensor
    scale: float  # strength * alpha / rank


@dataclass(frozen=True)
class MergeResult:
    """What ``merge_loras`` wrote."""

    path: Path
    modules: int
    rank: int  # every module's rank in the merged file
    placeholder_from: Path | None

    def summary(self) -> str:
        kept = (f"the placeholder of {self.placeholder_from.name} kept" if self.placeholder_from is not None
                else "no placeholder in the inputs")
        return f"wrote {self.path}: {self.modules} LoRA modules (rank {self.rank}), {kept}"


def merge_loras(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str],
                strengths: Sequence[float] | None = None, overwrite: bool = False) -> MergeResult:
    """Merge LoRA ``.safetensors`` files into ``output``, keeping their (one) placeholder record.

    ``strengths`` scales each file's LoRA update (default 1.0 each); the
    placeholder vector is never scaled. Output tensors take the first input's dtype.

    Example::

        merge_loras(["subject_zero_prior.safetensors", "style.safetensors"], "merged.safetensors", [1.0, 0.6])
    """
    paths = [Path(p) for p in inputs]
    output = Path(output)
    strengths = [1.0] * len(paths) if strengths is None else [float(s) for s in strengths]
    _check_arguments(paths, output, strengths, overwrite)
    record, source = _one_record(paths)
    pairs: dict[str, list[_Pair]] = {}
    alpha_style, dtype = False, None
    for path, strength in zip(paths, strengths, strict=True):
        tensors = load_file(str(path))
        dtype = dtype or next(iter(tensors.values())).dtype
        alpha_style = alpha_style or any(key.endswith(ALPHA_SUFFIX) for key in tensors)
        for module, pair in _pairs(tensors, path, strength).items():
            pairs.setdefault(module, []).append(pair)
    # Every module gets the same rank: a file without alphas is read by diffusers with the first module's rank
    # as every module's alpha, so modules of other ranks would be scaled by that ratio. Zero rows pad.
    rank = max((sum(i.down.shape[0] for i in items) for items in pairs.values()), default=0)
    merged: dict[str, torch.Tensor] = {}
    for module, items in pairs.items():
        name, suffix = module.split("\0")
        _check_shapes(name, items, paths)
        down = torch.cat([item.down.float() for item in items], dim=0)
        up = torch.cat([item.up.float() * item.scale for item in items], dim=1)
        merged[name + suffix] = torch.nn.functional.pad(down, (0, 0, 0, rank - down.shape[0])).to(dtype)
        merged[name + UP_FOR_DOWN[suffix]] = torch.nn.functional.pad(up, (0, rank - up.shape[1])).to(dtype)
        if alpha_style:  # alpha == rank: the merged update is applied at scale 1
            merged[name + ALPHA_SUFFIX] = torch.tensor(float(rank))
    if record is not None:
        merged_from = [{"file": path.name, "strength": strength} for path, strength in zip(paths, strengths)]
        record = replace(record, extra={**record.extra, "merged_from": merged_from})
    header = {"zero_prior_merge": json.dumps([[p.name, s] for p, s in zip(paths, strengths)])}
    save_lora_file(output, merged, header, record)
    return MergeResult(output, len(pairs), rank, source)


def _check_arguments(paths: list[Path], output: Path, strengths: list[float], overwrite: bool) -> None:
    if len(paths) < 2:
        raise FormatError("zero-prior merge needs at least two LoRA files")
    if len(strengths) != len(paths):
        raise FormatError(f"{len(strengths)} strengths for {len(paths)} files; give one --strength per file")
    for path in paths:
        if not path.is_file():
            raise FormatError(f"{path}: no such file; pass LoRA .safetensors files")
        if output.exists() and output.resolve() == path.resolve():
            raise FormatError(f"{output} is one of the inputs; write the merge to a new file")
    if output.is_dir() or (output.exists() and not overwrite):
        raise FormatError(f"{output} already exists; pass --overwrite to replace it or choose another output")


def _one_record(paths: list[Path]) -> tuple[ZeroPriorRecord | None, Path | None]:
    """The inputs' placeholder record, when they carry at most one (the same in every file that has one)."""
    found = [(path, record) for path in paths if (record := read_zero_prior(path)) is not None]
    if not found:
        return None, None
    first_path, first = found[0]
    mine = {p.token: vector_sha256(p.vectors) for p in first.placeholders}
    for path, record in found[1:]:
        theirs = {p.token: vector_sha256(p.vectors) for p in record.placeholders}
        for token in sorted(mine.keys() & theirs.keys()):
            if mine[token] != theirs[token]:
                raise FormatError(
                    f"{first_path} and {path} hold different vectors for {token!r} (sha256 {mine[token][:12]} vs "
                    f"{theirs[token][:12]}); a file can carry one: merge one of them with plain LoRAs only"
                )
        if mine.keys() != theirs.keys() or record.family != first.family:
            raise FormatError(
                f"{first_path} holds placeholders {sorted(mine)} ({first.family}) and {path} holds {sorted(theirs)} "
                f"({record.family}); their tokens were given the same new ids in training, so one file cannot carry "
                "both: merge one of them with plain LoRAs only"
            )
    return first, first_path


def _pairs(tensors: dict[str, torch.Tensor], path: Path, strength: float) -> dict[str, _Pair]:
    """``module\\0down_suffix -> _Pair`` of one file; anything but LoRA pairs (and their alphas) is refused."""
    foreign = sorted(key for key in tensors if not key.endswith(LORA_KEY_SUFFIXES))
    if foreign:
        raise FormatError(f"{path}: {foreign[0]!r} is not a LoRA tensor; merge LoRA .safetensors files only")
    pairs = {}
    for key, down in tensors.items():
        suffix = next((s for s in DOWN_SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            continue
        name = key[: -len(suffix)]
        up = tensors.get(name + UP_FOR_DOWN[suffix])
        if up is None or down.ndim != 2 or up.ndim != 2:
            raise FormatError(f"{path}: {key!r} has no 2-D {UP_FOR_DOWN[suffix]} partner; merge linear LoRAs only")
        rank = down.shape[0]
        alpha = tensors.get(name + ALPHA_SUFFIX)
        scale = strength * (float(alpha) / rank if alpha is not None else 1.0)
        pairs[f"{name}\0{suffix}"] = _Pair(down, up, scale)
    ups = sum(1 for key in tensors if key.endswith(tuple(UP_FOR_DOWN.values())))
    if ups != len(pairs):
        raise FormatError(f"{path}: {ups} up matrices for {len(pairs)} down matrices; the file is not a whole LoRA")
    return pairs


def _check_shapes(name: str, items: list[_Pair], paths: list[Path]) -> None:
    first = items[0]
    for item in items[1:]:
        if item.down.shape[1] != first.down.shape[1] or item.up.shape[0] != first.up.shape[0]:
            raise FormatError(
                f"{name}: the inputs' LoRA shapes differ (up {tuple(first.up.shape)}, down {tuple(first.down.shape)} "
                f"vs up {tuple(item.up.shape)}, down {tuple(item.down.shape)}): the files "
                f"({', '.join(p.name for p in paths)}) are for different models"
            )
