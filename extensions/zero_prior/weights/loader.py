"""``load_zero_prior``: apply a zero-prior LoRA to a diffusers pipeline of a supported family (``models``).

The LoRA comes as its ``.safetensors`` file, a ``weights.zip`` or an exported
folder (``package.open_weights`` reads and cross-checks those). Reading and
checking come first and touch nothing (package layout, file format, checksum,
version, hidden size, token conflicts, the LoRA tensors themselves); only
then, in one fenced block, are the tokens registered, the learned vectors
(times ``token_scale``) written into their embedding rows (never shrinking the
vocabulary) and the LoRA loaded at the asked strength. A file without
zero-prior metadata (a baseline run) loads as a plain LoRA with a notice.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import FormatError, PlaceholderError
from ..models import ModelFamily, family_for_pipeline
from ..placeholder.config import PlaceholderConfig
from ..placeholder.splice import ensure_embedding_rows
from ..placeholder.vocabulary import RegisteredToken, check_placeholders, expand_prompt, register_placeholders
from .format import StoredPlaceholder, ZeroPriorRecord
from .package import WeightsPackage, open_weights

logger = logging.getLogger(__name__)


@dataclass
class LoadResult:
    """What ``load_zero_prior`` did, for logs and for the caller's checks."""

    path: Path
    adapter_name: str
    lora_scale: float
    lora_tensors: int
    token_scale: float = 1.0
    tokens: list[RegisteredToken] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One human-readable line per fact."""
        lines = [f"loaded {self.path.name}: {self.lora_tensors} LoRA tensors as adapter "
                 f"{self.adapter_name!r} at scale {self.lora_scale}"]
        scaled = "" if self.token_scale == 1.0 else f", vector x {self.token_scale}"
        for token in self.tokens:
            state = ("already present, same vector" if token.token in self.reused else "registered") + scaled
            lines.append(f"placeholder {token.token!r}: ids {list(token.token_ids)} ({state})")
        lines.extend(self.notices)
        return "\n".join(lines)


def load_zero_prior(
    pipe: Any,
    path: str | os.PathLike[str],
    lora_scale: float = 1.0,
    adapter_name: str | None = None,
    token_scale: float = 1.0,
) -> LoadResult:
    """Load a zero-prior LoRA into ``pipe`` (a diffusers pipeline of a supported family, e.g. ``QwenImagePipeline``).

    ``path`` is the LoRA ``.safetensors``, a ``weights.zip`` or a folder from
    ``zero-prior export``. ``token_scale`` multiplies the learned vectors before
    they are written: 0 gives the token an all-zero row (about where training
    started), 1 the trained vector.

    Example::

        pipe = QwenImagePipeline.from_pretrained("Qwen/Qwen-Image")
        print(load_zero_prior(pipe, "my_subject.safetensors").summary())
        image = pipe("a photo of <zwx> on a beach").images[0]
    """
    if not math.isfinite(token_scale):
        raise PlaceholderError(f"token_scale must be a finite number, got {token_scale!r}; 1.0 is the trained vector")
    with open_weights(path) as package:
        return _load(pipe, package, float(lora_scale), adapter_name, float(token_scale))


def _load(
    pipe: Any, package: WeightsPackage, lora_scale: float, adapter_name: str | None, token_scale: float
) -> LoadResult:
    record, label, lora = package.record, package.label, package.lora_file
    family = family_for_pipeline(pipe)
    name = adapter_name or _adapter_name(package.source)
    plan = _plan_placeholders(pipe, family, record, label, token_scale) if record is not None else []
    # Read (and convert) the LoRA once up front so a bad file fails before any change;
    # the path, not this dict, is loaded below so diffusers also sees the file's own metadata.
    # Folder + weight_name: diffusers refuses a bare file path under HF_HUB_OFFLINE=1.
    source = {"pretrained_model_name_or_path_or_dict": str(lora.parent), "weight_name": lora.name}
    lora_tensors = len(pipe.lora_state_dict(**source))
    if name in _adapter_names(pipe):
        raise PlaceholderError(f"{label}: this pipeline already has an adapter named {name!r}; pass adapter_name")

    # --- everything is checked; from here on the pipeline changes ---
    active = list(pipe.get_active_adapters())
    pipe.load_lora_weights(**source, adapter_name=name)
    _activate(pipe, active, name, lora_scale)
    result = LoadResult(package.source, name, lora_scale, lora_tensors, token_scale)
    if active:
        result.notices.append(
            f"adapters {active} stay active alongside {name!r}; use pipe.set_adapters(...) to choose otherwise"
        )
    if record is None:
        result.notices.append(
            f"{package.source.name} has no zero-prior metadata: loaded as a plain LoRA (a baseline run); "
            "no placeholder token was registered"
        )
        logger.warning(result.notices[-1])
        return result
    tokenizer, text_encoder = family.tokenizer(pipe), family.text_encoder(pipe)
    for stored, existing in plan:
        if existing is not None:
            result.reused.append(stored.token)
            result.tokens.append(existing)
            continue
        [registered] = register_placeholders(tokenizer, [_config(stored)], check=False, family=family)
        ensure_embedding_rows(text_encoder, registered.token_ids)
        _write_rows(text_encoder, registered, stored.vectors * token_scale)
        result.tokens.append(registered)
    if any(token.num_vectors > 1 for token in result.tokens):
        _install_prompt_expansion(pipe, result.tokens)
    return result


def _plan_placeholders(
    pipe: Any, family: ModelFamily, record: ZeroPriorRecord, path: str, token_scale: float
) -> list[tuple[StoredPlaceholder, RegisteredToken | None]]:
    """Check every placeholder against the pipeline; return (stored placeholder, already-registered token)."""
    tokenizer, text_encoder = family.tokenizer(pipe), family.text_encoder(pipe)
    embedding = text_encoder.get_input_embeddings()
    if embedding.embedding_dim != record.hidden_size:
        raise FormatError(
            f"{path}: placeholder vectors have hidden size {record.hidden_size} but this pipeline's text "
            f"encoder has {embedding.embedding_dim}; the file was trained for another base model"
        )
    vocab = tokenizer.get_vocab()
    plan = []
    for stored in record.placeholders:
        config = _config(stored)
        if list(config.token_strings) != list(stored.token_strings):
            raise FormatError(f"{path}: placeholder {stored.token!r} lists entries {stored.token_strings}, "
                              f"expected {list(config.token_strings)}")
        present = [entry for entry in stored.token_strings if entry in vocab]
        existing = _existing(tokenizer, text_encoder, stored, present, path, token_scale) if present else None
        plan.append((stored, existing))
    check_placeholders(tokenizer, [_config(stored) for stored, existing in plan if existing is None], family)
    return plan


def _config(stored: StoredPlaceholder) -> PlaceholderConfig:
    return PlaceholderConfig(token=stored.token, num_vectors=stored.num_vectors)


def _existing(
    tokenizer: Any, text_encoder: Any, stored: StoredPlaceholder, present: list[str], path: str, token_scale: float
) -> RegisteredToken:
    """A token that is already registered may be reused only with the very same (scaled) vector."""
    if len(present) != len(stored.token_strings):
        raise PlaceholderError(f"{path}: only some entries of placeholder {stored.token!r} are in the tokenizer "
                               f"({present}); load it into a fresh pipeline")
    ids = tuple(tokenizer.convert_tokens_to_ids(list(stored.token_strings)))
    weight = text_encoder.get_input_embeddings().weight
    rows = (stored.vectors * token_scale).to(weight.dtype)
    if max(ids) >= weight.shape[0] or not torch.equal(weight[list(ids)].detach().cpu(), rows):
        raise PlaceholderError(
            f"{path}: placeholder token {stored.token!r} is already registered in this pipeline with a "
            f"different vector (or another token_scale than {token_scale}); load it into a fresh pipeline "
            "or rename the token"
        )
    return RegisteredToken(stored.token, tuple(stored.token_strings), ids)


@torch.no_grad()
def _write_rows(text_encoder: Any, registered: RegisteredToken, vectors: torch.Tensor) -> None:
    weight = text_encoder.get_input_embeddings().weight
    weight[list(registered.token_ids)] = vectors.to(device=weight.device, dtype=weight.dtype)


def _install_prompt_expansion(pipe: Any, placeholders: list[RegisteredToken]) -> None:
    """Make ``pipe.encode_prompt`` expand multi-vector placeholders into their entries."""
    known = getattr(pipe, "_zero_prior_placeholders", None)
    if known is None:
        known = []
        original = pipe.encode_prompt

        @functools.wraps(original)
        def encode_prompt(prompt: Any = None, *args: Any, **kwargs: Any) -> Any:
            if isinstance(prompt, str):
                prompt = expand_prompt(prompt, known)
            elif isinstance(prompt, list):
                prompt = [expand_prompt(p, known) for p in prompt]
            return original(prompt, *args, **kwargs)

        pipe.encode_prompt = encode_prompt
        pipe._zero_prior_placeholders = known
    known.extend(token for token in placeholders if token not in known)


def _activate(pipe: Any, active: list[str], name: str, lora_scale: float) -> None:
    """Activate ``name`` at ``lora_scale`` next to the adapters that were active before.

    ``set_adapters`` replaces the active set, so without this a second
    ``load_zero_prior`` would silently switch off the first file's LoRA while
    its token stayed registered. Scales set here are remembered on the
    pipeline; an adapter loaded by other code keeps diffusers' default 1.0.
    """
    scales: dict[str, float] = getattr(pipe, "_zero_prior_adapter_scales", {})
    scales[name] = lora_scale
    pipe._zero_prior_adapter_scales = scales
    names = [*active, name]
    pipe.set_adapters(names, adapter_weights=[scales.get(adapter, 1.0) for adapter in names])


def _adapter_names(pipe: Any) -> set[str]:
    return {name for names in pipe.get_list_adapters().values() for name in names}


def _adapter_name(path: Path) -> str:
    return re.sub(r"\W", "_", f"zero_prior_{path.stem}")
