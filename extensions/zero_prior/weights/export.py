"""Export a trained zero-prior LoRA for other runtimes: a Cog ``weights.zip``, ComfyUI, diffusers.

The trained file already loads everywhere as a LoRA; what other runtimes lack
is the placeholder. Each format carries it in the form that runtime can use,
and ``load_zero_prior`` reads the ``zip`` and ``diffusers`` outputs back:

- ``zip``: ``DIR/weights.zip`` with ``lora/lora_weights.safetensors`` (the
  file unchanged, vector in its metadata) and ``meta.json`` (``archive``).
- ``comfyui``: the folder ``DIR`` with ``loras/`` (the file unchanged),
  ``embeddings/`` (one ``qwen25_7b`` [num_vectors, hidden] fp32 file per
  placeholder), ``meta.json`` and a README pointing to the ComfyUI node.
- ``diffusers``: the folder ``DIR`` with ``pytorch_lora_weights.safetensors``
  in diffusers' own ``transformer.*`` keys plus ``lora_adapter_metadata``, so
  its strength does not depend on how a loader guesses alpha, and ``meta.json``.

Every output is written under a temporary name next to it and renamed into
place (``fileio``), so an interrupted export leaves nothing half-written; an
existing output is replaced only with ``overwrite``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..errors import ExportError, FormatError
from ..fileio import atomic_file, atomic_folder, describe_os_error
from ..models import DEFAULT_FAMILY, FAMILY_NAMES, family_named
from .format import METADATA_KEY, read_header, save_lora_file
from .package import META_JSON, ZIP_LORA_MEMBER, WeightsPackage, describe_weights, open_weights

FORMATS = ("zip", "comfyui", "diffusers")
ZIP_NAME = "weights.zip"
DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what diffusers looks for in a folder
DIFFUSERS_METADATA_KEY = "lora_adapter_metadata"
COMFYUI_EMBEDDING_KEY = "qwen25_7b"  # ComfyUI's Qwen-Image text encoder reads this key
COMFYUI_README = "README.txt"
# The families the ComfyUI node (``comfyui.loading.COMFYUI_FAMILIES``, which imports ComfyUI) covers.
COMFYUI_NODE_FAMILIES = ("qwen_image", "qwen_image_edit_plus")


@dataclass
class ExportResult:
    """Where an export went and what it contains."""

    format: str
    output: Path  # DIR/weights.zip for zip, DIR itself for the folder formats
    files: list[str] = field(default_factory=list)  # relative to ``output`` (members for a zip)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line per file and note."""
        return "\n".join([f"wrote {self.output} ({self.format})", *(f"  {name}" for name in self.files), *self.notes])


def export_weights(
    source: str | os.PathLike[str], to: str | os.PathLike[str], fmt: str, overwrite: bool = False
) -> ExportResult:
    """Export ``source`` (a LoRA file, weights.zip or exported folder) as ``fmt`` into ``to``.

    The source is fully checked first (checksums, one LoRA per package,
    meta.json agreement). ``zip`` writes ``to/weights.zip``; ``comfyui`` and
    ``diffusers`` write the folder ``to``, which must not exist, be empty, or
    (with ``overwrite``) hold an earlier zero-prior export.

    Example::

        export_weights("my_subject.safetensors", "out", "zip").output  # -> PosixPath('out/weights.zip')
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    to = Path(to)
    _no_file_on_the_way(to)
    with open_weights(source) as package:
        try:
            if fmt == "zip":
                return _write_zip(package, _writable_file(to / ZIP_NAME, overwrite))
            writer: Callable[[WeightsPackage, Path], ExportResult]
            writer = _write_comfyui if fmt == "comfyui" else _write_diffusers
            with atomic_folder(_writable_folder(to, overwrite)) as staging:
                result = writer(package, staging)
        except OSError as error:  # unwritable place, full disk: nothing is left behind, say where and what to do
            raise ExportError(f"cannot export to {to}: {describe_os_error(error, error.filename or to)}") from error
        result.output = to
        return result


def _write_zip(package: WeightsPackage, target: Path) -> ExportResult:
    meta = json.dumps(describe_weights(package.lora_file, package.label), indent=2, sort_keys=True)
    with atomic_file(target) as tmp_name:
        # Stored, not deflated: fp16 weights do not compress, and predictors extract it on every cold start.
        with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.write(package.lora_file, ZIP_LORA_MEMBER)
            archive.writestr(META_JSON, meta + "\n", compress_type=zipfile.ZIP_DEFLATED)
    return ExportResult("zip", target, [ZIP_LORA_MEMBER, META_JSON], _notes(package))


def _write_comfyui(package: WeightsPackage, folder: Path) -> ExportResult:
    lora_name = f"loras/{_stem(package.source)}.safetensors"
    (folder / "loras").mkdir()
    shutil.copyfile(package.lora_file, folder / lora_name)
    files = [lora_name]
    embeddings = []
    if package.record is not None:
        (folder / "embeddings").mkdir()
        for index, record in enumerate(package.record.placeholders):
            name = re.sub(r"[^\w.-]", "", record.token) or f"placeholder_{index}"
            # fp32 as trained: ComfyUI casts to the encoder's dtype itself.
            save_file({COMFYUI_EMBEDDING_KEY: record.vectors.float().contiguous()},
                      str(folder / f"embeddings/{name}.safetensors"))
            embeddings.append((record.token, name, list(record.vectors.shape)))
            files.append(f"embeddings/{name}.safetensors")
    (folder / META_JSON).write_text(json.dumps(describe_weights(folder / lora_name), indent=2, sort_keys=True) + "\n")
    family = package.record.family if package.record is not None else None
    (folder / COMFYUI_README).write_text(_comfyui_readme(lora_name, embeddings, family), encoding="utf-8")
    files += [META_JSON, COMFYUI_README]
    notes = _notes(package)
    if embeddings and family in COMFYUI_NODE_FAMILIES:
        notes.append(f"ComfyUI: load {lora_name} with the node \"Load zero-prior LoRA\" (zero-prior install "
                     f"--comfyui PATH) and write the token as trained; see {COMFYUI_README}")
    return ExportResult("comfyui", folder, files, notes)


def _comfyui_readme(lora_name: str, embeddings: list[tuple[str, str, list[int]]], family: str | None) -> str:
    lines = [
        "zero-prior export for ComfyUI",
        "",
        f"{lora_name}  -> ComfyUI/models/loras/",
    ]
    lines += [f"embeddings/{name}.safetensors  (placeholder {token}, key '{COMFYUI_EMBEDDING_KEY}', shape {shape}, "
              "fp32; for tools that read embedding files)"
              for token, name, shape in embeddings]
    if not embeddings:
        return "\n".join(lines + ["", "This LoRA has no placeholder token (a baseline run): the LoRA is all; load it",
                                  "with LoraLoaderModelOnly on Qwen-Image.", ""])
    tokens = ", ".join(token for token, _, _ in embeddings)
    if family not in COMFYUI_NODE_FAMILIES:
        return "\n".join(lines + [
            "", f"This LoRA was trained for {_family_label(family)}; the ComfyUI node covers Qwen-Image and",
            "Qwen-Image-Edit-Plus files only (ComfyUI has their Qwen2.5-VL encoder). Generate with diffusers:",
            "zero_prior.load_zero_prior.",
            ""])
    lines += [
        "",
        "Using the token in ComfyUI: the custom node \"Load zero-prior LoRA\" (loaders).",
        "  zero-prior install --comfyui /path/to/ComfyUI      # links it into ComfyUI/custom_nodes/zero_prior",
        "Restart ComfyUI, then connect Qwen-Image's MODEL and CLIP (Load CLIP, type qwen_image) through the",
        f"node, pick {lora_name.split('/', 1)[1]} and write the token in the prompt as trained ({tokens}),",
        "without embedding: syntax. The node applies the LoRA at strength_model and gives the CLIP the token",
        "with its learned vector times strength_token (the prompt encodes exactly as in diffusers).",
        "An example workflow (API format): config_examples/comfyui_qwen_image_api.json in zero-prior.",
        "",
    ]
    return "\n".join(lines)


def _family_label(name: str | None) -> str:
    return family_named(name).label if name in FAMILY_NAMES else str(name)


def _write_diffusers(package: WeightsPackage, folder: Path) -> ExportResult:
    # diffusers' own reading of the file: exactly the tensors load_zero_prior would load.
    family = family_named(package.record.family) if package.record is not None else DEFAULT_FAMILY
    refusal = family.lora_refusal(package.tensor_names)
    if refusal:  # diffusers' converter would write the misread tensors into the export
        raise FormatError(f"{package.label}: {refusal}")
    pipeline = family.pipeline_type()
    state = pipeline.lora_state_dict(str(package.lora_file.parent), weight_name=package.lora_file.name)
    foreign = sorted(key for key in state if not key.startswith("transformer."))
    if foreign:
        raise FormatError(f"{package.label}: diffusers maps {len(foreign)} tensor(s) outside the transformer "
                          f"(first: {foreign[0]!r}); only transformer LoRAs can be exported")
    header = read_header(package.lora_file)
    header.pop(METADATA_KEY, None)  # re-written from the verified record below
    header[DIFFUSERS_METADATA_KEY] = json.dumps(_adapter_metadata(state), indent=2, sort_keys=True)
    target = folder / DIFFUSERS_WEIGHT_NAME
    save_lora_file(target, state, header, record=package.record)
    (folder / META_JSON).write_text(json.dumps(describe_weights(target), indent=2, sort_keys=True) + "\n")
    return ExportResult("diffusers", folder, [DIFFUSERS_WEIGHT_NAME, META_JSON], _notes(package))


def _adapter_metadata(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """peft ``LoraConfig`` kwargs under diffusers' ``transformer.`` prefix, alpha == rank per module.

    alpha == rank is the strength diffusers gives the file when it has to
    guess; writing it down makes that strength part of the file.
    """
    ranks = {key[len("transformer."):-len(".lora_A.weight")]: int(value.shape[0])
             for key, value in state.items() if key.endswith(".lora_A.weight")}
    rank = Counter(ranks.values()).most_common(1)[0][0]
    pattern = {module: r for module, r in sorted(ranks.items()) if r != rank}
    config = {
        "r": rank,
        "lora_alpha": rank,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "target_modules": sorted(ranks),
        "use_dora": False,
        "lora_bias": False,
    }
    return {f"transformer.{key}": value for key, value in config.items()}


def _notes(package: WeightsPackage) -> list[str]:
    if package.record is None:
        return [f"{package.label} has no placeholder (a baseline run): exported as a plain LoRA"]
    tokens = ", ".join(f"{p.token} ids {list(p.token_ids)}" for p in package.record.placeholders)
    return [f"placeholder: {tokens}"]


def _stem(source: Path) -> str:
    return source.stem if source.is_file() else source.name


def _no_file_on_the_way(to: Path) -> None:
    """Refuse ``--to`` under an existing file (``a.txt/out``): it could never become a folder."""
    for parent in [to, *to.parents]:
        if parent.exists():
            if not parent.is_dir() and parent != to:
                raise ExportError(f"{parent} is a file, so {to} cannot be created under it; choose another --to")
            return


def _writable_file(target: Path, overwrite: bool) -> Path:
    if target.parent.exists() and not target.parent.is_dir():
        raise ExportError(f"{target.parent} is a file, not a folder; choose a folder for --to")
    if target.is_dir() or (target.exists() and not overwrite):
        raise ExportError(f"{target} already exists; pass --overwrite to replace it or choose another --to")
    return target


def _writable_folder(folder: Path, overwrite: bool) -> Path:
    """Refuse a non-empty folder unless ``overwrite`` and it is an earlier export (never a user's folder)."""
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder} exists and is not a folder; choose another --to")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise ExportError(f"{folder} already exists and is not empty; pass --overwrite to replace an earlier "
                              "export or choose another --to")
        if not (folder / META_JSON).is_file():
            raise ExportError(f"{folder} was not written by zero-prior export (no {META_JSON}); --overwrite "
                              "replaces only earlier exports; choose another --to")
    return folder
