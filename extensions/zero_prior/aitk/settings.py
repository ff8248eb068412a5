"""Read and check the zero-prior part of an ai-toolkit process config before any model loads.

ai-toolkit's own config classes drop keys they do not know, and several of its
options silently cut the gradient that a placeholder token needs (NOTES.md
lists where). So ``ZeroPriorTrainer`` calls ``read_settings`` first thing in
its constructor: a wrong key, type or value, or an option that would make the
placeholder train on nothing, stops the job before ai-toolkit creates its
output folder, with an error that names the key and the fix. Nothing here
imports ai-toolkit, so the rules are testable without it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..config import PlaceholderConfig
from ..errors import ConfigError

QWEN_IMAGE_ARCH = "qwen_image"
ZERO_PRIOR_ARCH = "qwen_image_zero_prior"
TOGGLE = "train_placeholder_token"

# train.<flag>: why it cannot be combined with placeholder training.
_REFUSED_TRAIN_FLAGS = {
    "cache_text_embeddings": "prompt embeddings would be computed once, before the placeholder has learned anything, "
    "and would carry no gradient to it",
    "unload_text_encoder": "the text encoder would be replaced by fixed embeddings, so the placeholder would get no "
    "gradient",
    "diff_output_preservation": "ai-toolkit computes the preservation embeddings without gradient and relies on the "
    "trigger word having a meaning, which a brand-new token does not have",
    "train_text_encoder": "it makes the whole text encoder trainable; zero-prior trains only the placeholder vector "
    "and keeps every text-encoder tensor unchanged",
    "merge_network_on_save": "it saves a merged full model, which has no place for the placeholder vector",
}


# train.<flag> / datasets[].<flag>: caption randomness that makes the set of prompts open-ended, so the
# prompts cannot all be encoded at the pivot (placeholder.stop_step) before the text encoder goes.
_PIVOT_REFUSED_TRAIN_FLAGS = {
    "short_and_long_captions": "it encodes the short captions too",
    "prompt_saturation_chance": "it lengthens captions by repetition on randomly chosen steps",
    "do_cfg": "it encodes a negative prompt every step",
    "do_random_cfg": "it turns do_cfg on every step",
}
_PIVOT_REFUSED_DATASET_FLAGS = {
    "shuffle_tokens": "it shuffles the caption's parts every step",
    "token_dropout_rate": "it drops random caption parts every step",
    "random_triggers": "it appends random trigger words every step",
}
# ai-toolkit's TrainConfig default for train.steps.
AI_TOOLKIT_DEFAULT_STEPS = 1000


@dataclass(frozen=True)
class ZeroPriorSettings:
    """The checked zero-prior settings of one process (``enabled`` is the toggle).

    ``pivot_step`` is ``placeholder.stop_step`` resolved against
    ``train.steps`` (``None``: the vector trains for the whole run).
    """

    enabled: bool
    placeholder: PlaceholderConfig
    path: str
    pivot_step: int | None = None


def read_settings(process: Mapping[str, Any], index: int = 0) -> ZeroPriorSettings:
    """Check ``config.process[index]`` and return its zero-prior settings.

    Raises ``ConfigError`` naming the key for: a missing or non-boolean
    ``train.train_placeholder_token``; any problem in the ``placeholder:``
    block (checked even when the toggle is off, so a typo never goes
    unnoticed); and, with the toggle on, every setting that would cut the
    placeholder's gradient or drop it from the saved file.

    >>> read_settings({"train": {"train_placeholder_token": False}}).enabled
    False
    """
    path = f"config.process[{index}]"
    train = _mapping(process, "train", path)
    enabled = train.get(TOGGLE)
    if not isinstance(enabled, bool):
        raise ConfigError(
            f"{path}.train.{TOGGLE} must be true or false, got {enabled!r}: true trains the placeholder token "
            "with the LoRA, false runs ai-toolkit's own LoRA training (the baseline)"
        )
    placeholder = PlaceholderConfig.from_dict(process.get("placeholder"), path=f"{path}.placeholder")
    pivot_step = None
    if enabled:
        _refuse_conflicts(process, train, placeholder, path)
        pivot_step = _pivot_step(process, train, placeholder, path)
    return ZeroPriorSettings(enabled=enabled, placeholder=placeholder, path=path, pivot_step=pivot_step)


def effective_config(process: Mapping[str, Any], settings: ZeroPriorSettings) -> Any:
    """A copy of ``process`` as ai-toolkit must see it when the toggle is on.

    ``trigger_word`` defaults to the token (ai-toolkit copies it into every
    dataset config inside ``SDTrainer.__init__``, so it must be set before
    that), and the model arch becomes this extension's Qwen-Image subclass.
    The user's dict is left as written, so the ``config.yaml`` ai-toolkit
    saves next to the LoRA is the one the user ran.
    """
    result = copy.deepcopy(process)
    if result.get("trigger_word") is None:
        result["trigger_word"] = settings.placeholder.token
    result["model"]["arch"] = ZERO_PRIOR_ARCH
    return result


def _refuse_conflicts(
    process: Mapping[str, Any], train: Mapping[str, Any], placeholder: PlaceholderConfig, path: str
) -> None:
    _refuse_flags(train, _REFUSED_TRAIN_FLAGS, f"{path}.train", f"train.{TOGGLE}: true",
                  lambda flag: f"set {flag}: false, or set {TOGGLE}: false for a baseline run")
    if train.get("validation_config") is not None:
        raise ConfigError(
            f"{path}.train.validation_config cannot be used with train.{TOGGLE}: true (ai-toolkit encodes the "
            "validation prompts once, so validation would measure a stale placeholder); remove validation_config"
        )
    if process.get("embedding") is not None:
        raise ConfigError(
            f"{path}.embedding cannot be used with train.{TOGGLE}: true (ai-toolkit's textual inversion does not "
            "train Qwen-Image tokens and would make the whole embedding matrix trainable); remove the embedding "
            "section, the placeholder block replaces it"
        )
    if process.get("network") is None:
        raise ConfigError(
            f"{path}.network is missing: zero-prior trains a LoRA together with the placeholder; add a network "
            "section such as {type: lora, linear: 16, linear_alpha: 16}"
        )
    network_type = str(_mapping(process, "network", path).get("type", "lora")).lower()
    if network_type != "lora":
        raise ConfigError(
            f"{path}.network.type is {network_type!r}: with train.{TOGGLE}: true the LoRA file must hold plain "
            "LoRA tensors (lora_A/lora_B) so diffusers loads it with the placeholder in its metadata; set "
            f"type: lora, or set {TOGGLE}: false"
        )
    model = _mapping(process, "model", path)
    arch = model.get("arch")
    if arch not in (QWEN_IMAGE_ARCH, ZERO_PRIOR_ARCH):
        raise ConfigError(
            f"{path}.model.arch is {arch!r}: train.{TOGGLE}: true supports only Qwen-Image; "
            f"set arch: {QWEN_IMAGE_ARCH} (and name_or_path to a Qwen-Image model)"
        )
    cache_flag = {"cache_text_embeddings": _REFUSED_TRAIN_FLAGS["cache_text_embeddings"]}
    for number, dataset in enumerate(process.get("datasets") or []):
        if isinstance(dataset, Mapping):
            _refuse_flags(dataset, cache_flag, f"{path}.datasets[{number}]", f"train.{TOGGLE}: true",
                          lambda flag: "set it to false")
    trigger = process.get("trigger_word")
    if trigger is not None and placeholder.token not in str(trigger):
        raise ConfigError(
            f"{path}.trigger_word {trigger!r} does not contain the placeholder token {placeholder.token!r}, so "
            "captions and sample prompts would never contain the token; remove trigger_word (it defaults to the "
            "token) or make it contain the token"
        )


def _pivot_step(
    process: Mapping[str, Any], train: Mapping[str, Any], placeholder: PlaceholderConfig, path: str
) -> int | None:
    """Resolve ``placeholder.stop_step`` and refuse what would make the pivot's prompt set incomplete."""
    steps = train.get("steps", AI_TOOLKIT_DEFAULT_STEPS)
    pivot = placeholder.pivot_step(int(steps))
    if pivot is None:
        return None
    key = f"{path}.placeholder.stop_step"
    if pivot >= steps:
        raise ConfigError(
            f"{key} resolves to step {pivot}, not before train.steps {steps}, so the pivot would never happen; "
            "lower it or remove it"
        )
    start = train.get("start_step")
    if isinstance(start, int) and start >= pivot:
        raise ConfigError(
            f"{path}.train.start_step {start} is not before {key} (step {pivot}): the run would freeze the "
            f"untrained vector before its first step; lower start_step or raise stop_step"
        )
    ema = _mapping(train, "ema_config", f"{path}.train")
    if ema.get("use_ema"):
        raise ConfigError(
            f"{path}.train.ema_config.use_ema cannot be used with {key}: ai-toolkit saves the EMA average of the "
            "vector, not the vector the prompts were encoded with at the pivot; turn use_ema off or remove stop_step"
        )
    why = "the prompts are encoded once at the pivot and the text encoder is unloaded, but"

    def fix(flag: str) -> str:
        return f"turn {flag} off or remove stop_step"

    _refuse_flags(train, {f: f"{why} {r}" for f, r in _PIVOT_REFUSED_TRAIN_FLAGS.items()}, f"{path}.train", key, fix)
    dataset_flags = {f: f"{why} {r}" for f, r in _PIVOT_REFUSED_DATASET_FLAGS.items()}
    for number, dataset in enumerate(process.get("datasets") or []):
        if isinstance(dataset, Mapping):
            _refuse_flags(dataset, dataset_flags, f"{path}.datasets[{number}]", key, fix)
    return pivot


def _refuse_flags(
    section: Mapping[str, Any], flags: Mapping[str, str], where: str, against: str, fix: Callable[[str], str]
) -> None:
    """Raise ``ConfigError`` for the first of ``flags`` (flag: reason) that ``section`` turns on.

    The message names ``where.flag`` and its value, what it conflicts with, why, and ``fix(flag)``.
    """
    for flag, reason in flags.items():
        if section.get(flag):
            raise ConfigError(f"{where}.{flag}: {section[flag]!r} cannot be used with {against} ({reason}); {fix(flag)}")


def _mapping(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}.{key} must be a mapping of settings, got {type(value).__name__}")
    return value
