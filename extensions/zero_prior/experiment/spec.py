"""``EXPERIMENT.yaml``: one base ai-toolkit job plus an ``experiment:`` block, parsed strictly once.

A typo in an experiment file must not run five trainings with a default the
user did not mean, so every key is checked: an unknown key, a wrong type or an
out-of-range value is a ``ConfigError`` that names the full key
(``experiment.evaluation.seeds``) and what to write instead. The file looks like::

    base_job: zero_prior.yaml          # an ai-toolkit job file (relative to this file), or
    # job: {job: extension, config: ...}   the same job inline
    experiment:
      output_dir: experiments/my_subject
      arms: [baseline, zero_prior, rare_word, word_init, token_only]
      training_seeds: [42]
      subject: {class: person}
      evaluation: {prompts: 25, seeds: [0, 1, 2, 3], steps: 30}

``${NAME}`` fields anywhere in the experiment file and in the base job are
filled from ``values`` (the CLI passes the environment and ``--set NAME=VALUE``);
the base job's ``${TRAINING_FOLDER}`` is the experiment's own ``runs/`` folder.
Nothing here touches the disk beyond reading the two files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..aitk.facts import PROCESS_TYPE
from ..errors import ConfigError
from ..yaml_reader import Block, fill_fields
from .captions import EVAL_TEMPLATES, SUBJECT_PHRASES
from .metrics import DEFAULT_CLIP, DEFAULT_DINO, PROTOCOLS

BASELINE = "baseline"
ARMS = (BASELINE, "zero_prior", "rare_word", "word_init", "token_only", "zero_prior_dop", "baseline_dop")
LPIPS_NETS = ("alex", "vgg", "squeeze")
OFFLOAD_MODES = ("none", "model", "sequential")
RUNS_FOLDER = "runs"
_SETTING = "an experiment setting"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SubjectSpec:
    """How the subject is named in the paired captions and in the evaluation prompts."""

    subject_class: str = "person"
    phrases: tuple[str, ...] = SUBJECT_PHRASES["person"]
    class_word: str = "person"  # word_init's init_word
    rare_word: str = "zwx"  # rare_word's literal trigger (no new token)
    captions_seed: int = 0

    @property
    def class_phrase(self) -> str:
        """The phrase of class prompts (no token) and of the baseline's evaluation prompts."""
        return self.phrases[0]


@dataclass(frozen=True)
class EvaluationSpec:
    """Held-out generation and metric settings, identical for every arm."""

    prompts: int = len(EVAL_TEMPLATES)
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    steps: int = 30
    width: int = 1024
    height: int = 1024
    true_cfg_scale: float = 4.0
    negative_prompt: str = " "
    lora_scale: float = 1.0
    device: str | None = None
    offload: str = "none"  # none | model | sequential (diffusers CPU offload for GPUs smaller than the model)
    protocol: str = "dinov2"  # metrics.PROTOCOLS: the default CLIP and DINO models; either can be overridden
    clip_model: str = DEFAULT_CLIP
    dino_model: str = DEFAULT_DINO
    lpips_net: str = "alex"
    allow_download: bool = False
    confidence: float = 0.95
    permutation_resamples: int = 10_000  # Monte Carlo sign flips when there are more than 16 units
    alpha: float = 0.05
    stats_seed: int = 0


@dataclass(frozen=True)
class ExperimentSpec:
    """A parsed ``EXPERIMENT.yaml``; ``base_job`` is the filled-in ai-toolkit job every arm starts from."""

    path: Path
    name: str
    output_dir: Path
    arms: tuple[str, ...]
    training_seeds: tuple[int, ...]
    subject: SubjectSpec
    evaluation: EvaluationSpec
    base_job: dict[str, Any] = field(repr=False)
    base_job_source: str = "inline"

    @property
    def runs_dir(self) -> Path:
        """ai-toolkit's ``training_folder`` of every arm."""
        return self.output_dir / RUNS_FOLDER


def load_spec(path: str | os.PathLike[str], values: Mapping[str, str] | None = None) -> ExperimentSpec:
    """Read and check ``path``; ``values`` fill its ``${NAME}`` fields and the base job's.

    Example::

        spec = load_spec("config_examples/experiment.yaml", {"SUBJECT_DIR": "/data/me"})
        spec.arms  # -> ('baseline', 'zero_prior', 'rare_word', 'word_init', 'token_only')
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such experiment file; pass the EXPERIMENT.yaml to run")
    # An inline job's ${TRAINING_FOLDER} stays as written here: every arm's job sets its training folder.
    filled = {"TRAINING_FOLDER": "${TRAINING_FOLDER}", **(values or {})}
    text = fill_fields(path.read_text(encoding="utf-8"), filled, str(path))
    raw = yaml.safe_load(text)
    return parse_spec(raw, path, values or {})


def parse_spec(raw: Any, path: Path, values: Mapping[str, str] | None = None) -> ExperimentSpec:
    """Check an already-read experiment mapping; relative paths are relative to ``path``'s folder."""
    top = Block(raw, "", {"base_job", "job", "experiment"}, where=str(path), kind=_SETTING)
    block = top.child("experiment", {"name", "output_dir", "arms", "training_seeds", "subject", "evaluation"},
                      required=True, kind=_SETTING, where="experiment")
    folder = path.parent
    output_dir = (folder / block.string("output_dir", required=True)).resolve()
    base_job, source = _base_job(top, folder, output_dir / RUNS_FOLDER, values or {})
    _check_base_job(base_job, source)
    name = block.string("name", base_job["config"].get("name"))
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"experiment.name {name!r} must be letters, digits, '_', '-' or '.'; it prefixes every job "
                          "name")
    arms = tuple(block.string_list("arms", [BASELINE, "zero_prior"]))
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        raise ConfigError(f"experiment.arms: {unknown[0]!r} is not an arm; choose from {', '.join(ARMS)}")
    if BASELINE not in arms or len(set(arms)) != len(arms):
        raise ConfigError(f"experiment.arms {list(arms)} must list each arm once and include {BASELINE!r} "
                          "(every comparison is against it)")
    seeds = tuple(block.int_list("training_seeds", [42], minimum=0))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"experiment.training_seeds {list(seeds)} repeats a seed; list each seed once")
    return ExperimentSpec(
        path=path.resolve(),
        name=name,
        output_dir=output_dir,
        arms=arms,
        training_seeds=seeds,
        subject=_subject(block.get("subject")),
        evaluation=_evaluation(block.get("evaluation")),
        base_job=base_job,
        base_job_source=source,
    )


def _subject(raw: Any) -> SubjectSpec:
    block = Block(raw, "experiment.subject", {"class", "phrases", "class_word", "rare_word", "captions_seed"},
                  where="experiment.subject", kind=_SETTING)
    subject_class = block.string("class", "person")
    if block.get("phrases") is None and subject_class not in SUBJECT_PHRASES:
        raise ConfigError(f"experiment.subject.class {subject_class!r} has no built-in phrases; choose one of "
                          f"{sorted(SUBJECT_PHRASES)} or list experiment.subject.phrases")
    phrases = block.string_list("phrases", list(SUBJECT_PHRASES.get(subject_class, ())))
    if not phrases or any(not p.strip() or "," in p for p in phrases):
        raise ConfigError(f"experiment.subject.phrases {phrases!r}: give at least one non-empty phrase without commas")
    rare_word = block.string("rare_word", "zwx")
    if not rare_word or any(c.isspace() or c == "," for c in rare_word):
        raise ConfigError(f"experiment.subject.rare_word {rare_word!r} must be one word without spaces or commas")
    return SubjectSpec(
        subject_class=subject_class,
        phrases=tuple(phrases),
        class_word=block.string("class_word", subject_class),
        rare_word=rare_word,
        captions_seed=block.integer("captions_seed", 0, minimum=0),
    )


def _evaluation(raw: Any) -> EvaluationSpec:
    defaults = EvaluationSpec()
    block = Block(raw, "experiment.evaluation", set(EvaluationSpec.__dataclass_fields__),
                  where="experiment.evaluation", kind=_SETTING)
    seeds = tuple(block.int_list("seeds", list(defaults.seeds), minimum=0))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"experiment.evaluation.seeds {list(seeds)} repeats a seed; list each seed once")
    lpips_net = block.string("lpips_net", defaults.lpips_net)
    offload = block.string("offload", defaults.offload)
    if offload not in OFFLOAD_MODES:
        raise ConfigError(f"experiment.evaluation.offload {offload!r}: choose one of {', '.join(OFFLOAD_MODES)}")
    protocol = block.string("protocol", defaults.protocol)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"experiment.evaluation.protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    if lpips_net not in LPIPS_NETS:
        raise ConfigError(f"experiment.evaluation.lpips_net {lpips_net!r}: choose one of {', '.join(LPIPS_NETS)}")
    return EvaluationSpec(
        # The paired tests and the interval need at least two prompts.
        prompts=block.integer("prompts", defaults.prompts, minimum=2, maximum=len(EVAL_TEMPLATES)),
        seeds=seeds,
        steps=block.integer("steps", defaults.steps, minimum=1),
        width=block.integer("width", defaults.width, minimum=16, multiple=16),
        height=block.integer("height", defaults.height, minimum=16, multiple=16),
        true_cfg_scale=block.number("true_cfg_scale", defaults.true_cfg_scale, minimum=0.0),
        negative_prompt=block.string("negative_prompt", defaults.negative_prompt),
        lora_scale=block.number("lora_scale", defaults.lora_scale, minimum=0.0),
        device=block.string("device", None),
        offload=offload,
        protocol=protocol,
        clip_model=block.string("clip_model", PROTOCOLS[protocol]["clip_model"]),
        dino_model=block.string("dino_model", PROTOCOLS[protocol]["dino_model"]),
        lpips_net=lpips_net,
        allow_download=block.boolean("allow_download", defaults.allow_download),
        confidence=block.number("confidence", defaults.confidence, minimum=0.5, maximum=0.999),
        permutation_resamples=block.integer("permutation_resamples", defaults.permutation_resamples, minimum=100),
        alpha=block.number("alpha", defaults.alpha, minimum=0.0001, maximum=0.5),
        stats_seed=block.integer("stats_seed", defaults.stats_seed, minimum=0),
    )


def _base_job(top: Block, folder: Path, runs_dir: Path, values: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """The base ai-toolkit job from ``base_job: PATH`` or ``job:``, with its ``${NAME}`` fields filled."""
    has_file, has_inline = top.get("base_job") is not None, top.get("job") is not None
    if has_file == has_inline:
        raise ConfigError("give exactly one of base_job (an ai-toolkit job file, relative to the experiment file) "
                          "or job (the same job inline)")
    if has_inline:
        job = top.get("job")
        if not isinstance(job, Mapping):
            raise ConfigError("job must be an ai-toolkit job mapping (job: extension, config: ...), "
                              f"got {type(job).__name__}")
        return dict(job), "inline"
    job_path = (folder / top.string("base_job")).resolve()
    if not job_path.is_file():
        raise ConfigError(f"base_job {job_path}: no such file; give the ai-toolkit job YAML the arms start from")
    filled = {**values, "TRAINING_FOLDER": str(runs_dir)}
    text = fill_fields(job_path.read_text(encoding="utf-8"), filled, str(job_path))
    job = yaml.safe_load(text)
    if not isinstance(job, Mapping):
        raise ConfigError(f"base_job {job_path} is not an ai-toolkit job mapping")
    return dict(job), str(job_path)


def _check_base_job(job: Mapping[str, Any], source: str) -> None:
    """The base job must be one ``zero_prior_trainer`` process whose subject is named only by the captions."""
    where = f"base job ({source})"
    config = job.get("config")
    if job.get("job") != "extension" or not isinstance(config, Mapping):
        raise ConfigError(f"{where}: must be an ai-toolkit job with 'job: extension' and a 'config:' mapping")
    processes = config.get("process")
    if not isinstance(processes, list) or len(processes) != 1 or not isinstance(processes[0], Mapping):
        raise ConfigError(f"{where}: config.process must hold exactly one process; the experiment makes one job per "
                          "arm")
    process = processes[0]
    if process.get("type") != PROCESS_TYPE:
        raise ConfigError(f"{where}: config.process[0].type is {process.get('type')!r}; set it to {PROCESS_TYPE!r} "
                          "(its train.train_placeholder_token switch is what the arms flip)")
    model = process.get("model")
    if not isinstance(model, Mapping) or not model.get("name_or_path"):
        raise ConfigError(f"{where}: config.process[0].model.name_or_path is missing; name the Qwen-Image model")
    datasets = process.get("datasets")
    if not isinstance(datasets, list) or not datasets or not all(isinstance(d, Mapping) for d in datasets):
        raise ConfigError(f"{where}: config.process[0].datasets must list the subject's image folder(s)")
    if not any(not d.get("is_reg") for d in datasets):
        raise ConfigError(f"{where}: every dataset is a regularisation set (is_reg); add the subject's image folder")
    triggers = ["config.process[0].trigger_word"] if process.get("trigger_word") is not None else []
    triggers += [f"config.process[0].datasets[{i}].trigger_word" for i, d in enumerate(datasets)
                 if d.get("trigger_word") is not None]
    if triggers:
        raise ConfigError(f"{where}: {triggers[0]} is set; remove it: the experiment names the subject through "
                          "paired caption files, and ai-toolkit would prepend the trigger word to captions that "
                          "lack it")
