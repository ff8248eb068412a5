"""What a placeholder vector is doing: its size, how far it moved, what it resembles.

Logged during training so a user can see the token leave its near-zero
start (Adam moves every coordinate by about ``lr`` per step) and which
existing words it drifts towards.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .splice import PlaceholderEmbedding


@torch.no_grad()
def placeholder_stats(
    placeholder: PlaceholderEmbedding,
    embedding_weight: torch.Tensor | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    tokenizer_length: int | None = None,
    top_k: int = 5,
) -> dict[str, Any]:
    """Norm, gradient norm, cosine to the start and (optionally) nearest tokens, per vector.

    Nearest tokens are found by cosine similarity against the first
    ``tokenizer_length`` rows of ``embedding_weight`` (the tokenizer's length
    before placeholders were added: the real vocabulary, without spare rows or
    other placeholders).

    Example::

        placeholder_stats(zwx)["norm"]  # -> [0.000598]
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
        rows = embedding_weight[: tokenizer_length or len(tokenizer)]
        stats["nearest_tokens"] = nearest_tokens(vectors, rows, tokenizer, top_k)
    return stats


@torch.no_grad()
def nearest_tokens(
    vectors: torch.Tensor, rows: torch.Tensor, tokenizer: PreTrainedTokenizerBase, top_k: int = 5
) -> list[list[tuple[str, float]]]:
    """The ``top_k`` vocabulary entries closest by cosine to each vector, decoded."""
    # In the weight's own dtype: a normalised fp32 copy of Qwen-Image's 152064x3584
    # matrix would cost 2.2 GB at every log step; only [n, rows] scores are made here.
    normed = torch.nn.functional.normalize(vectors.to(rows.device, rows.dtype), dim=1)
    row_norms = rows.norm(dim=1).float().clamp_min(1e-12)
    scores = (normed @ rows.T).float() / row_norms
    scores, ids = scores.topk(min(top_k, rows.shape[0]), dim=1)
    return [
        [(tokenizer.decode([int(i)]), round(float(s), 4)) for i, s in zip(row_ids, row_scores)]
        for row_ids, row_scores in zip(ids, scores)
    ]


@torch.no_grad()
def module_sha256(module: torch.nn.Module) -> str:
    """sha256 over every tensor of ``module.state_dict()`` (names and raw bytes, any dtype).

    An exact check that a frozen module did not change: the trainer records it
    before training and at every save when ``placeholder.verify_text_encoder``
    is on. It reads every byte, so it costs seconds on a 7B encoder.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
