"""Encode prompts with the part before the placeholder computed once (any family of ``models``).

In a causal text encoder nothing before the first placeholder token depends on
the placeholder vectors: not its hidden states, not its keys and values. So
``PrefixCache.encode`` runs the encoder on that prefix once, without gradient,
keeps the per-layer key/value tensors and the final (post-norm) hidden states
per distinct prefix, and afterwards runs the encoder with gradient only from the first
placeholder on, feeding the cached keys/values as ``past_key_values`` and the
true rotary positions. The result equals the pipeline's ``encode_prompt``
(for Qwen-Image: same template, same 34 dropped positions, same right padding
with zero rows, same mask, ``None`` when nothing is padded).

A batch whose prompts have different prefix lengths reuses the *shortest*
prefix of the batch for every row (each row's own cached keys/values, cut to
that length); the rows' remaining prefix positions are recomputed with the
suffix, which costs a little time but nothing in exactness.

A prompt without a placeholder needs no gradient at all: it is encoded
without one and never stored (regularisation captions would otherwise fill
the cache with whole prompts). The cache holds at most ``max_entries``
prefixes and ``max_bytes`` of tensors, dropping the least recently used.

Entries are keyed by the prefix's token ids, not by the caption: captions
that start alike (most do, since ai-toolkit puts the trigger first) share
one entry, and a caption whose prefix tokenizes differently (new tokenizer
entries, an edited caption) can never hit a stale one. Every entry is dropped
when the text encoder's weights change, detected by a fingerprint:
``"version"`` (default) compares every parameter's and buffer's storage
pointer, in-place version counter and dtype, but misses writes through
``param.data``. ``"digest"`` adds per-tensor float64 sums (one pass over the
weights per call); ``"manual"`` trusts the caller to call ``invalidate()``.
Where each tensor lives (``_TensorSlots``) is found once and found again only
after a module, parameter or buffer was registered anywhere (torch's global
registration hooks): walking the module tree costs milliseconds per call at
the real encoder's ~750 tensors, reading the slots about a tenth of a
millisecond (``benchmarks/prefix_cache.py --fingerprint``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedTokenizerBase

from ..errors import ConfigError, PlaceholderError
from ..models import DEFAULT_FAMILY, ModelFamily, family_for_pipeline
from ..placeholder.splice import PlaceholderEmbedding

FINGERPRINTS = ("version", "digest", "manual")

# Bumped by torch's global hooks whenever any module, parameter or buffer is registered (see _TensorSlots).
_registrations = 0
_hooks_installed = False


def _count_registration(*_: object) -> None:
    global _registrations
    _registrations += 1


def _install_registration_hooks() -> None:
    """Count registrations process-wide (once per process); the hooks change nothing they see."""
    global _hooks_installed
    if _hooks_installed:
        return
    from torch.nn.modules import module

    module.register_module_module_registration_hook(_count_registration)
    module.register_module_parameter_registration_hook(_count_registration)
    module.register_module_buffer_registration_hook(_count_registration)
    _hooks_installed = True


class _TensorSlots:
    """The ``(_parameters or _buffers dict, name)`` of every tensor of a module tree, found by one walk.

    Reading a slot gets the tensor the module holds now, so a tensor put into
    an existing slot (``module.weight = ...``, ``_parameters[name] = ...``)
    is seen without a new walk; a new slot or submodule can only appear
    through a registration, after which ``current`` walks the tree again.
    """

    def __init__(self, root: nn.Module) -> None:
        _install_registration_hooks()
        self.root = root
        self.generation = -1
        self.slots: list[tuple[dict, str]] = []

    def current(self) -> list[torch.Tensor | None]:
        if self.generation != _registrations:
            self.generation = _registrations
            self.slots = [(store, name) for module in self.root.modules()
                          for store in (module._parameters, module._buffers) for name in store]
        return [store.get(name) for store, name in self.slots]


@dataclass
class _Prefix:
    """One caption's prefix: its token ids, per-layer keys/values and post-norm hidden states from the drop on."""

    token_ids: tuple[int, ...]
    keys: list[torch.Tensor]  # [1, kv_heads, prefix_len, head_dim] per layer
    values: list[torch.Tensor]
    hidden: torch.Tensor  # [max(0, prefix_len - drop), hidden]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values, self.hidden))


@dataclass
class CacheStats:
    """Counters since construction."""

    hits: int = 0
    misses: int = 0
    invalidations: int = 0
    uncached: int = 0  # prompts without a placeholder, encoded and not stored


class PrefixCache:
    """``encode_prompt`` that computes each caption's pre-placeholder prefix once.

    ``text_encoder`` is ``family``'s text encoder (for Qwen-Image a
    ``Qwen2_5_VLForConditionalGeneration``) whose input embedding carries the
    placeholders' splice hook (``add_placeholders``).
    The cache belongs to that one encoder; ``encode`` returns what
    ``pipe.encode_prompt(prompts, device)`` returns, with gradient to the
    placeholder vectors.

    Example::

        cache = PrefixCache.from_pipeline(pipe, placeholders)
        embeds, mask = cache.encode(["a photo of <zwx>", "<zwx> in a field"])
    """

    def __init__(
        self,
        text_encoder: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        placeholder_ids: Iterable[int],
        *,
        family: ModelFamily = DEFAULT_FAMILY,
        fingerprint: str = "version",
        max_entries: int = 4096,
        max_bytes: int = 512 * 2**20,
    ) -> None:
        if fingerprint not in FINGERPRINTS:
            raise ConfigError(f"fingerprint must be one of {', '.join(FINGERPRINTS)}, got {fingerprint!r}")
        if max_entries < 1:
            raise ConfigError(f"max_entries must be at least 1, got {max_entries}")
        if max_bytes < 0:
            raise ConfigError(f"max_bytes must not be negative, got {max_bytes}")
        self.placeholder_ids = frozenset(int(i) for i in placeholder_ids)
        if not self.placeholder_ids:
            raise PlaceholderError("PrefixCache needs at least one placeholder id")
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.fingerprint_kind = fingerprint
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.family = family
        self.max_length = family.max_length
        self.drop_idx = family.drop_idx
        self.stats = CacheStats()
        self._entries: OrderedDict[tuple[int, ...], _Prefix] = OrderedDict()
        self._bytes = 0
        self._fingerprint: tuple | None = None
        self._slots = _TensorSlots(text_encoder)
        layer_types = getattr(self._language_model.config, "layer_types", None) or []
        if any(kind != "full_attention" for kind in layer_types):
            raise PlaceholderError(
                f"PrefixCache supports full-attention layers only, the text encoder has {sorted(set(layer_types))}"
            )

    @classmethod
    def from_pipeline(cls, pipe, placeholders: Sequence[PlaceholderEmbedding], **kwargs) -> PrefixCache:
        """Cache for ``pipe``'s text encoder and tokenizer, stopping at any of ``placeholders``' ids."""
        family = family_for_pipeline(pipe)
        ids = [i for p in placeholders for i in p.registered.token_ids]
        return cls(family.text_encoder(pipe), family.tokenizer(pipe), ids, family=family, **kwargs)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes of the cached tensors."""
        return self._bytes

    def invalidate(self) -> None:
        """Drop every cached prefix (call after changing the encoder's weights with ``fingerprint="manual"``)."""
        if self._entries:
            self.stats.invalidations += 1
        self._entries.clear()
        self._bytes = 0

    def encode(
        self,
        prompts: str | Sequence[str],
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
        max_sequence_length: int = 1024,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(prompt_embeds, prompt_embeds_mask)`` exactly as ``QwenImagePipeline.encode_prompt`` returns them."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        device = device or self._language_model.embed_tokens.weight.device
        self._check_fingerprint()
        texts = [self.family.wrap_prompt(p) for p in prompts]
        tokens = self.tokenizer(
            texts, max_length=self.max_length + self.drop_idx, padding=True, truncation=True, return_tensors="pt"
        )
        input_ids, attention_mask = tokens.input_ids, tokens.attention_mask
        right_padded = bool((attention_mask.cummin(dim=1).values == attention_mask).all())
        if self.tokenizer.padding_side != "right" or not right_padded:
            raise PlaceholderError("PrefixCache needs right padding, as Qwen-Image's tokenizer does")
        lengths = attention_mask.sum(dim=1).tolist()
        rows = [input_ids[i, :n].tolist() for i, n in enumerate(lengths)]
        entries = [self._prefix(row, device) for row in rows]
        common = min(len(entry.token_ids) for entry in entries)

        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        suffix_ids = input_ids[:, common:]
        past = None
        if common > 0:
            past = DynamicCache(config=self._language_model.config)
            for layer, _ in enumerate(entries[0].keys):
                past.update(
                    torch.cat([e.keys[layer][:, :, :common] for e in entries]),
                    torch.cat([e.values[layer][:, :, :common] for e in entries]),
                    layer,
                )
        hidden = self.family.hidden_states(self.text_encoder, suffix_ids, attention_mask, common, past)

        split = []
        for i, (entry, length) in enumerate(zip(entries, lengths)):
            cached = entry.hidden[: max(0, common - self.drop_idx)]
            fresh = hidden[i, max(0, self.drop_idx - common) : length - common]
            split.append(torch.cat([cached.to(fresh.dtype), fresh]))
        return self._pad(split, device, num_images_per_prompt, max_sequence_length)

    # -- internals --------------------------------------------------------

    @property
    def _language_model(self) -> nn.Module:
        return self.family.decoder(self.text_encoder)

    def _prefix(self, row: list[int], device: torch.device) -> _Prefix:
        """The cached prefix of a tokenized prompt, computed without gradient on a miss."""
        first = next((j for j, t in enumerate(row) if t in self.placeholder_ids), None)
        # At least one position goes through the gradient pass, so a row never vanishes.
        length = min(len(row) if first is None else first, len(row) - 1)
        token_ids = tuple(row[:length])
        entry = self._entries.get(token_ids)
        if entry is not None and entry.hidden.device == device:
            self._entries.move_to_end(token_ids)
            self.stats.hits += 1
            return entry
        entry = self._compute(token_ids, device)
        if first is None:
            self.stats.uncached += 1
            return entry
        self.stats.misses += 1
        self._store(token_ids, entry)
        return entry

    def _compute(self, token_ids: tuple[int, ...], device: torch.device) -> _Prefix:
        """Keys/values of every layer and the post-norm hidden states of ``token_ids``, without gradient."""
        length = len(token_ids)
        if not length:
            hidden = torch.empty(0, self._language_model.config.hidden_size, device=device)
            return _Prefix(token_ids, [], [], hidden)
        ids = torch.tensor([token_ids], dtype=torch.long, device=device)
        past = DynamicCache(config=self._language_model.config)
        with torch.no_grad():
            hidden = self.family.hidden_states(self.text_encoder, ids, torch.ones_like(ids), 0, past)
        keys = [layer.keys.detach() for layer in past.layers]
        values = [layer.values.detach() for layer in past.layers]
        return _Prefix(token_ids, keys, values, hidden[0, self.drop_idx :].detach())

    def _store(self, token_ids: tuple[int, ...], entry: _Prefix) -> None:
        """Keep ``entry`` as the most recently used; drop the least recently used beyond the bounds."""
        previous = self._entries.pop(token_ids, None)
        if previous is not None:
            self._bytes -= previous.nbytes
        self._entries[token_ids] = entry
        self._bytes += entry.nbytes
        while len(self._entries) > 1 and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.nbytes

    def _pad(self, split, device, num_images_per_prompt, max_sequence_length):
        """Right-pad with zero rows and build the mask, as ``_get_qwen_prompt_embeds``/``encode_prompt`` do."""
        max_len = max(u.size(0) for u in split)
        embeds = torch.stack([torch.cat([u, u.new_zeros(max_len - u.size(0), u.size(1))]) for u in split])
        mask = torch.stack(
            [torch.cat([torch.ones(u.size(0), dtype=torch.long, device=u.device),
                        torch.zeros(max_len - u.size(0), dtype=torch.long, device=u.device)]) for u in split]
        )
        embeds = embeds.to(dtype=self.text_encoder.dtype, device=device)[:, :max_sequence_length]
        mask = mask[:, :max_sequence_length]
        batch, seq_len, _ = embeds.shape
        embeds = embeds.repeat(1, num_images_per_prompt, 1).view(batch * num_images_per_prompt, seq_len, -1)
        mask = mask.repeat(1, num_images_per_prompt, 1).view(batch * num_images_per_prompt, seq_len)
        return embeds, (None if mask.all() else mask)

    def _check_fingerprint(self) -> None:
        """Drop every entry when the encoder's weights look different from last call."""
        if self.fingerprint_kind == "manual":
            return
        current = self._compute_fingerprint()
        if current != self._fingerprint:
            self.invalidate()
            self._fingerprint = current

    def _compute_fingerprint(self) -> tuple:
        tensors = [t for t in self._slots.current() if t is not None]
        # Shape and device changes come with a new storage (pointer); a slot emptied shortens the tuple.
        meta = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)
        if self.fingerprint_kind != "digest":
            return meta
        with torch.no_grad():
            sums = torch.stack([t.detach().double().sum() for t in tensors]
                               + [t.detach().double().square().sum() for t in tensors])
        return meta + tuple(sums.tolist())
