"""The trainable placeholder vectors and how they reach the text encoder.

Each placeholder owns one fp32 ``nn.Parameter`` of shape [num_vectors, hidden]
that lives *outside* the text encoder's module tree (ai-toolkit switches
``requires_grad`` off on the whole encoder after every sample). A forward hook
on the encoder's input embedding splices the vectors into its output wherever
the placeholder ids occur, so the gradient reaches the vectors and nothing in
the text encoder needs ``requires_grad``: every other row, every layer and
``lm_head`` stay bit-identical, whatever the optimizer does.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import PlaceholderError
from .vocabulary import RegisteredToken


class PlaceholderEmbedding(nn.Module):
    """fp32 vectors for one placeholder, spliced into an embedding's output by a hook.

    Attach and detach are symmetric and idempotent; the embedding weight is
    never modified. The splice is a ``torch.where`` over an id match, so it
    never synchronises with the host.

    Example::

        vectors = PlaceholderEmbedding(registered, initial)
        vectors.attach(text_encoder.get_input_embeddings())
    """

    def __init__(self, registered: RegisteredToken, initial: torch.Tensor) -> None:
        super().__init__()
        if initial.dim() != 2 or initial.shape[0] != registered.num_vectors:
            raise PlaceholderError(
                f"initial vectors for {registered.token!r} must have shape "
                f"[{registered.num_vectors}, hidden], got {list(initial.shape)}"
            )
        self.registered = registered
        self.vectors = nn.Parameter(initial.detach().to(torch.float32).clone())
        self.register_buffer("initial", initial.detach().to(torch.float32).clone())
        self.register_buffer("token_ids", torch.tensor(registered.token_ids, dtype=torch.long))
        self._handle: RemovableHandle | None = None
        self._embedding: nn.Embedding | None = None

    @property
    def hidden_size(self) -> int:
        return int(self.vectors.shape[1])

    def attach(self, embedding: nn.Embedding) -> None:
        """Start splicing into ``embedding``'s output (no-op if already attached to it)."""
        if self._embedding is embedding:
            return
        if self._handle is not None:
            raise PlaceholderError(f"placeholder {self.registered.token!r} is attached to another embedding")
        if embedding.embedding_dim != self.hidden_size:
            raise PlaceholderError(
                f"placeholder {self.registered.token!r} has hidden size {self.hidden_size} but the text "
                f"encoder's embedding has {embedding.embedding_dim}; it was trained for another model"
            )
        last_id = max(self.registered.token_ids)
        if last_id >= embedding.num_embeddings:
            raise PlaceholderError(
                f"placeholder id {last_id} is past the embedding's last row ({embedding.num_embeddings - 1}); "
                "call ensure_embedding_rows first"
            )
        self._handle = embedding.register_forward_hook(self._splice)
        self._embedding = embedding

    def detach(self) -> None:
        """Stop splicing (no-op if not attached)."""
        if self._handle is not None:
            self._handle.remove()
        self._handle = None
        self._embedding = None

    def _splice(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        input_ids = inputs[0]
        token_ids = self.token_ids.to(input_ids.device)
        matches = input_ids.unsqueeze(-1) == token_ids  # [..., num_vectors]
        vectors = self.vectors.to(device=output.device)
        replacement = matches.to(vectors.dtype) @ vectors  # exact: one 1.0 per matching row
        mask = matches.any(dim=-1, keepdim=True)
        return torch.where(mask, replacement.to(output.dtype), output)


def ensure_embedding_rows(text_encoder: nn.Module, token_ids: tuple[int, ...]) -> int:
    """Make sure the text encoder has a row for every id, never shrinking it.

    Qwen-Image's encoder has 152064 rows for a 151665-entry tokenizer, so new
    ids normally fall into existing spare rows and nothing changes. Only an id
    past the last row grows the embedding (to a multiple of 64), and never to
    ``len(tokenizer)``, which would shrink it. Returns the row count.
    """
    rows = text_encoder.get_input_embeddings().num_embeddings
    needed = max(token_ids) + 1
    if needed > rows:
        text_encoder.resize_token_embeddings(needed, pad_to_multiple_of=64)
        rows = text_encoder.get_input_embeddings().num_embeddings
    return rows
