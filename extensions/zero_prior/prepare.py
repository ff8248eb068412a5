"""Prepare a text encoder and tokenizer for placeholder training, and describe the result.

``add_placeholders`` is the training-side entry point: it checks every
placeholder on a copy of the tokenizer before touching anything, then
registers the tokens, makes sure the embedding has rows for them (never
shrinking it), draws the starting vectors and attaches the trainable splice.
``to_metadata`` turns the trained state into the file format's record.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn
from transformers import PreTrainedTokenizerBase

from . import __version__
from .config import PlaceholderConfig
from .format import PlaceholderRecord, ZeroPriorMetadata
from .initialization import initial_vectors
from .placeholder import PlaceholderEmbedding, ensure_embedding_rows
from .tokens import check_placeholders, register_placeholders


def add_placeholders(
    text_encoder: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    configs: Sequence[PlaceholderConfig],
) -> list[PlaceholderEmbedding]:
    """Register, initialise and attach every placeholder of ``configs``.

    Nothing in ``text_encoder`` is made trainable; the returned modules hold
    the only trainable tensors (``.vectors``). Either every placeholder is
    added or, on a ``PlaceholderError``, tokenizer and encoder are unchanged.

    >>> [zwx] = add_placeholders(pipe.text_encoder, pipe.tokenizer, [PlaceholderConfig()])  # doctest: +SKIP
    >>> optimizer = torch.optim.AdamW([{"params": [zwx.vectors], "weight_decay": 0.0}])  # doctest: +SKIP
    """
    check_placeholders(tokenizer, configs)
    vocab_rows = len(tokenizer)
    # The vectors are the only trainable tensors; pipelines load encoders with grads on.
    text_encoder.requires_grad_(False)
    embeddings = []
    for config, registered in zip(configs, register_placeholders(tokenizer, configs, check=False)):
        ensure_embedding_rows(text_encoder, registered.token_ids)
        weight = text_encoder.get_input_embeddings().weight
        start = initial_vectors(config, weight, tokenizer, vocab_rows)
        embedding = PlaceholderEmbedding(registered, start).to(weight.device)
        embedding.attach(text_encoder.get_input_embeddings())
        embeddings.append(embedding)
    return embeddings


def to_metadata(
    embeddings: Sequence[PlaceholderEmbedding],
    configs: Sequence[PlaceholderConfig],
    tokenizer_length: int,
    base_model: str | None = None,
    training_step: int | None = None,
    extra: dict[str, Any] | None = None,
) -> ZeroPriorMetadata:
    """Describe trained placeholders in the file format (vectors copied to CPU fp32).

    ``extra`` is stored as is (JSON) under the record's ``extra`` key.
    """
    records = [
        PlaceholderRecord(
            token=config.token,
            token_strings=list(embedding.registered.token_strings),
            token_ids=list(embedding.registered.token_ids),
            lstrip=embedding.registered.lstrip,
            init=config.init,
            init_std=config.init_std,
            init_seed=config.seed,
            init_word=config.init_word if config.init == "word" else None,
            vectors=embedding.vectors.detach().float().cpu().clone(),
            initial_norms=[float(n) for n in embedding.initial.norm(dim=1)],
        )
        for embedding, config in zip(embeddings, configs, strict=True)
    ]
    return ZeroPriorMetadata(
        placeholders=records,
        hidden_size=embeddings[0].hidden_size if embeddings else 0,
        tokenizer_length=tokenizer_length,
        base_model=base_model,
        training_step=training_step,
        library_version=__version__,
        extra=dict(extra or {}),
    )
