"""Weights packages: a ``weights.zip`` or an exported folder around one zero-prior LoRA file.

Hosted predictors (Replicate/Cog) pass trained weights around as one zip and
take "the" ``.safetensors`` inside it, so a package must hold exactly one; its
``meta.json`` repeats what clients read without opening the LoRA (token, id,
rank, steps...). The LoRA file stays the single source of truth: the vector
travels in its metadata, and a ``meta.json`` that disagrees with it means the
package was assembled from different runs, which must fail loudly rather
than load a token with the wrong vector. This module owns the package layout
and the ``meta.json`` schema; ``export`` writes packages, ``loader`` applies
what ``open_weights`` yields. Reading never touches a model.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError
from .format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    METADATA_KEY,
    FileLayout,
    ZeroPriorRecord,
    decode_record,
    read_layout,
    vector_sha256,
)

ZIP_LORA_MEMBER = "lora/lora_weights.safetensors"
META_JSON = "meta.json"
META_JSON_VERSION = "1.0"
# Written by ai-toolkit from a config's top-level `meta:` block; nothing else in its header records them.
TRAINING_KEYS = ("learning_rate", "batch_size", "resolutions")
# meta.json keys checked separately (its own schema version) or never comparable.
_NOT_COMPARED = ("version",)
# Bounds on what a package may make us read or write: meta.json is a few KB; a rank-16 Qwen-Image LoRA in
# fp32 is about 0.6 GB, so 4 GiB leaves room for large ranks (``max_lora_bytes`` raises it). Weights barely
# compress, so a member that inflates more than MAX_COMPRESSION_RATIO times its stored size is refused.
META_JSON_MAX_BYTES = 4 * 2**20
DEFAULT_MAX_LORA_BYTES = 4 * 2**30
MAX_COMPRESSION_RATIO = 100
_CHUNK = 1 << 20


@dataclass
class WeightsPackage:
    """One opened weights source: the LoRA file to load and what describes it."""

    source: Path  # what the caller passed: a .safetensors, a weights.zip or an exported folder
    lora_file: Path  # a .safetensors on disk (a temporary copy for a zip, valid inside open_weights)
    label: str  # how messages name the LoRA file
    record: ZeroPriorRecord | None  # the verified placeholder record; None for a plain LoRA
    meta_json: dict[str, Any] | None  # the package's meta.json, already checked against the file
    tensor_names: list[str]  # the LoRA file's tensor names as stored, before any converter renames them


@contextmanager
def open_weights(
    path: str | os.PathLike[str], max_lora_bytes: int = DEFAULT_MAX_LORA_BYTES
) -> Iterator[WeightsPackage]:
    """Open a LoRA ``.safetensors``, a ``weights.zip`` or an exported folder, checked.

    A zip or folder must hold exactly one ``.safetensors``; its optional
    ``meta.json`` must agree with the file (``FormatError`` otherwise, naming
    the keys). A zip's LoRA is extracted to a temporary folder that is removed
    when the ``with`` block ends; no member is read past its declared size,
    ``meta.json`` past ``META_JSON_MAX_BYTES`` or the LoRA past ``max_lora_bytes``.

    Example::

        with open_weights("weights.zip") as package:
            print(package.record.placeholders[0].token)  # -> <zwx>
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder; pass a LoRA .safetensors, a weights.zip or an "
                          "exported folder")
    if path.is_dir():
        lora, meta_json = _folder_contents(path)
        yield _checked(path, lora, str(lora), meta_json)
    elif path.suffix.lower() == ".zip":
        with tempfile.TemporaryDirectory(prefix="zero_prior_weights_") as tmp:
            lora, member, meta_json = _extract_zip(path, Path(tmp), max_lora_bytes)
            yield _checked(path, lora, f"{path} ({member})", meta_json)
    else:
        yield _checked(path, path, str(path), None)


def describe_weights(lora_file: str | os.PathLike[str], label: str | None = None) -> dict[str, Any]:
    """The ``meta.json`` content for a LoRA file: what Cog clients read, plus checksums.

    Values the file cannot know are ``None``: ``learning_rate``, ``batch_size``
    and ``resolutions`` come only from the ai-toolkit header (a config's
    top-level ``meta:`` block), never from defaults.

    Example::

        describe_weights("my_subject.safetensors")["placeholder_token"]  # -> '<zwx>'
    """
    lora_file = Path(lora_file)
    label = label or str(lora_file)
    layout = read_layout(lora_file, label)
    return _describe(layout, _decode(layout.metadata, label))


def _checked(source: Path, lora: Path, label: str, meta_json: dict[str, Any] | None) -> WeightsPackage:
    layout = read_layout(lora, label)
    record = _decode(layout.metadata, label)
    if meta_json is not None:
        _check_meta_json(meta_json, _describe(layout, record), record, label, f"{source} ({META_JSON})")
    return WeightsPackage(source=source, lora_file=lora, label=label, record=record, meta_json=meta_json,
                          tensor_names=list(layout.shapes))


def _folder_contents(folder: Path) -> tuple[Path, dict[str, Any] | None]:
    found = sorted(p for p in folder.iterdir() if p.is_file() and _is_lora_member(Path(p.name)))
    _exactly_one(folder, [p.name for p in found])
    meta_path = folder / META_JSON
    meta_json = None
    if meta_path.is_file():
        _check_size(str(meta_path), meta_path.stat().st_size, META_JSON_MAX_BYTES)
        meta_json = _parse_meta_json(meta_path.read_bytes(), str(meta_path))
    return found[0], meta_json


def _is_lora_member(name: Path) -> bool:
    """A ``.safetensors`` entry that is not macOS metadata (``__MACOSX/``, ``._name``) or hidden."""
    return (name.suffix.lower() == ".safetensors" and "__MACOSX" not in name.parts
            and not any(part.startswith(".") for part in name.parts))


def _extract_zip(path: Path, target: Path, max_lora_bytes: int) -> tuple[Path, str, dict[str, Any] | None]:
    """Copy the zip's one LoRA member to ``target`` (under its base name only: no path from the zip is trusted)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as error:
        raise _unreadable_zip(path, error) from None
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        loras = [info for info in members if _is_lora_member(Path(info.filename))]
        _exactly_one(path, [info.filename for info in loras])
        meta_info = next((info for info in members if info.filename == META_JSON), None)
        meta_json = None
        if meta_info is not None:
            raw = _read_member(archive, meta_info, META_JSON_MAX_BYTES, path)
            meta_json = _parse_meta_json(raw, f"{path} ({META_JSON})")
        lora = target / Path(loras[0].filename).name
        _copy_member(archive, loras[0], lora, max_lora_bytes, path)
    return lora, loras[0].filename, meta_json


def _check_member(info: zipfile.ZipInfo, limit: int, path: Path) -> None:
    """Refuse a member declared larger than ``limit`` or inflating more than MAX_COMPRESSION_RATIO times."""
    where = f"{path} ({info.filename})"
    _check_size(where, info.file_size, limit)
    ratio = info.file_size / max(info.compress_size, 1)
    if info.compress_type != zipfile.ZIP_STORED and ratio > MAX_COMPRESSION_RATIO:
        raise FormatError(
            f"{where} inflates {ratio:.0f} times its stored size; weights "
            "and meta.json never compress that much, so the archive is damaged or crafted: re-create it with "
            "`zero-prior export FILE --format zip`"
        )


def _check_size(where: str, size: int, limit: int) -> None:
    if size > limit:
        raise FormatError(f"{where} is {size} bytes, more than the {limit} bytes allowed for it; use the package "
                          "zero-prior wrote, or raise max_lora_bytes for a LoRA that really is that large")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path: Path) -> bytes:
    """A member's bytes, never more than its declared size (and ``limit``)."""
    _check_member(info, limit, path)
    try:
        with archive.open(info) as source:
            data = source.read(info.file_size + 1)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise _unreadable_zip(path, error) from None
    if len(data) != info.file_size:
        raise _unreadable_zip(path, f"{info.filename} holds {len(data)}+ bytes, declared {info.file_size}")
    return data


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limit: int, path: Path) -> None:
    """Write a member to ``target`` in chunks, stopping (and refusing) past its declared size."""
    _check_member(info, limit, path)
    written = 0
    with open(target, "wb") as destination:
        try:
            with archive.open(info) as source:
                while chunk := source.read(_CHUNK):
                    written += len(chunk)
                    if written > info.file_size:
                        raise _unreadable_zip(path, f"{info.filename} holds more than its declared {info.file_size} "
                                                    "bytes")
                    destination.write(chunk)
        except (zipfile.BadZipFile, EOFError) as error:
            raise _unreadable_zip(path, error) from None
    if written != info.file_size:
        raise _unreadable_zip(path, f"{info.filename} holds {written} bytes, declared {info.file_size}")


def _unreadable_zip(path: Path, reason: object) -> FormatError:
    return FormatError(f"{path}: not a readable zip archive ({reason}); pass a weights.zip written by "
                       "`zero-prior export --format zip` or by the Cog trainer")


def _exactly_one(where: Path, names: list[str]) -> None:
    if not names:
        raise FormatError(f"{where}: a weights package must hold exactly one .safetensors LoRA file, found none; "
                          "create it with `zero-prior export FILE --format zip`")
    if len(names) > 1:
        raise FormatError(
            f"{where}: a weights package must hold exactly one .safetensors LoRA file, found {len(names)} "
            f"({', '.join(names)}); a predictor would have to guess which to load. Keep only the trained file, "
            "or re-create the package with `zero-prior export FILE --format zip`"
        )


def _parse_meta_json(raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        message = f"{where}: not valid JSON ({error}); re-create the package with `zero-prior export`"
        raise FormatError(message) from None
    if not isinstance(data, dict):
        raise FormatError(f"{where}: must be a JSON object, got {type(data).__name__}; re-create the package with "
                          "`zero-prior export`")
    return data


def _decode(header: Mapping[str, str], label: str) -> ZeroPriorRecord | None:
    text = header.get(METADATA_KEY)
    return None if text is None else decode_record(text, source=label)


def _describe(layout: FileLayout, record: ZeroPriorRecord | None) -> dict[str, Any]:
    """meta.json as derived from one file (see ``describe_weights``)."""
    header, ranks = layout.metadata, layout.ranks
    first = record.placeholders[0] if record and record.placeholders else None
    training_info = _header_value(header, "training_info")
    steps = record.training_step if record else None
    if steps is None and isinstance(training_info, dict):
        steps = training_info.get("step")
    distinct = sorted(set(ranks))
    return {
        "base_model": record.base_model if record else None,
        "train_placeholder_token": record is not None,
        "placeholder_token": first.token if first else None,
        "placeholder_token_id": first.token_ids[0] if first else None,
        "placeholder_init": first.init if first else None,
        "placeholder_init_std": first.init_std if first and first.init == "zero_prior" else None,
        "vocab_size": record.tokenizer_length + sum(p.num_vectors for p in record.placeholders) if record else None,
        # one rank for a uniform LoRA (the common case), else every rank present
        "rank": distinct[0] if len(distinct) == 1 else (distinct or None),
        "training_steps": steps,
        **{key: _header_value(header, key) for key in TRAINING_KEYS},
        "version": META_JSON_VERSION,
        "format": FORMAT_NAME if record else None,
        "format_version": record.format_version if record else None,
        "hidden_size": record.hidden_size if record else None,
        "vector_sha256": vector_sha256(first.vectors) if first else None,
        "placeholders": [
            {"token": p.token, "token_ids": list(p.token_ids), "num_vectors": p.num_vectors,
             "vector_sha256": vector_sha256(p.vectors)}
            for p in record.placeholders
        ] if record else [],
    }


def _header_value(header: Mapping[str, str], key: str) -> Any:
    """ai-toolkit stores non-string values JSON-encoded; plain strings stay as they are."""
    if key not in header:
        return None
    try:
        return json.loads(header[key])
    except json.JSONDecodeError:
        return header[key]


def _check_meta_json(
    meta: Mapping[str, Any], expected: Mapping[str, Any], record: ZeroPriorRecord | None, label: str, where: str
) -> None:
    """Refuse a meta.json from the future, one that names a vector the file lacks, or one that disagrees."""
    version = meta.get("version", META_JSON_VERSION)
    major = str(version).split(".")[0]
    if not major.isdigit() or int(major) > int(META_JSON_VERSION.split(".")[0]):
        raise FormatError(f"{where}: meta.json version {version!r} is not supported by this release "
                          f"(reads {META_JSON_VERSION}); upgrade zero-prior to load this package")
    format_version = meta.get("format_version")
    if isinstance(format_version, int) and format_version > FORMAT_VERSION:
        raise FormatError(f"{where}: zero-prior format version {format_version} is not supported by this release "
                          f"(supports 1..{FORMAT_VERSION}); upgrade zero-prior to load this package")
    if record is None and (meta.get("train_placeholder_token") or meta.get("placeholder_token")):
        raise FormatError(
            f"{where} names placeholder {meta.get('placeholder_token')!r} but {label} carries no placeholder "
            f"vector (no {METADATA_KEY!r} metadata), so the token would be silently ignored; package the LoRA "
            "file the zero-prior training wrote (`zero-prior export FILE --format zip`)"
        )
    mismatches = [
        f"{key} is {meta[key]!r} in meta.json but {value!r} in the LoRA file"
        for key, value in expected.items()
        if key not in _NOT_COMPARED and value is not None and key in meta and meta[key] != value
    ]
    if mismatches:
        raise FormatError(
            f"{where} disagrees with {label}: " + "; ".join(mismatches)
            + ". The package mixes files from different runs; re-create it with `zero-prior export FILE --format zip`"
        )
