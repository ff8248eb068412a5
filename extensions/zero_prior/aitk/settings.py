"""Read and check the zero-prior part of an ai-toolkit process config before any model loads.

ai-toolkit's own config classes drop keys they do not know, and several of its
options silently cut the gradient that a placeholder token needs. So
``ZeroPriorTrainer`` calls ``read_settings`` first thing in
its constructor: a wrong key, type or value, or an option that would make the
placeholder train on nothing, stops the job before ai-toolkit creates its
output folder, with an error that names the key and the fix. Nothing here
imports ai-toolkit, so the rules are testable without it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..models import FAMILIES, ModelFamily, family_for_arch
from ..placeholder.config import PlaceholderConfig
from ..yaml_reader import Block
from .facts import CONTROL_PATH_KEYS, TOGGLE, TRAIN_LR_DEFAULT, TRAIN_STEPS_DEFAULT

# train.<flag>: why it cannot be combined with placeholder training.
_REFUSED_TRAIN_FLAGS = {
    "cache_text_embeddings": "prompt embeddings would be computed once, before the placeholder has learned anything, "
    "and would carry no gradient to it",
    "unload_text_encoder": "the text encoder would be replaced by fixed embeddings, so the placeholder would get no "
    "gradient",
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
    "diff_output_preservation": "it encodes the preservation prompt (the class in place of the token) every step",
}
_PIVOT_REFUSED_DATASET_FLAGS = {
    "shuffle_tokens": "it shuffles the caption's parts every step",
    "token_dropout_rate": "it drops random caption parts every step",
    "random_triggers": "it appends random trigger words every step",
}


@dataclass(frozen=True)
class ZeroPriorSettings:
    """The checked zero-prior settings of one process (``enabled`` is the toggle).

    ``pivot_step`` is ``placeholder.stop_step`` resolved against
    ``train.steps`` (``None``: the vector trains for the whole run);
    ``placeholder_lr`` the placeholder group's learning rate; ``family`` the
    model family of ``model.arch`` (``None`` with the toggle off).
    """

    @property
    def prefix_cache(self) -> bool:
        """Whether the trainer encodes through the prefix cache: as set, else wherever the family supports it."""
        if self.placeholder.prefix_cache is not None:
            return self.placeholder.prefix_cache
        return self.family is not None and self.family.prefix_cache_refusal() is None

    enabled: bool
    placeholder: PlaceholderConfig
    path: str
    pivot_step: int | None = None
    placeholder_lr: float = TRAIN_LR_DEFAULT
    family: ModelFamily | None = None


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
    block = Block(process, path)
    train = block.child("train")
    enabled = train.get(TOGGLE)
    if not isinstance(enabled, bool):
        raise ConfigError(
            f"{path}.train.{TOGGLE} must be true or false, got {enabled!r}: true trains the placeholder token "
            "with the LoRA, false runs ai-toolkit's own LoRA training (the baseline)"
        )
    placeholder = PlaceholderConfig.from_dict(process.get("placeholder"), path=f"{path}.placeholder")
    for key in ("lr", "embedding_lr"):  # ai-toolkit would fail on them only after the model loaded
        train.number(key, None)
    if not enabled:
        return ZeroPriorSettings(enabled=False, placeholder=placeholder, path=path)
    family = _refuse_conflicts(block, train, placeholder)
    _refuse_for_family(family, block, train, placeholder)
    return ZeroPriorSettings(
        enabled=True, placeholder=placeholder, path=path, pivot_step=_pivot_step(block, train, placeholder),
        placeholder_lr=placeholder_learning_rate(process, placeholder, path), family=family,
    )


def placeholder_learning_rate(process: Mapping[str, Any], placeholder: PlaceholderConfig,
                              path: str = "config.process[0]") -> float:
    """The placeholder's lr: ``placeholder.lr``, else ``train.embedding_lr``, else ``train.lr``, else the default.

    >>> placeholder_learning_rate({"train": {"lr": 1e-4}}, PlaceholderConfig())
    0.0001
    """
    if placeholder.lr is not None:
        return placeholder.lr
    train = Block(process, path).child("train")
    for key in ("embedding_lr", "lr"):
        value = train.number(key, None)
        if value is not None:
            return value
    return TRAIN_LR_DEFAULT


def effective_config(process: Mapping[str, Any], settings: ZeroPriorSettings) -> Any:
    """A copy of ``process`` as ai-toolkit must see it when the toggle is on.

    ``trigger_word`` defaults to the token (ai-toolkit copies it into every
    dataset config inside ``SDTrainer.__init__``, so it must be set before
    that), and the model arch becomes this extension's subclass for the model's family.
    The user's dict is left as written, so the ``config.yaml`` ai-toolkit
    saves next to the LoRA is the one the user ran.
    """
    assert settings.family is not None, "effective_config is for settings with the toggle on"
    result = copy.deepcopy(process)
    if result.get("trigger_word") is None:
        result["trigger_word"] = settings.placeholder.token
    result["model"]["arch"] = settings.family.zero_prior_arch_for(str(result["model"]["arch"]))
    return result


def _refuse_conflicts(block: Block, train: Block, placeholder: PlaceholderConfig) -> ModelFamily:
    """Refuse every setting that cuts the placeholder's gradient or drops it; return the model's family."""
    process, path = block.raw, block.path
    _refuse_flags(train.raw, _REFUSED_TRAIN_FLAGS, f"{path}.train", f"train.{TOGGLE}: true",
                  lambda flag: f"set {flag}: false, or set {TOGGLE}: false for a baseline run")
    if train.get("validation_config") is not None:
        raise ConfigError(
            f"{path}.train.validation_config cannot be used with train.{TOGGLE}: true (ai-toolkit encodes the "
            "validation prompts once, so validation would measure a stale placeholder); remove validation_config"
        )
    if process.get("embedding") is not None:
        raise ConfigError(
            f"{path}.embedding cannot be used with train.{TOGGLE}: true (ai-toolkit's textual inversion does not "
            "train tokens of LLM text encoders and would make the whole embedding matrix trainable); remove the "
            "embedding section, the placeholder block replaces it"
        )
    if process.get("network") is None:
        raise ConfigError(
            f"{path}.network is missing: zero-prior trains a LoRA together with the placeholder; add a network "
            "section such as {type: lora, linear: 16, linear_alpha: 16}"
        )
    network_type = str(block.child("network").get("type", "lora")).lower()
    if network_type != "lora":
        raise ConfigError(
            f"{path}.network.type is {network_type!r}: with train.{TOGGLE}: true the LoRA file must hold plain "
            "LoRA tensors (lora_A/lora_B) so diffusers loads it with the placeholder in its metadata; set "
            f"type: lora, or set {TOGGLE}: false"
        )
    arch = block.child("model").get("arch")
    family = family_for_arch(arch)
    if family is None:
        supported = ", ".join(f"{' or '.join((f.aitk_arch, *f.other_aitk_archs))} ({f.label})" for f in FAMILIES
                              if f.training_refusal() is None)
        raise ConfigError(
            f"{path}.model.arch is {arch!r}: train.{TOGGLE}: true supports {supported}; set arch to one of them "
            "(and name_or_path to such a model), or set train_placeholder_token: false"
        )
    refusal = family.training_refusal()
    if refusal:
        raise ConfigError(f"{path}.model.arch is {arch!r}: train.{TOGGLE}: true cannot train {family.label} yet: "
                          f"{refusal}")
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
    _check_preservation(block, train, placeholder)
    return family


def _check_preservation(block: Block, train: Block, placeholder: PlaceholderConfig) -> None:
    """``diff_output_preservation`` with the token: the preservation prompt must hold the class, not the token.

    ai-toolkit builds the preservation prompt by replacing the trigger word
    with ``diff_output_preservation_class`` and predicts its prior target with
    the network off. With the trigger being exactly the token, that prompt
    contains no placeholder, so the vector trains only from the prompts that
    contain it while the LoRA gets the preservation loss.
    """
    if not train.get("diff_output_preservation"):
        return
    process, path, token = block.raw, block.path, placeholder.token
    preserved = train.get("diff_output_preservation_class")
    if not isinstance(preserved, str) or not preserved.strip() or token in preserved:
        raise ConfigError(
            f"{path}.train.diff_output_preservation_class {preserved!r}: with diff_output_preservation and "
            f"train.{TOGGLE}: true, name the class that replaces {token!r} in the preservation prompt (e.g. "
            f"'a person'), without the token"
        )
    triggers = [("trigger_word", process.get("trigger_word"))] + [
        (f"datasets[{number}].trigger_word", dataset.get("trigger_word"))
        for number, dataset in enumerate(process.get("datasets") or []) if isinstance(dataset, Mapping)]
    for key, trigger in triggers:
        if trigger is not None and trigger != token:
            raise ConfigError(
                f"{path}.{key} {trigger!r} must be exactly the placeholder token {token!r} (or unset) with "
                "diff_output_preservation: ai-toolkit replaces the trigger word with the class, and a token left "
                "in the preservation prompt would make it condition on the subject"
            )


def _refuse_for_family(family: ModelFamily, block: Block, train: Block, placeholder: PlaceholderConfig) -> None:
    """Refuse what ``family`` rules out (``ModelFamily.*_refusal``) or cannot train without (control images)."""
    path = block.path
    refusal = family.prefix_cache_refusal()
    if placeholder.prefix_cache and refusal:
        raise ConfigError(f"{path}.placeholder.prefix_cache: true cannot be used with {family.label}: {refusal}; "
                          "remove it or set it to false")
    refusal = family.pivot_refusal()
    if placeholder.stop_step is not None and refusal:
        raise ConfigError(f"{path}.placeholder.stop_step cannot be used with {family.label}: {refusal}; remove "
                          "stop_step (the vector then trains for the whole run)")
    batch_size = train.integer("batch_size", 1, minimum=1)
    refusal = family.batch_size_refusal()
    if batch_size > 1 and refusal:
        raise ConfigError(f"{path}.train.batch_size {batch_size} cannot be used with {family.label} and "
                          f"train.{TOGGLE}: true: {refusal}; set batch_size: 1 (gradient_accumulation gives a "
                          "larger effective batch)")
    if family.control_images:
        _refuse_missing_controls(family, block, train)


# Where ai-toolkit reads a sample's control image (config_modules.py SampleItem).
_SAMPLE_CONTROL_KEYS = ("ctrl_img", "ctrl_img_1")


def _refuse_missing_controls(family: ModelFamily, block: Block, train: Block) -> None:
    """An edit family encodes every caption and sample prompt with control images; refuse any that has none."""
    process, path = block.raw, block.path
    for number, dataset in enumerate(process.get("datasets") or []):
        if isinstance(dataset, Mapping) and not any(dataset.get(key) for key in CONTROL_PATH_KEYS):
            raise ConfigError(
                f"{path}.datasets[{number}] has no control_path: {family.label} encodes every caption together "
                "with its control image, and ai-toolkit stops without one; add control_path (a folder with a "
                "control image of the same name per training image)"
            )
    if train.get("disable_sampling"):
        return
    sample = block.child("sample")
    # ai-toolkit's SampleConfig reads sample.samples when present, else sample.prompts.
    items = sample.get("samples") if sample.get("samples") is not None else sample.get("prompts") or []
    for item in items:
        prompt = str(item.get("prompt", "")) if isinstance(item, Mapping) else str(item)
        if isinstance(item, Mapping) and any(item.get(key) for key in _SAMPLE_CONTROL_KEYS) or "--ctrl_img" in prompt:
            continue
        raise ConfigError(
            f"{path}.sample prompt {prompt!r} has no control image: {family.label} samples edit an image, and "
            "ai-toolkit stops at the first sample without one; give each entry of sample.samples a ctrl_img_1 "
            "(or end the prompt with --ctrl_img PATH), or set train.disable_sampling: true"
        )


def _pivot_step(block: Block, train: Block, placeholder: PlaceholderConfig) -> int | None:
    """Resolve ``placeholder.stop_step`` and refuse what would make the pivot's prompt set incomplete."""
    if placeholder.stop_step is None:
        return None
    process, path = block.raw, block.path
    steps = train.integer("steps", TRAIN_STEPS_DEFAULT, minimum=1)
    pivot = placeholder.pivot_step(steps)
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
    if train.child("ema_config").get("use_ema"):
        raise ConfigError(
            f"{path}.train.ema_config.use_ema cannot be used with {key}: ai-toolkit saves the EMA average of the "
            "vector, not the vector the prompts were encoded with at the pivot; turn use_ema off or remove stop_step"
        )
    why = "the prompts are encoded once at the pivot and the text encoder is unloaded, but"

    def fix(flag: str) -> str:
        return f"turn {flag} off or remove stop_step"

    _refuse_flags(train.raw, {f: f"{why} {r}" for f, r in _PIVOT_REFUSED_TRAIN_FLAGS.items()}, f"{path}.train", key,
                  fix)
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
            raise ConfigError(f"{where}.{flag}: {section[flag]!r} cannot be used with {against} ({reason}); "
                              f"{fix(flag)}")
