"""The zero-prior file format: a LoRA ``.safetensors`` whose metadata carries the placeholder.

The product's contract, versioned, in one module. The file holds only LoRA
tensors, so diffusers' ``QwenImagePipeline.load_lora_weights`` (which rejects
any other tensor) loads it unchanged; the placeholder travels in the
safetensors metadata under the single key ``zero_prior`` as one JSON string:
tokens, their training-time ids, flags, init settings, and the learned fp32
vectors as base64 with a sha256. Reading (this module) never touches a model;
applying lives in ``loader``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .. import __version__
from ..errors import FormatError
from ..fileio import atomic_file

if TYPE_CHECKING:
    from ..placeholder.config import PlaceholderConfig
    from ..placeholder.splice import PlaceholderEmbedding

METADATA_KEY = "zero_prior"
# Files written before the family was recorded hold Qwen-Image vectors (``models.qwen_image``).
DEFAULT_FAMILY_NAME = "qwen_image"
# The fix for a file whose record or tensors are damaged.
DAMAGED_FIX = "use the file the training wrote, or download it again"
FORMAT_NAME = "zero-prior"
FORMAT_VERSION = 1
# Tensor-name endings a LoRA file may hold (peft, kohya and alpha styles).
LORA_KEY_SUFFIXES = (
    ".lora_A.weight",
    ".lora_B.weight",
    ".lora_down.weight",
    ".lora_up.weight",
    ".alpha",
)


@dataclass
class StoredPlaceholder:
    """One trained placeholder as stored in a file (``token_ids`` are the training tokenizer's)."""

    token: str
    token_strings: list[str]
    token_ids: list[int]
    init: str
    init_std: float
    init_seed: int
    init_word: str | None
    vectors: torch.Tensor  # fp32 [num_vectors, hidden], CPU
    initial_norms: list[float] = field(default_factory=list)

    @property
    def num_vectors(self) -> int:
        return int(self.vectors.shape[0])


@dataclass
class ZeroPriorRecord:
    """Everything a file says about its placeholders: the record under ``METADATA_KEY``.

    ``tokenizer_length`` is the training tokenizer's length before the
    placeholders were added.
    """

    placeholders: list[StoredPlaceholder]
    hidden_size: int
    tokenizer_length: int
    base_model: str | None = None
    training_step: int | None = None
    library_version: str = ""
    # The model family (``models``) the vectors belong to; files from before families were recorded are Qwen-Image.
    family: str = DEFAULT_FAMILY_NAME
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)


def to_record(
    embeddings: Sequence[PlaceholderEmbedding],
    configs: Sequence[PlaceholderConfig],
    tokenizer_length: int,
    base_model: str | None = None,
    training_step: int | None = None,
    extra: dict[str, Any] | None = None,
    family: str = DEFAULT_FAMILY_NAME,
) -> ZeroPriorRecord:
    """Describe trained placeholders (``placeholder.splice`` modules) as a file record, vectors copied to CPU fp32.

    ``extra`` is stored as is (JSON) under the record's ``extra`` key.
    """
    placeholders = [
        StoredPlaceholder(
            token=config.token,
            token_strings=list(embedding.registered.token_strings),
            token_ids=list(embedding.registered.token_ids),
            init=config.init,
            init_std=config.init_std,
            init_seed=config.seed,
            init_word=config.init_word if config.init == "word" else None,
            vectors=embedding.vectors.detach().float().cpu().clone(),
            initial_norms=[float(n) for n in embedding.initial.norm(dim=1)],
        )
        for embedding, config in zip(embeddings, configs, strict=True)
    ]
    return ZeroPriorRecord(
        placeholders=placeholders,
        hidden_size=embeddings[0].hidden_size if embeddings else 0,
        tokenizer_length=tokenizer_length,
        base_model=base_model,
        training_step=training_step,
        library_version=__version__,
        family=family,
        extra=dict(extra or {}),
    )


def encode_record(record: ZeroPriorRecord) -> str:
    """Serialise ``record`` to the JSON string stored under ``METADATA_KEY``."""
    placeholders = []
    for stored in record.placeholders:
        vectors = stored.vectors.detach().to("cpu", torch.float32).contiguous()
        if vectors.dim() != 2 or vectors.shape[1] != record.hidden_size:
            raise FormatError(
                f"placeholder {stored.token!r} vectors have shape {list(vectors.shape)}, "
                f"expected [num_vectors, {record.hidden_size}]; build the record from the trained placeholder"
            )
        if not torch.isfinite(vectors).all():
            raise FormatError(
                f"placeholder {stored.token!r} has NaN or infinite values, and a file must never carry them; "
                "the training diverged: lower placeholder.lr, or use an earlier checkpoint"
            )
        raw = _vector_bytes(vectors)
        placeholders.append(
            {
                "token": stored.token,
                "token_strings": list(stored.token_strings),
                "token_ids": [int(i) for i in stored.token_ids],
                "num_vectors": int(vectors.shape[0]),
                # Format 1 has this field; tokens are always registered without lstrip.
                "lstrip": False,
                "init": stored.init,
                "init_std": float(stored.init_std),
                "init_seed": int(stored.init_seed),
                "init_word": stored.init_word,
                "initial_norms": [float(n) for n in stored.initial_norms],
                "vector_norms": [float(n) for n in vectors.norm(dim=1)],
                "vectors": {
                    "dtype": "float32",
                    "byteorder": "little",
                    "shape": list(vectors.shape),
                    "base64": base64.b64encode(raw).decode("ascii"),
                    "sha256": hashlib.sha256(raw).hexdigest(),
                },
            }
        )
    return json.dumps(
        {
            "format": FORMAT_NAME,
            "format_version": record.format_version,
            "library_version": record.library_version,
            "base_model": record.base_model,
            "family": record.family,
            "hidden_size": int(record.hidden_size),
            "tokenizer_length": int(record.tokenizer_length),
            "training_step": record.training_step,
            "placeholders": placeholders,
            **({"extra": record.extra} if record.extra else {}),
        },
        sort_keys=True,
    )


def vector_sha256(vectors: torch.Tensor) -> str:
    """sha256 of the vectors as stored: fp32, little-endian, row-major (the file's checksum)."""
    return hashlib.sha256(_vector_bytes(vectors)).hexdigest()


def _vector_bytes(vectors: torch.Tensor) -> bytes:
    return vectors.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()


def decode_record(text: str, source: str = "metadata") -> ZeroPriorRecord:
    """Parse and verify the JSON under ``METADATA_KEY`` (version, shapes, checksums)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise FormatError(f"{source}: the {METADATA_KEY!r} metadata is not valid JSON ({error}); "
                          f"{DAMAGED_FIX}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise FormatError(f"{source}: the {METADATA_KEY!r} metadata is not a zero-prior record; {DAMAGED_FIX}, "
                          "or remove that metadata key to load it as a plain LoRA")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise FormatError(
            f"{source}: zero-prior format version {version!r} is not supported by this release "
            f"(supports 1..{FORMAT_VERSION}); upgrade zero-prior to load it"
        )
    hidden = _field(data, "hidden_size", int, source)
    placeholders = [_decode_placeholder(item, hidden, source) for item in _field(data, "placeholders", list, source)]
    return ZeroPriorRecord(
        placeholders=placeholders,
        hidden_size=hidden,
        tokenizer_length=_field(data, "tokenizer_length", int, source),
        base_model=data.get("base_model"),
        family=_optional(data, "family", str, DEFAULT_FAMILY_NAME, source),
        training_step=data.get("training_step"),
        library_version=data.get("library_version", ""),
        format_version=version,
        extra=data.get("extra", {}),
    )


def save_lora_file(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    header: Mapping[str, str] | None = None,
    record: ZeroPriorRecord | None = None,
) -> Path:
    """Write a LoRA ``.safetensors`` atomically, with the placeholder in its metadata.

    Only LoRA tensors are accepted (see ``LORA_KEY_SUFFIXES``): an extra tensor
    would make diffusers refuse the file. The file is written to a temporary
    name in the same folder and renamed, so an interrupted save never leaves a
    half-written file under ``path``.

    Example::

        save_lora_file("out.safetensors", lora_sd, {"ss_steps": "100"}, record)
    """
    path = Path(path)
    foreign = sorted(key for key in state_dict if not key.endswith(LORA_KEY_SUFFIXES))
    if foreign:
        raise FormatError(
            f"{path}: {len(foreign)} tensor(s) are not LoRA weights (first: {foreign[0]!r}); "
            "the placeholder belongs in the metadata, not in the tensors: save only the LoRA's tensors"
        )
    text = {str(k): str(v) for k, v in (header or {}).items()}
    if record is not None:
        text[METADATA_KEY] = encode_record(record)
    else:
        text.pop(METADATA_KEY, None)
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in state_dict.items()}
    with atomic_file(path) as tmp_name:
        save_file(tensors, tmp_name, metadata=text)
    return path


@dataclass(frozen=True)
class FileLayout:
    """A ``.safetensors`` file as its header describes it: the metadata and every tensor's name and shape."""

    metadata: dict[str, str]
    shapes: dict[str, list[int]]  # tensor name as stored (before any converter renames it) -> shape

    @property
    def ranks(self) -> list[int]:
        """The rank of every LoRA pair (its down/A matrix's first dimension)."""
        down = (".lora_A.weight", ".lora_down.weight")
        return [shape[0] for key, shape in self.shapes.items() if key.endswith(down)]


def read_layout(path: str | os.PathLike[str], label: str | None = None) -> FileLayout:
    """Read a ``.safetensors`` file's header (one open, no tensor loaded); ``label`` names the file in errors.

    A tensor that is not floating point (integer, bool, complex) is refused here.
    """
    path = Path(path)
    label = label or str(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise FormatError(f"{label}: {what}; pass the LoRA .safetensors file a training wrote")
    try:
        with safe_open(str(path), framework="pt") as handle:
            slices = {key: handle.get_slice(key) for key in handle.keys()}
            layout = FileLayout(dict(handle.metadata() or {}),
                                {key: list(part.get_shape()) for key, part in slices.items()})
            dtypes = {key: part.get_dtype() for key, part in slices.items()}
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise FormatError(f"{label}: not a readable .safetensors file ({error}); {DAMAGED_FIX} "
                          "(a cut-off download or a .ckpt/.pt file is not a LoRA .safetensors)") from None
    # Every reader (loader, ComfyUI node, export, merge) starts here: a complex tensor would be cast to the float
    # layer without its imaginary part, an integer one scaled as if it were weights.
    for key, dtype in sorted(dtypes.items()):
        if not dtype.startswith(("F", "BF")):
            raise FormatError(f"{label}: tensor {key!r} is {dtype}, but a LoRA's tensors are floating point "
                              f"(F32, F16, BF16, ...); {DAMAGED_FIX}")
    return layout


def read_header(path: str | os.PathLike[str], label: str | None = None) -> dict[str, str]:
    """Return a ``.safetensors`` file's metadata header without loading its tensors (``label`` names it in errors)."""
    return read_layout(path, label).metadata


def read_zero_prior(path: str | os.PathLike[str]) -> ZeroPriorRecord | None:
    """Return the verified placeholder record of ``path``, or None for a plain LoRA."""
    text = read_header(path).get(METADATA_KEY)
    return None if text is None else decode_record(text, source=str(path))


def _decode_placeholder(item: Any, hidden: int, source: str) -> StoredPlaceholder:
    if not isinstance(item, dict):
        raise FormatError(f"{source}: a placeholder entry is not a mapping; {DAMAGED_FIX}")
    token = _field(item, "token", str, source)
    blob = _field(item, "vectors", dict, source)
    where = f"{source}: placeholder {token!r}"
    if "base64" not in blob:
        raise FormatError(f"{where} has no stored vector; the file was not written by a zero-prior training: "
                          "use the LoRA file zero_prior_trainer saved")
    try:
        raw = base64.b64decode(blob["base64"], validate=True)
    except (ValueError, TypeError):
        raise FormatError(f"{where}: the stored vector is not valid base64; {DAMAGED_FIX}") from None
    if hashlib.sha256(raw).hexdigest() != blob.get("sha256"):
        raise FormatError(f"{where}: checksum mismatch, the stored vector is corrupt or was edited; {DAMAGED_FIX}")
    shape = blob.get("shape")
    if blob.get("dtype") != "float32" or not isinstance(shape, list) or len(shape) != 2:
        raise FormatError(f"{where}: vectors must be float32 of shape [n, hidden], got {blob.get('dtype')} "
                          f"{shape}; {DAMAGED_FIX}")
    if shape[1] != hidden or shape[0] * shape[1] * 4 != len(raw):
        raise FormatError(f"{where}: vector shape {shape} does not match hidden size {hidden} or its data; "
                          f"{DAMAGED_FIX}")
    vectors = torch.from_numpy(np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape))
    if not torch.isfinite(vectors).all():
        raise FormatError(f"{where}: the stored vector has NaN or infinite values (the training diverged); "
                          "retrain with a lower placeholder.lr, or use an earlier checkpoint")
    token_ids = [int(i) for i in _field(item, "token_ids", list, source)]
    token_strings = [str(s) for s in _field(item, "token_strings", list, source)]
    if not (len(token_ids) == len(token_strings) == shape[0]):
        raise FormatError(f"{where}: {shape[0]} vectors but {len(token_strings)} token entries; {DAMAGED_FIX}")
    if item.get("lstrip", False) is not False:
        raise FormatError(f"{where} was registered with lstrip {item.get('lstrip')!r}; this release registers "
                          "tokens only without lstrip (an lstrip token absorbs the template's whitespace), so the "
                          "vector cannot be applied as trained; retrain it with placeholder.lstrip: false")
    return StoredPlaceholder(
        token=token,
        token_strings=token_strings,
        token_ids=token_ids,
        init=_field(item, "init", str, source),
        init_std=float(item.get("init_std", 0.0)),
        init_seed=int(item.get("init_seed", 0)),
        init_word=item.get("init_word"),
        vectors=vectors,
        initial_norms=[float(n) for n in item.get("initial_norms", [])],
    )


def _field(data: Mapping[str, Any], key: str, kind: type, source: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FormatError(f"{source}: zero-prior metadata field {key!r} is missing or not {kind.__name__}; "
                          f"{DAMAGED_FIX}")
    return value


def _optional(data: Mapping[str, Any], key: str, kind: type, default: Any, source: str) -> Any:
    value = data.get(key, default)
    if not isinstance(value, kind):
        raise FormatError(f"{source}: zero-prior metadata field {key!r} is not {kind.__name__}; {DAMAGED_FIX}")
    return value
