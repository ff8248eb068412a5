"""What a placeholder vector is doing: its size, how far it moved, what it resembles.

Logged during training so a user can see the token leave its near-zero
start (Adam moves every coordinate by about ``lr`` per step) and which
existing words it drifts towards.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .placeholder import PlaceholderEmbedding


@torch.no_grad()
def placeholder_stats(
    placeholder: PlaceholderEmbedding,
    embedding_weight: torch.Tensor | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    vocab_rows: int | None = None,
    top_k: int = 5,
) -> dict[str, Any]:
    """Norm, gradient norm, cosine to the start and (optionally) nearest tokens, per vector.

    Nearest tokens are found by cosine similarity against the first
    ``vocab_rows`` rows of ``embedding_weight`` (the real vocabulary; spare
    rows and other placeholders are excluded).

    >>> placeholder_stats(zwx)["norm"]  # doctest: +SKIP
    [0.000598]
    """
    vectors = placeholder.vectors.detach().float()
    initial = placeholder.initial.float()
    grad = placeholder.vectors.grad
    stats: dict[str, Any] = {
        "token": placeholder.registered.token,
        "norm": [float(n) for n in vectors.norm(dim=1)],
        "grad_norm": None if grad is None else [float(n) for n in grad.float().norm(dim=1)],
        "cosine_to_initial": [float(c) for c in torch.nn.functional.cosine_similarity(vectors, initial, dim=1)],
    }
    if embedding_weight is not None and tokenizer is not None:
        rows = embedding_weight[: vocab_rows or len(tokenizer)]
        stats["nearest_tokens"] = nearest_tokens(vectors, rows, tokenizer, top_k)
    return stats


@torch.no_grad()
def nearest_tokens(
    vectors: torch.Tensor, rows: torch.Tensor, tokenizer: PreTrainedTokenizerBase, top_k: int = 5
) -> list[list[tuple[str, float]]]:
    """The ``top_k`` vocabulary entries closest by cosine to each vector, decoded."""
    normed_rows = torch.nn.functional.normalize(rows.float(), dim=1)
    normed = torch.nn.functional.normalize(vectors.to(rows.device).float(), dim=1)
    scores, ids = (normed @ normed_rows.T).topk(min(top_k, rows.shape[0]), dim=1)
    return [
        [(tokenizer.decode([int(i)]), round(float(s), 4)) for i, s in zip(row_ids, row_scores)]
        for row_ids, row_scores in zip(ids, scores)
    ]
