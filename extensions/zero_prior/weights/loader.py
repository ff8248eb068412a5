"""``load_zero_prior`` / ``unload_zero_prior``: a zero-prior LoRA and its token in a diffusers pipeline, and out again.

The LoRA comes as its ``.safetensors`` file, a ``weights.zip`` or an exported
folder (``package.open_weights`` reads and cross-checks those). Reading and
checking come first and touch nothing: package layout, file format, checksum,
finite vectors, version, hidden size, tokens already registered, every LoRA
tensor against the transformer's layers (``lora_check``), and whether this
very LoRA is already in the pipeline (loaded, or fused into a saved
pipeline). Only then, in one fenced block that is rolled back if anything in
it fails, are the new tokens registered (on every tokenizer the pipeline
encodes with, ``ModelFamily.tokenizers``; ``register_placeholders`` checks
each in the prompt template with its entries added and takes them out again
on a refusal), their rows written (never shrinking the vocabulary), the LoRA
loaded at the asked strength (the strengths of adapters already active are
kept) and multi-vector placeholders expanded by the tokenizer itself
(``placeholder.expansion``). A file without zero-prior metadata (a baseline
run) loads as a plain LoRA with a notice.

diffusers' own ``unload_lora_weights`` and ``delete_adapters`` remove LoRA
layers only: a token stays registered, its row keeps the vector.
``unload_zero_prior`` removes tokens, rows and their files' adapters, and puts
the tokenizer and the embedding back exactly as they were.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from ..errors import FormatError, PlaceholderError
from ..models import FAMILY_NAMES, family_for_pipeline, family_named
from ..placeholder.config import PlaceholderConfig
from ..placeholder.expansion import install_expansion, remove_expansion
from ..placeholder.splice import ensure_embedding_rows
from ..placeholder.vocabulary import RegisteredToken, entry_id, register_placeholders
from .applied import (
    AppliedFile,
    AppliedState,
    applied_state,
    remove_tokens,
    saved_records,
    set_saved_records,
    write_rows,
)
from .format import DAMAGED_FIX, StoredPlaceholder, ZeroPriorRecord
from .lora_check import (
    DIGEST_ROWS,
    DIGEST_SAMPLES,
    adapter_holds,
    base_scale,
    check_fits,
    lora_digest,
    read_lora,
    same_scales,
    weight_digest,
)
from .package import DEFAULT_MAX_LORA_BYTES, WeightsPackage, open_weights

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
    unchanged: bool = False  # the same file was already loaded as asked: nothing was done

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


@dataclass
class UnloadResult:
    """What ``unload_zero_prior`` removed."""

    tokens: list[str]
    adapters: list[str]


def load_zero_prior(
    pipe: Any,
    path: str | os.PathLike[str],
    lora_scale: float = 1.0,
    adapter_name: str | None = None,
    token_scale: float = 1.0,
    max_lora_bytes: int = DEFAULT_MAX_LORA_BYTES,
) -> LoadResult:
    """Load a zero-prior LoRA into ``pipe`` (a diffusers pipeline of a supported family, e.g. ``QwenImagePipeline``).

    ``path`` is the LoRA ``.safetensors``, a ``weights.zip`` or a folder from
    ``zero-prior export``. ``token_scale`` multiplies the learned vectors before
    they are written: 0 gives the token an all-zero row (about where training
    started), 1 the trained vector. ``max_lora_bytes`` bounds the LoRA member a
    weights.zip may make us extract.

    Example::

        pipe = QwenImagePipeline.from_pretrained("Qwen/Qwen-Image")
        print(load_zero_prior(pipe, "my_subject.safetensors").summary())
        image = pipe("a photo of <zwx> on a beach").images[0]
    """
    for name, value, meaning in (("lora_scale", lora_scale, "the LoRA as trained"),
                                 ("token_scale", token_scale, "the trained vector")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PlaceholderError(f"{name} must be a finite number, got {value!r}; 1.0 is {meaning}")
    with open_weights(path, max_lora_bytes=max_lora_bytes) as package:
        return _load(pipe, package, float(lora_scale), adapter_name, float(token_scale))


def unload_zero_prior(pipe: Any, token: str | None = None) -> UnloadResult:
    """Remove what ``load_zero_prior`` added: ``token`` (or every placeholder), its rows and its files' adapters.

    The tokenizer and the embedding end exactly as if the removed files had
    never been loaded (entries loaded after them keep working, at the ids a
    load without the removed ones gives). Every adapter loaded with a removed
    token is deleted; with ``token=None`` also the plain LoRAs ``load_zero_prior`` loaded.

    Example::

        load_zero_prior(pipe, "a.safetensors")
        unload_zero_prior(pipe)  # back to the base pipeline
    """
    family = family_for_pipeline(pipe)
    tokenizers, text_encoder = family.tokenizers(pipe), family.text_encoder(pipe)
    state = applied_state(text_encoder)
    if token is not None and token not in state.tokens:
        raise PlaceholderError(f"{token!r} was not registered by load_zero_prior in this pipeline (registered: "
                               f"{sorted(state.tokens)}); pass one of them, or token=None for all")
    names = set(state.tokens) if token is None else {token}
    files = list(state.files.values()) if token is None else [f for n in names for f in state.files_using(n)]
    present = _adapter_names(pipe)
    adapters = [applied.adapter_name for applied in files if applied.adapter_name in present]
    _remove_adapters(pipe, adapters)
    for tokenizer in tokenizers:
        remove_expansion(tokenizer, names)
    if names:
        remove_tokens(tokenizers, text_encoder, state, names)
    for applied in files:
        state.files.pop(applied.adapter_name, None)
    set_saved_records(text_encoder, [r for r in saved_records(text_encoder)
                                     if r["adapter"] not in {applied.adapter_name for applied in files}])
    return UnloadResult(tokens=sorted(names), adapters=adapters)


def _load(
    pipe: Any, package: WeightsPackage, lora_scale: float, adapter_name: str | None, token_scale: float
) -> LoadResult:
    record, label = package.record, package.label
    family = family_for_pipeline(pipe)
    if record is not None and record.family != family.name:
        trained_for = family_named(record.family).label if record.family in FAMILY_NAMES else record.family
        raise FormatError(f"{label} was trained for {trained_for}, but this is a {family.label} pipeline "
                          f"({type(pipe).__name__}); load it into a {trained_for} pipeline")
    tokenizers, text_encoder = family.tokenizers(pipe), family.text_encoder(pipe)
    state = applied_state(text_encoder)
    plan = _plan_placeholders(tokenizers, text_encoder, record, label, token_scale) if record else []
    lora, adapter_metadata = read_lora(pipe, package.lora_file, label)
    modules = check_fits(pipe.transformer, lora, label)
    refusal = family.lora_refusal(package.tensor_names)
    if refusal:
        raise FormatError(f"{label}: {refusal}")
    digest = lora_digest(lora)
    present = _adapter_names(pipe)
    loaded = _already_loaded(pipe, present, state, lora, adapter_metadata, digest, record, token_scale, lora_scale,
                             label)
    if loaded is not None:
        return LoadResult(package.source, loaded.adapter_name, lora_scale, len(lora), token_scale,
                          tokens=[existing for _, existing in plan], reused=list(loaded.tokens),
                          notices=[f"{label} is already loaded as adapter {loaded.adapter_name!r} with this vector "
                                   "and strength; nothing changed"], unchanged=True)
    _refuse_fused(pipe, present, text_encoder, lora, digest, label)
    name = adapter_name or _adapter_name(package.source)
    if name in present:
        raise PlaceholderError(f"{label}: this pipeline already has an adapter named {name!r}; pass another "
                               "adapter_name")
    active = list(pipe.get_active_adapters()) if present else []
    fingerprint = {"module": modules[0], "rows": DIGEST_ROWS, "sha256": weight_digest(pipe.transformer, modules[0])}

    # --- all that can be checked without a change is checked; from here on the pipeline changes, and any failure
    # rolls it back: first the new tokens (register_placeholders checks them in the template with their entries
    # added, and takes them out again on a refusal), then the LoRA ---
    result = LoadResult(package.source, name, lora_scale, len(lora), token_scale)
    registered_here: set[str] = set()
    rows_at_start, rows_before = text_encoder.get_input_embeddings().num_embeddings, state.rows_before
    try:
        for stored, existing in plan:
            if existing is not None:
                result.reused.append(stored.token)
                result.tokens.append(existing)
                continue
            [registered] = register_placeholders(tokenizers, [_config(stored)], family)
            state.tokens[stored.token] = registered
            registered_here.add(stored.token)
            grown = ensure_embedding_rows(text_encoder, registered.token_ids) != rows_at_start
            if grown and state.rows_before is None:
                state.rows_before = rows_at_start
            write_rows(text_encoder, state, registered.token_ids, stored.vectors * token_scale)
            result.tokens.append(registered)
        _load_lora(pipe, package.lora_file, lora, adapter_metadata, name)
        if present or lora_scale != 1.0:  # the only adapter, at full strength: diffusers leaves it so already
            _activate(pipe.transformer, [*active, name], name, lora_scale)
        for tokenizer in tokenizers:
            install_expansion(tokenizer, result.tokens)
    except BaseException:
        _roll_back(pipe, tokenizers, text_encoder, state, name, registered_here, rows_at_start, rows_before)
        raise
    tokens = [token.token for token in result.tokens]
    state.files[name] = AppliedFile(name, digest, tokens, token_scale)
    set_saved_records(text_encoder, [*saved_records(text_encoder),
                                     {"adapter": name, "lora_sha256": digest, "lora_samples": DIGEST_SAMPLES,
                                      "fingerprint": fingerprint}])
    if active:
        result.notices.append(f"adapters {active} stay active (at their strengths) alongside {name!r}; use "
                              "pipe.set_adapters(...) to choose otherwise")
    if record is None:
        result.notices.append(f"{package.source.name} has no zero-prior metadata: loaded as a plain LoRA (a baseline "
                              "run); no placeholder token was registered")
        logger.warning(result.notices[-1])
    return result


def _plan_placeholders(
    tokenizers: list[Any], text_encoder: Any, record: ZeroPriorRecord, path: str, token_scale: float,
) -> list[tuple[StoredPlaceholder, RegisteredToken | None]]:
    """Check every placeholder against the pipeline; return (stored placeholder, its registered token or None).

    A placeholder already registered is reused only as ``_existing`` allows; a new one is checked when it is
    registered (``register_placeholders``, inside the loader's fence).
    """
    embedding = text_encoder.get_input_embeddings()
    if embedding.embedding_dim != record.hidden_size:
        raise FormatError(
            f"{path}: placeholder vectors have hidden size {record.hidden_size} but this pipeline's text "
            f"encoder has {embedding.embedding_dim}; the file was trained for another base model: load it into "
            "the model it was trained for"
        )
    plan = []
    for stored in record.placeholders:
        config = _config(stored)
        if list(config.token_strings) != list(stored.token_strings):
            raise FormatError(f"{path}: placeholder {stored.token!r} lists entries {stored.token_strings}, expected "
                              f"{list(config.token_strings)}; {DAMAGED_FIX}")
        present = [entry for entry in stored.token_strings if entry_id(tokenizers[0], entry) is not None]
        existing = _existing(tokenizers, text_encoder, stored, present, path, token_scale) if present else None
        plan.append((stored, existing))
    return plan


def _config(stored: StoredPlaceholder) -> PlaceholderConfig:
    return PlaceholderConfig(token=stored.token, num_vectors=stored.num_vectors)


def _existing(
    tokenizers: list[Any], text_encoder: Any, stored: StoredPlaceholder, present: list[str], path: str,
    token_scale: float,
) -> RegisteredToken:
    """A token already registered (in every tokenizer, at the same ids) is reused only with the same scaled vector."""
    if len(present) != len(stored.token_strings):
        raise PlaceholderError(f"{path}: only some entries of placeholder {stored.token!r} are in the tokenizer "
                               f"({present}); load it into a fresh pipeline")
    entries = list(stored.token_strings)
    ids = tuple(tokenizers[0].convert_tokens_to_ids(entries))
    if any(tuple(other.convert_tokens_to_ids(entries)) != ids for other in tokenizers[1:]):
        raise PlaceholderError(f"{path}: placeholder {stored.token!r} is registered in the pipeline's tokenizers at "
                               "different ids (or in only some of them); load it into a fresh pipeline")
    weight = text_encoder.get_input_embeddings().weight
    rows = (stored.vectors * token_scale).to(weight.dtype)
    if max(ids) >= weight.shape[0] or not torch.equal(weight[list(ids)].detach().cpu(), rows):
        raise PlaceholderError(
            f"{path}: placeholder token {stored.token!r} is already registered in this pipeline with a "
            f"different vector (or another token_scale than {token_scale}); call unload_zero_prior(pipe, "
            f"{stored.token!r}) first, load it into a fresh pipeline, or rename the token"
        )
    return RegisteredToken(stored.token, tuple(stored.token_strings), ids)


def _already_loaded(
    pipe: Any, present: set[str], state: AppliedState, lora: dict[str, torch.Tensor],
    adapter_metadata: dict[str, Any] | None, digest: str, record: ZeroPriorRecord | None, token_scale: float,
    lora_scale: float, label: str,
) -> AppliedFile | None:
    """The live adapter of this very LoRA and vector at this strength, if any (refuses it at another strength).

    The sampled digest finds the candidates; the adapter's own tensors decide, so a LoRA that differs only
    where the digest does not look is loaded as the new LoRA it is.
    """
    candidates = state.same_lora(digest)
    if not candidates:
        return None
    tokens = {placeholder.token for placeholder in (record.placeholders if record else [])}
    for applied in candidates:
        if (applied.adapter_name not in present or set(applied.tokens) != tokens
                or not adapter_holds(pipe.transformer, applied.adapter_name, lora)):
            continue
        if not same_scales(pipe.transformer, applied.adapter_name, lora, adapter_metadata):
            raise PlaceholderError(
                f"{label} holds the LoRA tensors of adapter {applied.adapter_name!r}, but its adapter metadata "
                "gives them another alpha; loading it as well would apply those tensors twice. Call "
                "unload_zero_prior(pipe) first to load it with its own alpha"
            )
        weight = _adapter_weight(pipe.transformer, applied.adapter_name)
        if applied.token_scale == token_scale and weight is not None and math.isclose(weight, lora_scale):
            return applied
        raise PlaceholderError(
            f"{label} is already loaded as adapter {applied.adapter_name!r} (LoRA scale {weight}, token scale "
            f"{applied.token_scale}); loading it again would apply the LoRA twice. Change its strength with "
            f"pipe.set_adapters([{applied.adapter_name!r}], [{lora_scale}]), or unload_zero_prior(pipe) first"
        )
    return None


def _refuse_fused(
    pipe: Any, present: set[str], text_encoder: Any, lora: dict[str, torch.Tensor], digest: str, label: str
) -> None:
    """Refuse a LoRA whose record says it was applied here and whose target weights have changed since (fused).

    Each record is compared with a digest of the sample it was written with (``lora_samples``; absent in records
    that hashed every element). A fused LoRA has no adapter left to confirm against, so a LoRA that agrees with
    it on every sampled element (and differs only between them) is refused as well.
    """
    digests: dict[int | None, str] = {DIGEST_SAMPLES: digest}
    for saved in saved_records(text_encoder):
        if saved["adapter"] in present:
            continue
        samples = saved.get("lora_samples")
        if samples not in digests:
            digests[samples] = lora_digest(lora, samples)
        if saved["lora_sha256"] != digests[samples]:
            continue
        module = saved["fingerprint"]["module"]
        if weight_digest(pipe.transformer, module, saved["fingerprint"].get("rows")) != saved["fingerprint"]["sha256"]:
            raise PlaceholderError(
                f"{label} was already applied to this pipeline and its weights have changed since (fused with "
                "fuse_lora, then saved?), so loading it again would apply the LoRA twice; use the pipeline as it "
                "is (its token is still registered), or load the file into the base model"
            )


def _load_lora(pipe: Any, lora_file: Path, lora: dict[str, torch.Tensor], adapter_metadata: dict[str, Any] | None,
               name: str) -> None:
    """``load_lora_weights`` on the tensors ``read_lora`` read and checked, so the file is read once.

    From a dict diffusers reads exactly what it reads from the file: its converter leaves converted keys alone
    (``check_fits`` admitted only ``transformer.<module>.lora_A/B.weight``) and a file without adapter metadata
    gives none either way. A file with ``lora_adapter_metadata`` is loaded from the file, as a dict cannot carry
    that metadata and diffusers would otherwise take alpha == rank.
    """
    if adapter_metadata is None:
        pipe.load_lora_weights(lora, adapter_name=name)
    else:
        pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name, adapter_name=name)


def _activate(transformer: torch.nn.Module, names: list[str], new: str, lora_scale: float) -> None:
    """Make ``names`` the active adapters, ``new`` at ``lora_scale``, every other one at the strength it has.

    diffusers' ``set_adapters`` takes a weight for every adapter it activates,
    so calling it would reset strengths the user set; this does what it does
    layer by layer (activate, then scale) but scales only the new adapter.
    """
    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            module.set_adapter(names)
            module.set_scale(new, lora_scale)


def _adapter_weight(transformer: torch.nn.Module, name: str) -> float | None:
    """The strength (``set_adapters`` weight) ``name`` has in the first layer that holds it."""
    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer) and name in getattr(module, "scaling", {}):
            return module.scaling[name] / base_scale(module, name)
    return None


def _roll_back(pipe: Any, tokenizers: list[Any], text_encoder: Any, state: AppliedState, name: str,
               registered: set[str], rows: int, rows_before: int | None) -> None:
    """Undo a load that failed inside its fence: its adapter, tokens, rows and expansion.

    ``rows`` is the embedding's row count when the fence began (``rows_before`` the state's record of it then):
    rows this load added go again even while earlier loads' tokens keep ``remove_tokens`` from shrinking.
    """
    if name in _adapter_names(pipe):
        _remove_adapters(pipe, [name])
    for tokenizer in tokenizers:
        remove_expansion(tokenizer, registered)
    if registered:
        remove_tokens(tokenizers, text_encoder, state, registered)
    if text_encoder.get_input_embeddings().num_embeddings > rows:
        text_encoder.resize_token_embeddings(rows)
    state.rows_before = rows_before


def _remove_adapters(pipe: Any, names: list[str]) -> None:
    """Delete ``names``; when no adapter is left, take the LoRA layers out too (the transformer as loaded)."""
    if not names:
        return
    if _adapter_names(pipe) <= set(names):
        pipe.unload_lora_weights()  # removes the peft wrappers, which delete_adapters leaves behind
    else:
        pipe.delete_adapters(names)


def _adapter_names(pipe: Any) -> set[str]:
    return {name for names in pipe.get_list_adapters().values() for name in names}


def _adapter_name(path: Path) -> str:
    return re.sub(r"\W", "_", f"zero_prior_{path.stem}")
