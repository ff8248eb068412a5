"""Prepare a text encoder and tokenizer for placeholder training, in one call.

``add_placeholders`` is the training-side entry point: it checks every
placeholder on a copy of the tokenizer before touching anything, then
registers the tokens, makes sure the embedding has rows for them (never
shrinking it), draws the starting vectors and attaches the trainable splice.
``weights.format.to_record`` turns the trained state into the file's record.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..models import DEFAULT_FAMILY, ModelFamily
from .config import PlaceholderConfig
from .splice import PlaceholderEmbedding, ensure_embedding_rows
from .starts import initial_vectors
from .vocabulary import next_token_id, register_placeholders, tokenizer_group


def add_placeholders(
    text_encoder: nn.Module,
    tokenizers: PreTrainedTokenizerBase | Sequence[PreTrainedTokenizerBase],
    configs: Sequence[PlaceholderConfig],
    family: ModelFamily = DEFAULT_FAMILY,
) -> list[PlaceholderEmbedding]:
    """Register, initialise and attach every placeholder of ``configs``.

    Nothing in ``text_encoder`` is made trainable; the returned modules hold
    the only trainable tensors (``.vectors``). Either every placeholder is
    added or, on a ``PlaceholderError``, tokenizers and encoder are unchanged.
    ``tokenizers`` is the tokenizer, or every tokenizer the pipeline encodes
    with (``ModelFamily.tokenizers``); ``family`` names the prompt template
    the tokens are checked in.

    Example::

        [zwx] = add_placeholders(pipe.text_encoder, pipe.tokenizer, [PlaceholderConfig()])
        optimizer = torch.optim.AdamW([{"params": [zwx.vectors], "weight_decay": 0.0}])
    """
    group = tokenizer_group(tokenizers)
    tokenizer = group[0]
    tokenizer_length = next_token_id(tokenizer)  # len(tokenizer) counts the whole vocabulary (~50 ms)
    tokens = register_placeholders(group, configs, family)  # first: a refused token leaves everything as it was
    # The vectors are the only trainable tensors; pipelines load encoders with grads on.
    text_encoder.requires_grad_(False)
    embeddings = []
    for config, registered in zip(configs, tokens):
        ensure_embedding_rows(text_encoder, registered.token_ids)
        weight = text_encoder.get_input_embeddings().weight
        start = initial_vectors(config, weight, tokenizer, tokenizer_length)
        embedding = PlaceholderEmbedding(registered, start).to(weight.device)
        embedding.attach(text_encoder.get_input_embeddings())
        embeddings.append(embedding)
    return embeddings
