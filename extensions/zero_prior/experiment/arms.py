"""One ai-toolkit job per arm and training seed, identical except what the arm is about.

A comparison is only fair if the arms differ in the one thing under test. So
every job is a deep copy of the base job with the same bookkeeping applied to
all (job name, training folder, training seed, ai-toolkit's step logger on),
and then only the arm's own keys:

============  ======  ==============================  =============================================
arm           toggle  captions (``caption_ext``)      also changes
============  ======  ==============================  =============================================
baseline      false   ``baseline.txt`` (a person...)
zero_prior    true    ``zero_prior.txt`` (``<zwx>``)
rare_word     false   ``rare_word.txt`` (``zwx``)     (no new token: the toggle is off)
word_init     true    ``zero_prior.txt``              ``placeholder.init: word`` + class word
token_only    true    ``zero_prior.txt``              ``train.lr: 0`` (LoRA frozen), ``placeholder.lr``
zero_prior_   true    ``zero_prior.txt``              ``train.diff_output_preservation`` with the
dop                                                   class phrase as ``diff_output_preservation_class``
baseline_dop  false   ``rare_word.txt``               the same, with ``trigger_word: zwx`` (ai-toolkit's
                                                      preservation replaces a trigger word)
============  ======  ==============================  =============================================

The two ``_dop`` arms are ai-toolkit's own bleed control: each step also
predicts, with the network off, the caption with the class phrase in place of
the trigger, and pulls the LoRA's prediction for that prompt towards it. With
the token as the trigger the preservation prompt holds no placeholder, so the
vector trains only from the captions that contain it.

(the toggle is ``train.train_placeholder_token``)

token_only: ai-toolkit refuses a LoRA network without modules
(``train_unet: false`` stops the job with "There are not any lora modules in
this network"), and this extension's settings require a ``network:``. The LoRA
therefore stays in the job with learning rate 0: its ``lora_B`` starts at zero
(ai-toolkit initialises it so) and Adam-family optimizers leave a parameter
with lr 0 exactly unchanged, so the saved LoRA adds exactly nothing; the runner
checks that every ``lora_B`` tensor of the result is zero. The placeholder keeps
the learning rate it has in the other arms through ``placeholder.lr``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..aitk.facts import TOGGLE
from ..aitk.settings import placeholder_learning_rate, read_settings
from ..errors import ConfigError
from ..placeholder.config import PlaceholderConfig
from .captions import BASELINE, RARE_WORD, ZERO_PRIOR, caption_ext
from .spec import ExperimentSpec

PROCESS = "config.process[0]"
# Optimizers whose update of a parameter with lr 0 is exactly zero (decoupled decay is scaled by lr too).
# Prodigy and D-Adaptation reset any lr below 0.1 to 1.0 in ai-toolkit's get_optimizer.
FREEZABLE_OPTIMIZERS = ("adam", "adamw", "adam8bit", "adamw8bit")


@dataclass(frozen=True)
class ArmJob:
    """One arm trained with one seed: its ai-toolkit job and how to prompt its result."""

    arm: str
    training_seed: int
    name: str  # ai-toolkit's config.name: the job folder and the LoRA file name
    job: dict[str, Any]
    caption_mode: str
    subject_text: str  # fills the evaluation prompts' subject slot
    placeholder_token: str | None  # the new token, for arms that train one

    def save_root(self, runs_dir: Path) -> Path:
        """ai-toolkit's output folder of this job."""
        return runs_dir / self.name

    def lora_path(self, runs_dir: Path) -> Path:
        """The final LoRA ai-toolkit writes at the end of the job."""
        return self.save_root(runs_dir) / f"{self.name}.safetensors"


def build_arm_jobs(spec: ExperimentSpec) -> list[ArmJob]:
    """Every (arm, training seed) job, arms in the spec's order, each checked by the trainer's own rules.

    Example::

        [job.name for job in build_arm_jobs(spec)]  # -> ['study_baseline_seed42', 'study_zero_prior_seed42']
    """
    base_process = spec.base_job["config"]["process"][0]
    placeholder = PlaceholderConfig.from_dict(base_process.get("placeholder"), path=f"{PROCESS}.placeholder")
    jobs = []
    for seed in spec.training_seeds:
        for arm in spec.arms:
            job = copy.deepcopy(spec.base_job)
            name = f"{spec.name}_{arm}_seed{seed}"
            job["config"]["name"] = name
            process = job["config"]["process"][0]
            _common(process, spec, seed)
            mode = _ARM_CHANGES[arm](process, spec, placeholder)
            for dataset in _subject_datasets(process):
                dataset["caption_ext"] = caption_ext(mode)
            read_settings(process, 0)  # the trainer's own checks, before anything runs
            toggle = process["train"][TOGGLE]
            subjects = {BASELINE: spec.subject.class_phrase, RARE_WORD: spec.subject.rare_word}
            subject = subjects.get(mode, placeholder.token)
            jobs.append(ArmJob(arm, seed, name, job, mode, subject, placeholder.token if toggle else None))
    return jobs


def job_differences(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every leaf that differs between two jobs: dotted path -> (first's value, second's value).

    A key present on one side only shows ``None`` on the other.

    >>> job_differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}})
    {'a.c': (2, 3)}
    """
    left, right = dict(_leaves(first)), dict(_leaves(second))
    return {key: (left.get(key), right.get(key)) for key in sorted(set(left) | set(right))
            if left.get(key) != right.get(key)}


def _common(process: dict[str, Any], spec: ExperimentSpec, seed: int) -> None:
    """What every arm's job gets alike: its folder, the seed, and ai-toolkit's per-step logger for the plots."""
    process["training_folder"] = str(spec.runs_dir)
    process["training_seed"] = seed
    process.setdefault("placeholder", {})["seed"] = seed
    # ai-toolkit's UILogger writes loss and the trainer's placeholder scalars to SAVE_ROOT/loss_log.db.
    process.setdefault("logging", {})["use_ui_logger"] = True


def _baseline(process: dict[str, Any], spec: ExperimentSpec, placeholder: PlaceholderConfig) -> str:
    process["train"][TOGGLE] = False
    return BASELINE


def _zero_prior(process: dict[str, Any], spec: ExperimentSpec, placeholder: PlaceholderConfig) -> str:
    process["train"][TOGGLE] = True
    return ZERO_PRIOR


def _rare_word(process: dict[str, Any], spec: ExperimentSpec, placeholder: PlaceholderConfig) -> str:
    process["train"][TOGGLE] = False
    return RARE_WORD


def _word_init(process: dict[str, Any], spec: ExperimentSpec, placeholder: PlaceholderConfig) -> str:
    process["train"][TOGGLE] = True
    process["placeholder"].update(init="word", init_word=spec.subject.class_word)
    return ZERO_PRIOR


def _token_only(process: dict[str, Any], spec: ExperimentSpec, placeholder: PlaceholderConfig) -> str:
    optimizer = str(process["train"].get("optimizer", "adamw")).lower()
    if optimizer not in FREEZABLE_OPTIMIZERS:
        raise ConfigError(
            f"{PROCESS}.train.optimizer {optimizer!r} cannot run the token_only arm: it freezes the LoRA with "
            f"learning rate 0, which only {', '.join(FREEZABLE_OPTIMIZERS)} honour exactly; use one of them in "
            "the base job or drop token_only from experiment.arms"
        )
    process["train"][TOGGLE] = True
    process["placeholder"]["lr"] = placeholder_learning_rate(process, placeholder, PROCESS)
    process["train"]["lr"] = 0.0
    return ZERO_PRIOR


def _preservation(process: dict[str, Any], spec: ExperimentSpec) -> None:
    """ai-toolkit's diff_output_preservation, the class phrase taking the trigger's place in the prior prompt."""
    process["train"].update(diff_output_preservation=True, diff_output_preservation_class=spec.subject.class_phrase)


def _zero_prior_dop(process: dict[str, Any], spec: ExperimentSpec, placeholder: PlaceholderConfig) -> str:
    _preservation(process, spec)
    return _zero_prior(process, spec, placeholder)


def _baseline_dop(process: dict[str, Any], spec: ExperimentSpec, placeholder: PlaceholderConfig) -> str:
    _preservation(process, spec)
    process["trigger_word"] = spec.subject.rare_word
    return _rare_word(process, spec, placeholder)


_ARM_CHANGES = {
    "baseline": _baseline,
    "zero_prior": _zero_prior,
    "rare_word": _rare_word,
    "word_init": _word_init,
    "token_only": _token_only,
    "zero_prior_dop": _zero_prior_dop,
    "baseline_dop": _baseline_dop,
}


def _subject_datasets(process: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The datasets that hold the subject (regularisation sets keep their own captions)."""
    return (dataset for dataset in process["datasets"] if not dataset.get("is_reg"))


def _leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every leaf; list items are indexed ``[i]`` as ai-toolkit's errors name them."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from _leaves(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _leaves(item, f"{prefix}[{index}]")
    else:
        yield prefix, value
