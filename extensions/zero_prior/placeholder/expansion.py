"""Multi-vector placeholders expanded by the tokenizer itself, so every user of the tokenizer sees them.

A placeholder of ``n`` vectors is ``n`` consecutive tokenizer entries
(``<zwx>``, ``<zwx_1>``, ...); a prompt that says ``<zwx>`` must encode as all of
them. Patching one pipeline's ``encode_prompt`` misses every other route to the
same tokenizer: ``from_pipe`` (Img2Img, Inpaint...), a pipeline built from
``pipe.components``, the class-level ``encode_prompt``. So ``install_expansion``
gives the tokenizer object itself a subclass (``Expanding<Tokenizer>``) whose
``__call__``, ``encode`` and ``tokenize`` expand placeholders first; anything
holding that tokenizer expands. What cannot carry the expansion is refused
loudly: a saved tokenizer would reload as a plain one and read ``<zwx>`` as its
first vector only, so ``save_pretrained`` raises instead (save the base model
and load the LoRA after ``from_pretrained``, or ``unload_zero_prior`` first).
"""

from __future__ import annotations

import sys
from typing import Any

from ..errors import PlaceholderError
from .vocabulary import RegisteredToken, expand_prompt

# The tokenizer attribute holding the placeholders it expands.
EXPANSIONS = "_zero_prior_expansions"


def install_expansion(tokenizer: Any, tokens: list[RegisteredToken]) -> None:
    """Make ``tokenizer`` expand the multi-vector ``tokens`` in every text it encodes (idempotent).

    Example::

        install_expansion(pipe.tokenizer, [zwx])  # <zwx> has 2 vectors
        pipe.tokenizer("a photo of <zwx>").input_ids  # -> [..., 151665, 151666]
    """
    multi = [token for token in tokens if token.num_vectors > 1]
    if not multi:
        return
    known: list[RegisteredToken] = getattr(tokenizer, EXPANSIONS, [])
    setattr(tokenizer, EXPANSIONS, [*known, *(token for token in multi if token not in known)])
    if not isinstance(tokenizer, _ExpandingMixin):
        tokenizer.__class__ = _expanding_class(type(tokenizer))


def remove_expansion(tokenizer: Any, token_names: set[str]) -> None:
    """Stop expanding the placeholders named ``token_names``; with none left the tokenizer gets its own class back."""
    if not isinstance(tokenizer, _ExpandingMixin):
        return
    left = [token for token in getattr(tokenizer, EXPANSIONS) if token.token not in token_names]
    setattr(tokenizer, EXPANSIONS, left)
    if not left:
        tokenizer.__class__ = tokenizer.__class__.__mro__[2]  # (Expanding<X>, _ExpandingMixin, X, ...)
        delattr(tokenizer, EXPANSIONS)


def expanded_tokens(tokenizer: Any) -> list[RegisteredToken]:
    """The multi-vector placeholders ``tokenizer`` expands."""
    return list(getattr(tokenizer, EXPANSIONS, []))


class _ExpandingMixin:
    """Expands placeholders in the text arguments of the tokenizer's public encoding methods."""

    def _expand(self, text: Any) -> Any:
        tokens = getattr(self, EXPANSIONS, [])
        if isinstance(text, str):
            return expand_prompt(text, tokens)
        if isinstance(text, (list, tuple)) and all(isinstance(item, str) for item in text):
            return type(text)(expand_prompt(item, tokens) for item in text)
        return text  # pre-tokenized words or ids: nothing to expand

    def _expanded(self, args: tuple, kwargs: dict[str, Any], names: tuple[str, ...]) -> tuple[tuple, dict[str, Any]]:
        if kwargs.get("is_split_into_words"):
            return args, kwargs
        args = list(args)
        for index, name in enumerate(names):
            if index < len(args):
                args[index] = self._expand(args[index])
            elif name in kwargs:
                kwargs[name] = self._expand(kwargs[name])
        return tuple(args), kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = self._expanded(args, kwargs, ("text", "text_pair", "text_target", "text_pair_target"))
        return super().__call__(*args, **kwargs)

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = self._expanded(args, kwargs, ("text", "text_pair"))
        return super().encode(*args, **kwargs)

    def tokenize(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = self._expanded(args, kwargs, ("text", "pair"))
        return super().tokenize(*args, **kwargs)

    def save_pretrained(self, *args: Any, **kwargs: Any) -> Any:
        names = [token.token for token in getattr(self, EXPANSIONS, [])]
        raise PlaceholderError(
            f"this tokenizer expands the multi-vector placeholders {names} at run time, which a saved tokenizer "
            "cannot keep (reloaded, it would read each of them as its first vector only); save the pipeline "
            "before load_zero_prior and load the LoRA again after from_pretrained, or call unload_zero_prior first"
        )


def _expanding_class(base: type) -> type:
    """``Expanding<base>``, created once per tokenizer class and kept in this module (so it pickles by name)."""
    name = f"Expanding{base.__name__}"
    module = sys.modules[__name__]
    existing = getattr(module, name, None)
    if existing is None or existing.__mro__[2] is not base:
        existing = type(name, (_ExpandingMixin, base), {"__module__": __name__, "__qualname__": name})
        setattr(module, name, existing)
    return existing
