"""A ComfyUI CLIP tokenizer that reads zero-prior placeholders as their trained vectors.

ComfyUI's tokenizers turn a prompt into ``(token, weight)`` pairs per text
encoder, and its ``SDClipModel.process_tokens`` inserts any tensor found in
place of a token id as that position's input embedding (the route its
``embedding:name`` files take). ``with_placeholders`` therefore registers each
placeholder on the encoder's own transformers tokenizer, exactly as training
did (``placeholder.vocabulary``: ``AddedToken``, no lstrip, checked inside the
family's template; multi-vector placeholders expand through
``placeholder.expansion``), and ``PlaceholderTokenizer`` replaces those ids by
the vectors after ComfyUI tokenized the whole templated prompt in one piece.
So the token sequence is the one training saw (the template, the whitespace,
a token at the end of the prompt), with no ``embedding:`` syntax.

Ids are ComfyUI's, never the file's: its bundled Qwen2.5 tokenizer has 151669
entries (151665 is ``<|img|>`` there), so a new token gets whatever id it
gives. Nothing here imports ComfyUI; the tokenizer it wraps is duck-typed
(``tokenize_with_weights`` and an attribute per encoder holding an
``SDTokenizer`` with ``.tokenizer`` and ``.inv_vocab``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import PlaceholderError
from ..models import ModelFamily
from ..placeholder.config import PlaceholderConfig
from ..placeholder.expansion import install_expansion
from ..placeholder.vocabulary import RegisteredToken, light_copy, register_placeholders
from ..weights.format import StoredPlaceholder


@dataclass(frozen=True)
class TokenizerPlaceholder:
    """A placeholder as one ``PlaceholderTokenizer`` knows it: ComfyUI's ids and the rows it inserts."""

    registered: RegisteredToken
    rows: torch.Tensor  # fp32 [num_vectors, hidden], the stored vectors times the token strength
    source: str  # the file it came from, for messages


class PlaceholderTokenizer:
    """Wraps a ComfyUI tokenizer (its own copy) and inserts each placeholder's vector in place of its id.

    Everything but ``tokenize_with_weights`` is the wrapped tokenizer's, so
    ComfyUI nodes that read other attributes (``untokenize``, ``state_dict``,
    the per-encoder tokenizers) see the tokenizer they expect.
    """

    def __init__(self, base: Any, encoder_key: str, placeholders: Sequence[TokenizerPlaceholder]) -> None:
        self.base = base
        self.encoder_key = encoder_key
        self.placeholders = tuple(placeholders)
        self._rows = {
            token_id: placeholder.rows[index]
            for placeholder in self.placeholders
            for index, token_id in enumerate(placeholder.registered.token_ids)
        }

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, list]:
        """ComfyUI's tokenization of ``text``, each placeholder id replaced by its vector (weight and word id kept)."""
        tokens = self.base.tokenize_with_weights(text, return_word_ids, **kwargs)
        for batch in tokens.get(self.encoder_key, []):
            for index, item in enumerate(batch):
                if isinstance(item[0], int) and item[0] in self._rows:
                    batch[index] = (self._rows[item[0]], *item[1:])
        return tokens

    def __getattr__(self, name: str) -> Any:
        if name == "base":  # not set yet (copy or unpickle): never recurse
            raise AttributeError(name)
        return getattr(self.base, name)


def with_placeholders(
    tokenizer: Any,
    encoder_key: str,
    placeholders: Sequence[StoredPlaceholder],
    token_scale: float,
    family: ModelFamily,
    label: str,
    row_dtype: torch.dtype = torch.float32,
) -> PlaceholderTokenizer:
    """A new tokenizer: ``tokenizer`` (left unchanged) plus ``placeholders`` with their vectors times ``token_scale``.

    The rows are rounded to ``row_dtype`` (the encoder's embedding dtype) and
    kept in fp32: a token's own row reaches ComfyUI's encoder that way, and
    diffusers' ``load_zero_prior`` writes the vector into a row of that dtype.

    ``tokenizer`` is a ComfyUI tokenizer or a ``PlaceholderTokenizer`` from an
    earlier node (its placeholders are kept). A placeholder already there is
    reused when its rows are the same, and refused (``PlaceholderError``)
    otherwise; a new one is refused when the vocabulary already has it or it
    would not stay one token inside ``family``'s template. Checked before
    anything is built.

    Example::

        clip.tokenizer = with_placeholders(clip.tokenizer, "qwen25_7b", record.placeholders, 1.0, QWEN_IMAGE, path)
    """
    known = list(tokenizer.placeholders) if isinstance(tokenizer, PlaceholderTokenizer) else []
    base = tokenizer.base if isinstance(tokenizer, PlaceholderTokenizer) else tokenizer
    by_name = {placeholder.registered.token: placeholder for placeholder in known}
    fresh = []
    for stored in placeholders:
        rows = (stored.vectors.float() * token_scale).to(row_dtype).float()
        existing = by_name.get(stored.token)
        if existing is None:
            fresh.append((stored, rows))
        elif existing.registered.token_strings != tuple(stored.token_strings) or not torch.equal(existing.rows, rows):
            raise PlaceholderError(
                f"{label}: placeholder {stored.token!r} is already loaded on this CLIP (from {existing.source}) with "
                f"a different vector or token strength; load only one of them, or retrain one with another token"
            )
    new_base = copy.copy(base)
    inner = copy.copy(getattr(base, encoder_key))
    inner.tokenizer = light_copy(inner.tokenizer)
    inner.inv_vocab = dict(inner.inv_vocab)
    setattr(new_base, encoder_key, inner)
    configs = [PlaceholderConfig(token=stored.token, num_vectors=stored.num_vectors) for stored, _ in fresh]
    try:
        registered = register_placeholders(inner.tokenizer, configs, family)  # on the copy: ComfyUI's stays as it is
    except PlaceholderError as error:
        raise PlaceholderError(f"{label}: {error}") from None
    install_expansion(inner.tokenizer, registered)
    added = []
    for (_, rows), token in zip(fresh, registered, strict=True):
        inner.inv_vocab.update(zip(token.token_ids, token.token_strings, strict=True))
        added.append(TokenizerPlaceholder(token, rows, label))
    return PlaceholderTokenizer(new_base, encoder_key, [*known, *added])
