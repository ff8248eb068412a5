"""Starting vectors for a placeholder: the zero prior and the ablation starts.

``zero_prior`` draws normal(0, init_std) from the placeholder's own seeded
CPU generator, so the draw is the same on every device and does not move the
global RNG streams that ai-toolkit's noise and data order depend on.
``word`` and ``vocab_stats`` exist for the ablation arms: a start that carries
a class word's prior, and a random start at the vocabulary's scale.
"""

from __future__ import annotations

import logging

import torch
from transformers import PreTrainedTokenizerBase

from ..errors import PlaceholderError
from .config import PlaceholderConfig

logger = logging.getLogger(__name__)


def initial_vectors(
    config: PlaceholderConfig,
    embedding_weight: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase,
    tokenizer_length: int,
) -> torch.Tensor:
    """Return the fp32 [num_vectors, hidden] start of ``config`` on the CPU.

    ``embedding_weight`` is the text encoder's input embedding and
    ``tokenizer_length`` the tokenizer's length before any placeholder was
    added: only those rows belong to real tokens, so spare rows are excluded
    from the vocabulary statistics.

    Example::

        initial_vectors(PlaceholderConfig(), weight, tokenizer, 151665).norm()  # -> tensor(0.0006)
    """
    shape = (config.num_vectors, embedding_weight.shape[1])
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    if config.init == "zero_prior":
        vectors = torch.randn(shape, generator=generator, dtype=torch.float32) * config.init_std
    elif config.init == "vocab_stats":
        std = embedding_weight[:tokenizer_length].detach().float().std().item()
        vectors = torch.randn(shape, generator=generator, dtype=torch.float32) * std
    else:
        vectors = _word_mean(config, embedding_weight, tokenizer).expand(shape).clone()
    logger.info(
        "placeholder %r init %s: norm %.3g over %d dims",
        config.token,
        config.init,
        vectors.norm(dim=1).mean().item(),
        shape[1],
    )
    return vectors


def _word_mean(
    config: PlaceholderConfig, embedding_weight: torch.Tensor, tokenizer: PreTrainedTokenizerBase
) -> torch.Tensor:
    # The leading space makes "person" encode as it does mid-sentence.
    ids = tokenizer(" " + config.init_word.strip(), add_special_tokens=False)["input_ids"]
    if not ids:
        raise PlaceholderError(f"placeholder.init_word {config.init_word!r} encodes to no tokens")
    return embedding_weight[ids].detach().float().cpu().mean(dim=0, keepdim=True)
