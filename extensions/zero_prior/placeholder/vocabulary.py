"""Registering placeholder tokens in a model family's tokenizer, safely, and expanding them in prompts.

A token is checked before anything is added (free, not repeated) and then
with its entries added (one id per entry inside the family's full prompt
template, template prefix unchanged); a refusal takes the entries out again
exactly, so a refused token leaves the tokenizer as it was. A pipeline that
encodes with more than one tokenizer object (Qwen-Image-Edit-Plus: its
processor's own) gets the token on each, at the same ids. ``check_placeholders``
runs the same checks on copies (``light_copy``), which share the tokenizer's
read-only BPE model and own only its added-token list, so a copy costs a
fraction of a millisecond where a deep copy of the 151k-entry vocabulary
costs about a second. Lookups go to the backend one entry at a time
(``entry_id``, ``next_token_id``): ``get_vocab()`` and even
``len(tokenizer)`` build the whole 151k-entry map (about 120 and 45 ms each).
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from transformers import AddedToken, PreTrainedTokenizerBase

from ..errors import PlaceholderError
from ..models import DEFAULT_FAMILY, ModelFamily
from .config import PlaceholderConfig

# Places where a user writes a trigger word; each ``{t}`` is the placeholder.
# Covers start of prompt, punctuation before and after, brackets, quotes and
# the possessive, which are the contexts where BPE merges usually bite.
TOKEN_CONTEXTS: tuple[str, ...] = (
    "{t}",
    "{t} standing in a field",
    "a photo of {t}",
    "a photo of {t}.",
    "a photo of {t}, smiling",
    "{t}'s face",
    "({t})",
    "[{t}]",
    '"{t}"',
    "'{t}'",
    "a portrait of {t}! {t}?",
    "{t}:{t};{t}",
    "a-{t}-b",
)


@dataclass(frozen=True)
class RegisteredToken:
    """A placeholder as it lives in one tokenizer: its entries and their ids."""

    token: str
    token_strings: tuple[str, ...]
    token_ids: tuple[int, ...]

    @property
    def num_vectors(self) -> int:
        return len(self.token_ids)


def register_placeholders(
    tokenizers: PreTrainedTokenizerBase | Sequence[PreTrainedTokenizerBase],
    configs: Sequence[PlaceholderConfig],
    family: ModelFamily = DEFAULT_FAMILY,
) -> list[RegisteredToken]:
    """Add every placeholder's entries to ``tokenizers``, all or none.

    ``tokenizers`` is one tokenizer or every tokenizer a pipeline encodes
    with (``ModelFamily.tokenizers``); each gets the same entries at the same
    ids. Everything ``check_placeholders`` refuses is refused, and a refused
    token leaves every tokenizer as it was: names and vocabulary are checked
    before anything is added, the template once the entries are in, and a
    refusal there takes them out again exactly (``rebuild_added_tokens``). A
    tokenizer without a ``tokenizers`` backend, whose entries cannot be taken
    out, is checked on a copy first.

    Example::

        [zwx] = register_placeholders(tokenizer, [PlaceholderConfig()])
        zwx.token_ids  # -> (151665,)
    """
    group = tokenizer_group(tokenizers)
    if any(_backend(tokenizer) is None for tokenizer in group):
        check_placeholders(group, configs, family)
    return _add_checked(group, configs, family)


def check_placeholders(
    tokenizers: PreTrainedTokenizerBase | Sequence[PreTrainedTokenizerBase],
    configs: Sequence[PlaceholderConfig],
    family: ModelFamily = DEFAULT_FAMILY,
) -> None:
    """Refuse (``PlaceholderError``, naming the token and why) what cannot be registered.

    A token is refused if it is empty, already in the vocabulary, repeated, or
    does not encode to exactly its own ids inside ``family``'s prompt template
    in every context of ``TOKEN_CONTEXTS`` (start of prompt, punctuation,
    brackets, quotes, possessive), in each of ``tokenizers`` (one tokenizer,
    or all a pipeline encodes with, which must then give a new token the same
    ids). The checks run on copies (``light_copy``): no tokenizer is changed.
    """
    _add_checked([light_copy(tokenizer) for tokenizer in tokenizer_group(tokenizers)], configs, family)


def _add_checked(group: list, configs: Sequence[PlaceholderConfig], family: ModelFamily) -> list[RegisteredToken]:
    """Check, add and check in the template, placeholder by placeholder; on any refusal take every entry out again."""
    tokens = [config.token for config in configs]
    if len(set(tokens)) != len(tokens):
        raise PlaceholderError(f"placeholder tokens must be distinct, got {tokens}")
    next_ids = [next_token_id(tokenizer) for tokenizer in group]
    if configs and len(set(next_ids)) > 1:
        raise PlaceholderError(
            f"the pipeline's tokenizers hold {next_ids} entries, so placeholder {tokens[0]!r} would get different "
            "ids in each; load the tokenizer and the processor from the same model (and register tokens only "
            "through zero-prior)"
        )
    registered: list[RegisteredToken] = []
    attempted: set[str] = set()
    try:
        for config in configs:
            for tokenizer in group:
                _check_vocabulary(tokenizer, config)
            attempted.update(config.token_strings)
            [token, *_] = [_add_entries(tokenizer, config) for tokenizer in group]  # the same ids: same next id
            for tokenizer in group:
                _check_in_template(tokenizer, token, family)
            registered.append(token)
    except BaseException:
        for tokenizer in group:
            if attempted and _backend(tokenizer) is not None:
                rebuild_added_tokens(tokenizer, attempted)
        raise
    return registered


def tokenizer_group(tokenizers: PreTrainedTokenizerBase | Sequence[PreTrainedTokenizerBase]) -> list:
    """``tokenizers`` as a list (one tokenizer becomes a list of one); the same object named twice counts once."""
    group = [tokenizers] if isinstance(tokenizers, PreTrainedTokenizerBase) else list(tokenizers)
    if not group:
        raise PlaceholderError("no tokenizer to register the placeholder on")
    return [tokenizer for index, tokenizer in enumerate(group) if all(tokenizer is not t for t in group[:index])]


Tokenizer = TypeVar("Tokenizer", bound=PreTrainedTokenizerBase)


def entry_id(tokenizer: PreTrainedTokenizerBase, entry: str) -> int | None:
    """The id of vocabulary or added entry ``entry`` in ``tokenizer``, or None if it has none.

    Asks the backend for this one entry instead of building ``get_vocab()``.
    """
    backend = _backend(tokenizer)
    if backend is None:
        return tokenizer.get_vocab().get(entry)
    return backend.token_to_id(entry)


def next_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id ``add_tokens`` gives the next new entry: ``len(tokenizer)`` without counting the whole vocabulary.

    The ``tokenizers`` rule: one past the highest added id if that lies at
    or beyond the model's own vocabulary, else the model's vocabulary size.

    >>> from zero_prior.testbed import load_qwen_tokenizer
    >>> tokenizer = load_qwen_tokenizer()
    >>> next_token_id(tokenizer) == len(tokenizer)
    True
    """
    backend = _backend(tokenizer)
    if backend is None:
        return len(tokenizer)
    model_size = backend.get_vocab_size(with_added_tokens=False)
    added = [index for index in backend.get_added_tokens_decoder() if index >= model_size]
    return max(added) + 1 if added else model_size


def light_copy(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of ``tokenizer`` whose added tokens are its own; adding tokens to it leaves ``tokenizer`` as it is.

    A transformers tokenizer backed by the ``tokenizers`` library keeps its
    vocabulary and merges in a model that ``add_tokens`` never changes (added
    tokens live in a separate list), so the copy shares that model and gets
    its own ``tokenizers.Tokenizer`` with the same normalizer, pre-tokenizer,
    post-processor, decoder and added tokens; the wrapper's own dicts and
    lists are copied. Any other tokenizer is deep-copied.

    >>> from zero_prior.testbed import load_qwen_tokenizer
    >>> tokenizer = load_qwen_tokenizer()
    >>> probe = light_copy(tokenizer)
    >>> probe.add_tokens(["<zwx>"]), len(probe), len(tokenizer)
    (1, 151666, 151665)
    """
    backend = _backend(tokenizer)
    if backend is None:
        return copy.deepcopy(tokenizer)
    clone = copy.copy(tokenizer)
    for name, value in vars(tokenizer).items():
        if isinstance(value, (dict, list)):
            setattr(clone, name, copy.copy(value))
    clone._tokenizer, _ = _rebuilt_backend(backend, set())
    return clone


def rebuild_added_tokens(tokenizer: PreTrainedTokenizerBase, removed: set[str]) -> dict[int, int]:
    """Drop the added entries ``removed`` from ``tokenizer`` in place, as if they had never been added.

    The entries added after them move down to the ids they would have had
    (``tokenizers`` numbers added tokens in order); returns ``{old id: new id}``
    for every entry that moved.
    """
    backend = _backend(tokenizer)
    if backend is None:
        raise PlaceholderError(f"{type(tokenizer).__name__} is not a fast (tokenizers) tokenizer; placeholder tokens "
                               "can only be removed from one: load the pipeline again instead")
    tokenizer._tokenizer, moves = _rebuilt_backend(backend, removed)
    return moves


def _backend(tokenizer: PreTrainedTokenizerBase):  # -> tokenizers.Tokenizer | None
    import tokenizers

    inner = getattr(tokenizer, "_tokenizer", None)
    return inner if isinstance(inner, tokenizers.Tokenizer) else None


def _rebuilt_backend(inner, removed: set[str]):  # -> (tokenizers.Tokenizer, dict[int, int])
    """A new ``tokenizers.Tokenizer`` on ``inner``'s shared (read-only) model, its added tokens minus ``removed``."""
    import tokenizers

    fresh = tokenizers.Tokenizer(inner.model)
    for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        if getattr(inner, part) is not None:
            setattr(fresh, part, getattr(inner, part))
    kept = [(old_id, added) for old_id, added in sorted(inner.get_added_tokens_decoder().items())
            if added.content not in removed]
    # In order, one call per run of special / non-special entries: each call rebuilds the backend's added-token
    # matcher, so adding Qwen's 22 entries one by one cost ~2.7 ms per copy, in two runs ~0.4 ms.
    for special, run in itertools.groupby(kept, key=lambda item: item[1].special):
        (fresh.add_special_tokens if special else fresh.add_tokens)([added for _, added in run])
    moves = {}
    for old_id, added in kept:
        new_id = fresh.token_to_id(added.content)
        if new_id != old_id:
            moves[old_id] = new_id
    return fresh, moves


def expand_prompt(prompt: str, placeholders: Iterable[RegisteredToken]) -> str:
    """Replace each multi-vector placeholder by its consecutive entries.

    One left-to-right pass, longest match first, like the tokenizer's own
    added-token matching: an already expanded run is kept, and one
    placeholder's token inside another's (``zwx`` in ``<zwx>``) is not touched.

    >>> token = RegisteredToken("<zwx>", ("<zwx>", "<zwx_1>"), (151665, 151666))
    >>> expand_prompt("a photo of <zwx>", [token])
    'a photo of <zwx><zwx_1>'
    """
    replacements: dict[str, str] = {}
    for placeholder in placeholders:
        expansion = "".join(placeholder.token_strings)
        for text in (*placeholder.token_strings, expansion):
            replacements.setdefault(text, text)
        replacements[placeholder.token] = expansion
    if all(text == replacement for text, replacement in replacements.items()):
        return prompt
    pattern = re.compile("|".join(re.escape(text) for text in sorted(replacements, key=len, reverse=True)))
    return pattern.sub(lambda match: replacements[match.group(0)], prompt)


def _check_vocabulary(tokenizer: PreTrainedTokenizerBase, config: PlaceholderConfig) -> None:
    for entry in config.token_strings:
        if (index := entry_id(tokenizer, entry)) is not None:
            raise PlaceholderError(
                f"placeholder token {entry!r} already exists in the tokenizer vocabulary "
                f"(id {index}); choose a string that is not in it, such as '<zwx>'"
            )
        pieces = tokenizer.tokenize(entry)
        if len(pieces) == 1:
            raise PlaceholderError(
                f"placeholder token {entry!r} already exists in the tokenizer vocabulary as "
                f"{pieces[0]!r}; choose a string that is not in it, such as '<zwx>'"
            )


def _add_entries(tokenizer: PreTrainedTokenizerBase, config: PlaceholderConfig) -> RegisteredToken:
    first_id = next_token_id(tokenizer)
    entries = [
        AddedToken(entry, normalized=False, special=False, lstrip=config.lstrip, rstrip=False, single_word=False)
        for entry in config.token_strings
    ]
    added = tokenizer.add_tokens(entries)
    ids = tuple(tokenizer.convert_tokens_to_ids(list(config.token_strings)))
    if added != len(entries) or ids != tuple(range(first_id, first_id + len(entries))):
        raise PlaceholderError(
            f"placeholder token {config.token!r} did not get {len(entries)} new consecutive ids "
            f"(got {list(ids)} after {first_id}); the tokenizer may already hold some of its entries"
        )
    return RegisteredToken(config.token, config.token_strings, ids)


def _check_in_template(tokenizer: PreTrainedTokenizerBase, registered: RegisteredToken, family: ModelFamily) -> None:
    """Each context must keep the template prefix and contain exactly the token's ids."""
    drop = family.drop_idx
    prompts = [expand_prompt(context.format(t=registered.token), [registered]) for context in TOKEN_CONTEXTS]
    # One batched call (the backend encodes the batch in parallel); the empty prompt gives the template prefix.
    [empty, *encoded] = tokenizer([family.wrap_prompt(prompt) for prompt in ["", *prompts]])["input_ids"]
    prefix = empty[:drop]
    new_ids = set(registered.token_ids)
    for context, ids in zip(TOKEN_CONTEXTS, encoded):
        found = [i for i in ids if i in new_ids]
        expected = list(registered.token_ids) * context.count("{t}")
        shown = context.format(t=registered.token)
        if ids[:drop] != prefix:
            raise PlaceholderError(
                f"placeholder token {registered.token!r} changes the {family.label} template's "
                f"{drop}-token prefix in the prompt {shown!r}, so the pipeline would "
                "drop it; choose another string, such as '<zwx>'"
            )
        if found != expected:
            pieces = tokenizer.convert_ids_to_tokens(list(ids[drop:]))
            raise PlaceholderError(
                f"placeholder token {registered.token!r} does not stay one token inside the {family.label} "
                f"prompt template: {shown!r} encodes as {pieces}; choose a string that cannot merge "
                "with its neighbours, such as '<zwx>'"
            )
