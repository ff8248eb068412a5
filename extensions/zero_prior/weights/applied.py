"""What ``load_zero_prior`` has applied to a pipeline, so it can be recognised, kept consistent and undone.

Two records, both kept with the pipeline's text encoder (so ``from_pipe`` and a
pipeline built from ``pipe.components`` share them):

- ``AppliedState`` (in memory): every file loaded (its adapter, the digest of
  its LoRA and which tokens it uses), the tokens zero-prior registered, and the
  original value of every embedding row it wrote, so ``remove_tokens`` can put
  the tokenizer and the rows back exactly;
- ``APPLIED_KEY`` in ``text_encoder.config`` (saved by ``save_pretrained``):
  per file the LoRA digest and the digest of one of its target weights before
  loading. A pipeline saved after ``fuse_lora`` keeps this record, so loading
  the same file into it again is recognised as applying the LoRA twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..placeholder.vocabulary import RegisteredToken, rebuild_added_tokens

# text_encoder.config attribute; a list of {"adapter", "lora_sha256", "lora_samples", "fingerprint": {"module",
# "rows", "sha256"}} ("lora_samples": the elements per tensor lora_digest hashed, absent in records that hashed every
# element; "rows": how many rows weight_digest hashed, absent in records that hashed the whole weight).
APPLIED_KEY = "zero_prior_applied"
_STATE = "_zero_prior_applied"


@dataclass
class AppliedFile:
    """One ``load_zero_prior`` call that changed the pipeline."""

    adapter_name: str
    lora_sha256: str
    tokens: list[str]  # placeholders this file's LoRA was trained with (registered by it or reused)
    token_scale: float


@dataclass
class AppliedState:
    """The zero-prior changes of one text encoder (and the tokenizer beside it)."""

    files: dict[str, AppliedFile] = field(default_factory=dict)  # adapter name -> file
    tokens: dict[str, RegisteredToken] = field(default_factory=dict)  # placeholder -> its entries and ids
    original_rows: dict[int, torch.Tensor] = field(default_factory=dict)  # row id -> value before the first write
    rows_before: int | None = None  # embedding rows before zero-prior grew it (None: never grown)

    def files_using(self, token: str) -> list[AppliedFile]:
        """The loaded files whose LoRA was trained with ``token``."""
        return [applied for applied in self.files.values() if token in applied.tokens]

    def same_lora(self, lora_sha256: str) -> list[AppliedFile]:
        """Loaded files with this LoRA content."""
        return [applied for applied in self.files.values() if applied.lora_sha256 == lora_sha256]


def applied_state(text_encoder: Any) -> AppliedState:
    """The text encoder's ``AppliedState`` (empty until something is loaded)."""
    state = getattr(text_encoder, _STATE, None)
    if state is None:
        state = AppliedState()
        setattr(text_encoder, _STATE, state)
    return state


def saved_records(text_encoder: Any) -> list[dict[str, Any]]:
    """The ``APPLIED_KEY`` records of ``text_encoder.config`` (those of a saved pipeline included)."""
    return list(getattr(text_encoder.config, APPLIED_KEY, None) or [])


def set_saved_records(text_encoder: Any, records: list[dict[str, Any]]) -> None:
    """Replace the ``APPLIED_KEY`` records (removed from the config when empty)."""
    if records:
        setattr(text_encoder.config, APPLIED_KEY, records)
    elif hasattr(text_encoder.config, APPLIED_KEY):
        delattr(text_encoder.config, APPLIED_KEY)


@torch.no_grad()
def write_rows(text_encoder: Any, state: AppliedState, ids: tuple[int, ...], vectors: torch.Tensor) -> None:
    """Write ``vectors`` into the embedding rows ``ids``, remembering each row's value before its first write."""
    weight = text_encoder.get_input_embeddings().weight
    vectors = vectors.to(device=weight.device, dtype=weight.dtype)
    for row, vector in zip(ids, vectors, strict=True):  # row by row: an index_put costs ~10 ms on a busy CPU
        state.original_rows.setdefault(row, weight[row].detach().cpu().clone())
        weight[row] = vector


@torch.no_grad()
def remove_tokens(tokenizers: list[Any], text_encoder: Any, state: AppliedState, names: set[str]) -> None:
    """Unregister the placeholders ``names``: the tokenizers and the rows end as if they had never been loaded.

    ``tokenizers`` are every tokenizer the pipeline encodes with (each held
    the same entries). Entries after the removed ones move down to the ids a
    load without them would have given, and their rows move with them; every
    row no longer used gets back the value it had before zero-prior first wrote it.
    """
    removed = {entry for name in names for entry in state.tokens[name].token_strings}
    [moves, *_] = [rebuild_added_tokens(tokenizer, removed) for tokenizer in tokenizers]
    weight = text_encoder.get_input_embeddings().weight
    for old, new in sorted(moves.items(), key=lambda move: move[1]):  # ascending new ids: nothing read is clobbered
        state.original_rows.setdefault(new, weight[new].detach().cpu().clone())
        weight[new] = weight[old]
    for name in names:
        del state.tokens[name]
    for name, token in list(state.tokens.items()):
        state.tokens[name] = RegisteredToken(token.token, token.token_strings,
                                             tuple(moves.get(i, i) for i in token.token_ids))
    in_use = {i for token in state.tokens.values() for i in token.token_ids}
    for row in [row for row in state.original_rows if row not in in_use]:
        if row < weight.shape[0]:
            weight[row] = state.original_rows.pop(row).to(device=weight.device, dtype=weight.dtype)
    if not state.tokens and state.rows_before is not None and weight.shape[0] > state.rows_before:
        text_encoder.resize_token_embeddings(state.rows_before)
        state.rows_before = None
