"""``PlaceholderConfig``: the one parsed, validated description of a placeholder token.

ai-toolkit silently drops YAML keys it does not know, which is how an earlier
attempt at this feature shipped settings that were never read. Here the
``placeholder:`` block is parsed exactly once, every key is checked (unknown
key, wrong type, out-of-range value) and the error names the full key path,
e.g. ``config.process[0].placeholder.init_std``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ConfigError
from ..yaml_reader import Block, as_number, check_type

INIT_KINDS = ("zero_prior", "word", "vocab_stats")
MAX_VECTORS = 64
DEFAULT_PATH = "placeholder"


@dataclass(frozen=True)
class PlaceholderConfig:
    """How one placeholder token is named, initialised and trained.

    >>> PlaceholderConfig.from_dict({"token": "<zwx>", "num_vectors": 2}).num_vectors
    2
    """

    token: str = field(default="<zwx>", metadata={"help": "the new token users write in prompts"})
    num_vectors: int = field(default=1, metadata={"help": "consecutive vectors the token expands to"})
    init: str = field(default="zero_prior", metadata={"help": f"one of {', '.join(INIT_KINDS)}"})
    init_std: float = field(default=1e-5, metadata={"help": "std of the normal start for init zero_prior"})
    init_word: str = field(default="person", metadata={"help": "phrase whose mean row starts init word"})
    seed: int = field(default=42, metadata={"help": "seed of the placeholder's own init generator"})
    lr: float | None = field(default=None, metadata={"help": "learning rate; default train.embedding_lr or train.lr"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay of the placeholder group"})
    lstrip: bool = field(
        default=False,
        metadata={"help": "stored with the token; must stay false (see validate)"},
    )
    verify_text_encoder: bool = field(
        default=False,
        metadata={"help": "record the text encoder's sha256 at start and at every save (slow on the 7B encoder)"},
    )
    stop_step: int | float | None = field(
        default=None,
        metadata={"help": "pivot: steps (int) or fraction of train.steps (float) after which the vector freezes, "
                  "every prompt is encoded once and the text encoder is unloaded; null trains it throughout"},
    )
    prefix_cache: bool | None = field(
        default=None,
        metadata={"help": "while the vector trains, compute the prompt positions before the token once per prefix; "
                  "null: on for the model families that support it"},
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, path: str = DEFAULT_PATH) -> None:
        """Raise ``ConfigError`` naming ``path.key`` for the first bad value."""
        _check_type(path, "token", self.token, str)
        if not self.token.strip():
            raise ConfigError(f"{path}.token is empty or whitespace; use a new string such as '<zwx>'")
        if self.token != self.token.strip():
            raise ConfigError(
                f"{path}.token {self.token!r} has leading or trailing whitespace; remove it"
            )
        _check_type(path, "num_vectors", self.num_vectors, int)
        if not 1 <= self.num_vectors <= MAX_VECTORS:
            raise ConfigError(f"{path}.num_vectors must be between 1 and {MAX_VECTORS}, got {self.num_vectors}")
        _check_type(path, "init", self.init, str)
        if self.init not in INIT_KINDS:
            raise ConfigError(f"{path}.init must be one of {', '.join(INIT_KINDS)}, got {self.init!r}")
        _check_type(path, "init_std", self.init_std, float)
        if not (math.isfinite(self.init_std) and 0 < self.init_std <= 1):
            raise ConfigError(f"{path}.init_std must be in (0, 1], got {self.init_std}")
        _check_type(path, "init_word", self.init_word, str)
        if self.init == "word" and not self.init_word.strip():
            raise ConfigError(f"{path}.init_word must name a word or phrase when init is 'word'")
        _check_type(path, "seed", self.seed, int)
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"{path}.seed must be a non-negative integer below 2**63, got {self.seed}")
        if self.lr is not None:
            _check_type(path, "lr", self.lr, float)
            if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
                raise ConfigError(f"{path}.lr must be in (0, 1], got {self.lr}")
        _check_type(path, "weight_decay", self.weight_decay, float)
        if not (math.isfinite(self.weight_decay) and 0 <= self.weight_decay <= 1):
            raise ConfigError(f"{path}.weight_decay must be in [0, 1], got {self.weight_decay}")
        _check_type(path, "lstrip", self.lstrip, bool)
        if self.lstrip:
            # An lstrip token swallows the template's newline before a prompt-initial token,
            # shifting the 34 positions the pipeline drops, so the token itself would be dropped.
            raise ConfigError(
                f"{path}.lstrip: true is not supported (the token would absorb the prompt "
                "template's newline and be dropped with the template); set lstrip: false"
            )
        _check_type(path, "verify_text_encoder", self.verify_text_encoder, bool)
        if self.stop_step is not None:
            if isinstance(self.stop_step, bool) or not isinstance(self.stop_step, (int, float)):
                raise ConfigError(
                    f"{path}.stop_step must be a step count (integer) or a fraction of train.steps (number "
                    f"between 0 and 1), got {type(self.stop_step).__name__} {self.stop_step!r}"
                )
            if isinstance(self.stop_step, int) and self.stop_step < 1:
                raise ConfigError(f"{path}.stop_step must be at least 1 step, got {self.stop_step}")
            if isinstance(self.stop_step, float) and not 0 < self.stop_step < 1:
                raise ConfigError(
                    f"{path}.stop_step {self.stop_step} is a float, so a fraction of train.steps: it must be "
                    "between 0 and 1 exclusive (write an integer for a step count)"
                )
        if self.prefix_cache is not None:
            _check_type(path, "prefix_cache", self.prefix_cache, bool)

    def pivot_step(self, total_steps: int) -> int | None:
        """The step at which the vector freezes, for a run of ``total_steps``; ``None`` without a pivot.

        A fraction is rounded with Python's ``round`` (halves to even) and is at least 1.

        >>> PlaceholderConfig(stop_step=0.25).pivot_step(1000)
        250
        """
        if self.stop_step is None:
            return None
        if isinstance(self.stop_step, float):
            return max(1, round(self.stop_step * total_steps))
        return self.stop_step

    @property
    def token_strings(self) -> tuple[str, ...]:
        """The tokenizer entries behind this placeholder, one per vector.

        ``<zwx>`` with 3 vectors becomes ``<zwx>``, ``<zwx_1>``, ``<zwx_2>``; a
        token without angle brackets gets ``_1``, ``_2`` appended.
        """
        return expanded_token_strings(self.token, self.num_vectors)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, path: str = DEFAULT_PATH) -> PlaceholderConfig:
        """Parse a YAML mapping strictly: unknown keys and wrong types are errors naming ``path.key``."""
        block = Block(raw, path, {f.name for f in fields(cls)}, kind="a placeholder setting")
        values = {key: _read_value(block, key) for key in block.raw}
        try:
            return cls(**values)
        except ConfigError as error:
            # __post_init__ names keys "placeholder.<key>"; give the caller's full path.
            message = str(error)
            if message.startswith(DEFAULT_PATH + "."):
                message = path + message[len(DEFAULT_PATH) :]
            raise ConfigError(message) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for JSON metadata and YAML round trips."""
        return dataclasses.asdict(self)


def expanded_token_strings(token: str, num_vectors: int) -> tuple[str, ...]:
    """Tokenizer entries for a placeholder of ``num_vectors`` vectors (see ``token_strings``)."""
    if token.startswith("<") and token.endswith(">") and len(token) > 2:
        extra = [f"{token[:-1]}_{i}>" for i in range(1, num_vectors)]
    else:
        extra = [f"{token}_{i}" for i in range(1, num_vectors)]
    return (token, *extra)


def _check_type(path: str, key: str, value: Any, expected: type) -> None:
    check_type(f"{path}.{key}", value, expected)


_FLOAT_KEYS = ("init_std", "lr", "weight_decay")


def _read_value(block: Block, key: str) -> Any:
    """One raw value, with YAML's string numbers ('1e-5') read as numbers and ints as floats where floats go."""
    value = block.get(key)
    if key == "stop_step" and isinstance(value, str):
        # A whole number written as a string ("500", "500.0") is a step count; anything else a fraction.
        number = float(as_number(block.key(key), value))
        return int(number) if number.is_integer() and number >= 1 else number
    if key in _FLOAT_KEYS and value is not None and not isinstance(value, bool):
        return block.number(key, None)
    return value
