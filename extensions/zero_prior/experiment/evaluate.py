"""Images from every arm's trained weights, their metrics, and paired statistics -> ``metrics.json``.

Every number here is computed from images that the trained LoRA (loaded with
the project's own ``load_zero_prior``) generated for held-out prompts; a
metric that cannot be computed is listed under ``missing`` with the reason,
never approximated. For each evaluation template (``captions.EVAL_TEMPLATES``,
never used in training) and each evaluation seed, with the same seeds in every
arm, three kinds of image are made:

- *subject*: the template with the arm's subject words (``<zwx>``, ``zwx``, or
  the baseline's class phrase), with the arm's LoRA;
- *class*: the template with the class phrase and no token, with the arm's LoRA
  (for the baseline this is its subject image: same prompt, seed and weights);
- *base*: the class prompt without any adapter, once for all arms.

Per image: CLIP-T (cosine to the class-phrase prompt, the same text for every
arm, as CLIP cannot read ``<zwx>``), CLIP-I and DINO (mean cosine to the
training images), image statistics. Per prompt and training run: the mean over
evaluation seeds, LPIPS diversity across seeds, class_dino (DINO of class
images), prior leak (class_dino with the adapter minus without it) and token
necessity (DINO with the token vs. the class phrase, same arm). Comparisons:
the plan of ``design`` (unit, families), each made with
``stats.compare_arms`` and Holm-adjusted within its family. ``metrics.json`` holds no times and
only paths that do not change between runs (inside the output folder relative,
the reference images and base model as given), so a rerun on the same machine
writes the same bytes.
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..devices import default_device
from ..errors import ConfigError, ExperimentError, MetricUnavailableError
from ..fileio import sha256_file, write_text_atomic
from .arms import ArmJob, build_arm_jobs
from .captions import EVAL_TEMPLATES
from .design import (
    ARM_METRICS,
    PRIMARY,
    PRIOR_LEAK,
    SECONDARY,
    TOKEN_NECESSITY,
    VS_BASELINE,
    Planned,
    analysis_unit,
    planned_comparisons,
)
from .layout import IMAGES_FOLDER, METRICS_FILE, read_log, relative, training_images, write_log
from .spec import BASELINE, EvaluationSpec, ExperimentSpec
from .stats import HOLM, PROMPT_UNIT, T_INTERVAL, Comparison, adjust_family, compare_arms, t_interval

if TYPE_CHECKING:
    from ..weights.loader import LoadResult

METRICS_FORMAT = "zero-prior-metrics/1"
BASE_RUN = "base"
SUBJECT, CLASS = "subject", "class"

IMAGE_STATS = ("brightness", "rms_contrast", "sharpness")


@dataclass(frozen=True)
class Shot:
    """One image to generate: which weights, which prompt and seed, and where it goes."""

    run: str  # job name, or BASE_RUN for the model without adapter
    prompt: str
    seed: int
    file: str  # relative to the experiment's output folder


def evaluate_experiment(spec: ExperimentSpec, jobs: Sequence[ArmJob] | None = None, echo: bool = True) -> Path:
    """Generate, measure and compare every arm; write ``metrics.json`` and return its path.

    Example::

        evaluate_experiment(load_spec("experiment.yaml"))  # -> PosixPath('.../experiments/my_subject/metrics.json')
    """
    jobs = list(jobs) if jobs is not None else build_arm_jobs(spec)
    missing_loras = [job.lora_path(spec.runs_dir) for job in jobs if not job.lora_path(spec.runs_dir).is_file()]
    if missing_loras:
        raise ExperimentError(f"{missing_loras[0]} is missing ({len(missing_loras)} arm result(s) missing); train the "
                              f"arms first: zero-prior experiment {spec.path}")
    references = training_images(spec)
    timings: dict[str, float] = {}
    device = default_device(spec.evaluation.device)
    templates = list(range(spec.evaluation.prompts))
    shots, files = plan_shots(spec, jobs, templates)

    models, unavailable = check_metric_models(spec, device)  # before any image: a bad model fails in seconds
    started = time.perf_counter()
    runs = generate(spec, jobs, shots, device, echo)
    timings["generation"] = time.perf_counter() - started

    started = time.perf_counter()
    scores, diversity, missing = score(spec, jobs, files, templates, references, device, echo, unavailable)
    timings["metrics"] = time.perf_counter() - started

    per_prompt, per_run = aggregate(spec, jobs, files, scores, diversity, templates)
    metrics = {
        "format": METRICS_FORMAT,
        "experiment": spec.name,
        "arms": list(spec.arms),
        "training_seeds": list(spec.training_seeds),
        "evaluation": {**asdict(spec.evaluation), "seeds": list(spec.evaluation.seeds), "device_used": device},
        "models": {
            "base": str(spec.base_job["config"]["process"][0]["model"]["name_or_path"]),
            "clip": spec.evaluation.clip_model,
            "dino": spec.evaluation.dino_model,
            "lpips": spec.evaluation.lpips_net,
        },
        "metric_models": models,
        "references": [relative(image, spec.output_dir) for image in references],
        "prompts": _prompt_table(spec, jobs, templates),
        "runs": runs,
        "images": _image_records(jobs, files, scores),
        "per_prompt": per_prompt,
        "per_run": per_run,
        "missing": missing,
        **statistics(spec, per_prompt, per_run, missing),
    }
    path = write_text_atomic(spec.output_dir / METRICS_FILE,
                             json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n")
    log = read_log(spec.output_dir)
    seconds = {k: round(v, 3) for k, v in timings.items()}
    log["evaluation"] = {"command": sys.argv, "device": device, "seconds": seconds,
                         "metrics_sha256": sha256_file(path), "images": len(shots)}
    write_log(spec.output_dir, log)
    return path


def plan_shots(
    spec: ExperimentSpec, jobs: Sequence[ArmJob], templates: Sequence[int]
) -> tuple[list[Shot], dict[tuple[str, str, int, int], str]]:
    """Every image to make, and ``(run, kind, template, seed) -> file`` (a baseline's subject and class share one)."""
    shots: dict[tuple[str, str, int], Shot] = {}
    files = {}
    class_phrase = spec.subject.class_phrase
    sources = [(job.name, {SUBJECT: job.subject_text, CLASS: class_phrase}) for job in jobs]
    sources.append((BASE_RUN, {CLASS: class_phrase}))
    for run, subjects in sources:
        for kind, subject in subjects.items():
            for template in templates:
                prompt = EVAL_TEMPLATES[template].format(subject=subject)
                for seed in spec.evaluation.seeds:
                    key = (run, prompt, seed)
                    if key not in shots:
                        file = f"{IMAGES_FOLDER}/{run}/{kind}_p{template}_s{seed}.png"
                        shots[key] = Shot(run, prompt, seed, file)
                    files[(run, kind, template, seed)] = shots[key].file
    return list(shots.values()), files


def generate(spec: ExperimentSpec, jobs: Sequence[ArmJob], shots: Sequence[Shot], device: str,
             echo: bool) -> dict[str, Any]:
    """Make every shot, one pipeline per run (each run's token and LoRA are loaded into a fresh one)."""
    from tqdm import tqdm

    from ..serving.generate import generate_images

    images_dir = spec.output_dir / IMAGES_FOLDER
    shutil.rmtree(images_dir, ignore_errors=True)  # no image of an earlier evaluation may end up in a grid
    model = str(spec.base_job["config"]["process"][0]["model"]["name_or_path"])
    lora_of = {job.name: job.lora_path(spec.runs_dir).resolve() for job in jobs}
    runs: dict[str, Any] = {}
    ev = spec.evaluation
    negative = ev.negative_prompt if ev.true_cfg_scale > 1 else None  # diffusers uses it only with true CFG
    with tqdm(total=len(shots), desc="generating", unit="image", disable=not echo) as bar:
        for run in [job.name for job in jobs] + [BASE_RUN]:
            pipe, result = _load_pipeline(model, ev, device, lora_of.get(run))
            if result is not None:
                job = next(job for job in jobs if job.name == run)
                runs[run] = {
                    "arm": job.arm,
                    "training_seed": job.training_seed,
                    "lora": relative(lora_of[run], spec.output_dir),
                    "lora_sha256": sha256_file(lora_of[run]),
                    "lora_tensors": result.lora_tensors,
                    "placeholders": [token.token for token in result.tokens],
                }
            for shot in (s for s in shots if s.run == run):
                bar.set_postfix_str(run)
                [image] = generate_images(pipe, [shot.prompt], seed=shot.seed, steps=ev.steps, height=ev.height,
                                          width=ev.width, true_cfg_scale=ev.true_cfg_scale, negative_prompt=negative)
                target = spec.output_dir / shot.file
                target.parent.mkdir(parents=True, exist_ok=True)
                image.save(target)
                bar.update()
            del pipe
            _free_memory()
    return runs


def check_metric_models(spec: ExperimentSpec, device: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Load every metric model once, strictly, before generating: their identities, and why any is unavailable."""
    from .metrics.diversity import LpipsScorer, backbone_checkpoint
    from .metrics.identity import file_identity, model_identity
    from .metrics.similarity import ClipScorer, DinoScorer

    ev = spec.evaluation
    checks: list[tuple[str, str, Callable[[], Any], Callable[[], dict[str, Any]]]] = [
        ("CLIP", "clip", lambda: ClipScorer.load(ev.clip_model, device="cpu"), lambda: model_identity(ev.clip_model)),
        ("DINO", "dino", lambda: DinoScorer.load(ev.dino_model, device="cpu"), lambda: model_identity(ev.dino_model)),
        ("LPIPS", "lpips", lambda: LpipsScorer.load(ev.lpips_net, device="cpu", allow_download=ev.allow_download),
         lambda: file_identity(f"lpips {ev.lpips_net}", backbone_checkpoint(ev.lpips_net))),
    ]
    models, unavailable = {}, {}
    for label, key, load, identify in checks:
        try:
            load()  # the scorer is dropped at once: only its strict load is checked here
            models[key] = identify()
        except MetricUnavailableError as error:
            unavailable[label] = str(error)
            models[key] = {"name": getattr(ev, f"{key}_model", ev.lpips_net), "unavailable": str(error)}
        _free_memory()
    return models, unavailable


def score(
    spec: ExperimentSpec,
    jobs: Sequence[ArmJob],
    files: dict[tuple[str, str, int, int], str],
    templates: Sequence[int],
    references: Sequence[Path],
    device: str,
    echo: bool,
    unavailable: dict[str, str] | None = None,
) -> tuple[dict[str, dict[str, float]], dict[tuple[str, int], float], dict[str, str]]:
    """Per file: CLIP-T, CLIP-I, DINO, image statistics; per (run, template): LPIPS diversity; and what is missing.

    ``unavailable`` (stage label -> reason, from ``check_metric_models``) names stages not to attempt.
    """
    from tqdm import tqdm

    from .metrics.diversity import LpipsScorer
    from .metrics.image_stats import image_stats
    from .metrics.similarity import ClipScorer, DinoScorer

    ev = spec.evaluation
    unique = sorted(set(files.values()))
    paths = [spec.output_dir / file for file in unique]
    scores: dict[str, dict[str, float]] = {file: {} for file in unique}
    diversity: dict[tuple[str, int], float] = {}
    missing: dict[str, str] = {}
    template_of = {file: template for (_, _, template, _), file in files.items()}
    class_prompts = [EVAL_TEMPLATES[template_of[file]].format(subject=spec.subject.class_phrase) for file in unique]

    for file, path in tqdm(list(zip(unique, paths)), desc="image statistics", unit="image", disable=not echo):
        scores[file].update(image_stats(path))

    def clip() -> None:
        scorer = ClipScorer.load(ev.clip_model, device=device)
        for file, t, i in zip(unique, scorer.clip_t(paths, class_prompts), scorer.clip_i(paths, references)):
            scores[file].update(clip_t=t, clip_i=i)

    def dino() -> None:
        scorer = DinoScorer.load(ev.dino_model, device=device)
        for file, value in zip(unique, scorer.similarity(paths, references)):
            scores[file]["dino"] = value

    def lpips() -> None:
        if len(ev.seeds) < 2:
            raise MetricUnavailableError("diversity needs at least 2 evaluation seeds per prompt; list more "
                                         "experiment.evaluation.seeds")
        scorer = LpipsScorer.load(ev.lpips_net, device=device, allow_download=ev.allow_download)
        for job in tqdm(jobs, desc="LPIPS diversity", unit="run", disable=not echo):
            for template in templates:
                group = [spec.output_dir / files[(job.name, SUBJECT, template, seed)] for seed in ev.seeds]
                diversity[(job.name, template)] = scorer.diversity(group)

    stages: list[tuple[str, Sequence[str], Callable[[], None]]] = [
        ("CLIP", ("clip_t", "clip_i"), clip),
        ("DINO", ("dino", "prior_leak", "token_necessity"), dino),
        ("LPIPS", ("diversity",), lpips),
    ]
    for label, names, run_stage in tqdm(stages, desc="metric models", unit="model", disable=not echo):
        if label in (unavailable or {}):
            missing.update({name: f"{label}: {unavailable[label]}" for name in names})  # type: ignore[index]
            continue
        try:
            run_stage()
        except MetricUnavailableError as error:
            missing.update({name: f"{label}: {error}" for name in names})
        _free_memory()
    return scores, diversity, missing


def aggregate(
    spec: ExperimentSpec,
    jobs: Sequence[ArmJob],
    files: dict[tuple[str, str, int, int], str],
    scores: dict[str, dict[str, float]],
    diversity: dict[tuple[str, int], float],
    templates: Sequence[int],
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, dict[str, dict[str, float]]]]]:
    """Per prompt and per training run.

    ``per_prompt``: ``arm -> metric -> template -> value``, the mean over
    training and evaluation seeds (``base``: its class_dino). ``per_run``:
    ``arm -> metric -> training seed -> template -> value``, the mean over
    evaluation seeds, which the statistics need when training runs are the unit.
    """
    seeds = spec.evaluation.seeds

    def mean_over(run: str, kind: str, template: int, metric: str) -> float | None:
        values = [scores[files[(run, kind, template, seed)]].get(metric) for seed in seeds]
        return float(np.mean(values)) if None not in values else None

    def complete(values: dict[str, float | None]) -> dict[str, float] | None:
        return None if None in values.values() else values  # type: ignore[return-value]

    per_run: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    base = complete({EVAL_TEMPLATES[t]: mean_over(BASE_RUN, CLASS, t, "dino") for t in templates})
    for arm in spec.arms:
        table: dict[str, dict[str, dict[str, float]]] = {}
        for job in (job for job in jobs if job.arm == arm):
            run: dict[str, dict[str, float] | None] = {
                metric: complete({EVAL_TEMPLATES[t]: mean_over(job.name, SUBJECT, t, metric) for t in templates})
                for metric in ("clip_t", "clip_i", "dino", *IMAGE_STATS)}
            class_dino = complete({EVAL_TEMPLATES[t]: mean_over(job.name, CLASS, t, "dino") for t in templates})
            if class_dino is not None and base is not None:
                run["class_dino"] = class_dino
                run["prior_leak"] = {key: class_dino[key] - base[key] for key in class_dino}
            if all((job.name, t) in diversity for t in templates):
                run["diversity"] = {EVAL_TEMPLATES[t]: diversity[(job.name, t)] for t in templates}
            for metric, values in run.items():
                if values is not None:
                    table.setdefault(metric, {})[str(job.training_seed)] = values
        n_runs = len(spec.training_seeds)
        per_run[arm] = {metric: runs for metric, runs in table.items() if len(runs) == n_runs}
    per_prompt: dict[str, dict[str, dict[str, float]]] = {BASE_RUN: {"class_dino": base}} if base else {}
    for arm, table in per_run.items():
        per_prompt[arm] = {metric: {key: float(np.mean([values[key] for values in runs.values()]))
                                    for key in next(iter(runs.values()))} for metric, runs in table.items()}
    return per_prompt, per_run


def unit_values(spec: ExperimentSpec, per_prompt: dict[str, float],
                per_run: dict[str, dict[str, float]] | None) -> dict[str, float]:
    """The values the statistics pair: per prompt with one training seed, else per training run (mean over prompts).

    ``per_run`` is None for the base model, which has no training run: its
    per-prompt mean stands for every training seed.
    """
    unit, _ = analysis_unit(spec)
    if unit == PROMPT_UNIT:
        return per_prompt
    if per_run is None:
        return {f"training seed {seed}": float(np.mean(list(per_prompt.values()))) for seed in spec.training_seeds}
    return {f"training seed {seed}": float(np.mean(list(values.values()))) for seed, values in per_run.items()}


def statistics(spec: ExperimentSpec, per_prompt: dict[str, dict[str, dict[str, float]]],
               per_run: dict[str, dict[str, dict[str, dict[str, float]]]], missing: dict[str, str]) -> dict[str, Any]:
    """Per-arm summaries with t intervals; every planned comparison, Holm-adjusted within its family."""
    ev = spec.evaluation
    unit, n_units = analysis_unit(spec)
    n_runs = len(spec.training_seeds)

    def values(arm: str, metric: str) -> dict[str, float]:
        return unit_values(spec, per_prompt[arm][metric], per_run.get(arm, {}).get(metric))

    def compare(planned: Planned, treatment: dict[str, float], control: dict[str, float],
                names: tuple[str, str], higher_is_better: bool | None) -> tuple[Planned, Comparison]:
        return planned, compare_arms(treatment, control, planned.metric, names[0], names[1], higher_is_better,
                                     confidence=ev.confidence, n_resamples=ev.permutation_resamples,
                                     seed=ev.stats_seed, alpha=ev.alpha, unit=unit, n_training_runs=n_runs)

    summary: dict[str, dict[str, Any]] = {}
    for arm, table in per_prompt.items():
        summary[arm] = {}
        for metric in table:
            array = np.array([v for _, v in sorted(values(arm, metric).items())])
            low, high = t_interval(array, ev.confidence)
            summary[arm][metric] = {"mean": float(array.mean()), "ci_low": low, "ci_high": high, "unit": unit,
                                    "n_units": len(array), "interval_method": T_INTERVAL}
    made: list[tuple[Planned, Comparison]] = []
    baseline = per_prompt[BASELINE]
    necessity: dict[str, Any] = {}
    for planned in planned_comparisons(spec):
        arm, metric, table = planned.arm, planned.metric, per_prompt[planned.arm]
        if planned.kind == VS_BASELINE and metric in table and metric in baseline:
            made.append(compare(planned, values(arm, metric), values(BASELINE, metric), (arm, BASELINE),
                                ARM_METRICS[metric][0]))
        elif planned.kind == PRIOR_LEAK and "class_dino" in table:
            made.append(compare(planned, values(arm, "class_dino"), values(BASE_RUN, "class_dino"),
                                (arm, "base model (no adapter)"), False))
        elif planned.kind == TOKEN_NECESSITY:
            if "dino" in table and "class_dino" in table:
                made.append(compare(planned, values(arm, "dino"), values(arm, "class_dino"),
                                    (f"{arm}: token", f"{arm}: class phrase"), True))
            else:
                necessity[arm] = {"missing": missing.get("token_necessity", "DINO was not measured")}
    if BASELINE in spec.arms:
        necessity[BASELINE] = {"missing": "not applicable: the baseline names the subject with the class phrase "
                                          "itself, so its prompt with and without the trigger is the same prompt"}
    adjusted: dict[int, Comparison] = {}
    for family in (PRIMARY, SECONDARY):
        members = [i for i, (planned, _) in enumerate(made) if planned.family == family]
        for i, comparison in zip(members, adjust_family([made[i][1] for i in members], family)):
            adjusted[i] = comparison
    comparisons, prior_leak = [], {}
    for i, (planned, _) in enumerate(made):
        record = adjusted[i].to_dict()
        if planned.kind == VS_BASELINE:
            comparisons.append(record)
        elif planned.kind == PRIOR_LEAK:
            prior_leak[planned.arm] = record
        else:
            necessity[planned.arm] = record
    design = {
        "unit": unit, "n_units": n_units, "n_training_runs": n_runs, "interval_method": T_INTERVAL,
        "verdict_test": "permutation", "alpha": ev.alpha,
        "families": {family: {"adjustment": HOLM,
                              "comparisons": [f"{p.kind}: {c.treatment} vs {c.control}, {c.metric}"
                                              for p, c in made if p.family == family]}
                     for family in (PRIMARY, SECONDARY)},
    }
    return {"design": design, "summary": summary, "comparisons": comparisons, "prior_leak": prior_leak,
            "token_necessity": {arm: necessity[arm] for arm in spec.arms if arm in necessity}}


def _load_pipeline(model: str, ev: EvaluationSpec, device: str, lora: Path | None) -> tuple[Any, LoadResult | None]:
    """A fresh pipeline with ``lora`` (token and LoRA) applied before any offload hooks; no per-image progress bar."""
    import torch

    from ..serving.generate import load_pipeline
    from ..weights.loader import load_zero_prior

    offload = ev.offload != "none"
    if offload and not torch.cuda.is_available():
        raise ConfigError(f"experiment.evaluation.offload: {ev.offload} needs a CUDA GPU (diffusers' CPU offload "
                          "moves weights to it as needed); set it to none")
    pipe = load_pipeline(model, device="cpu" if offload else device, dtype=torch.bfloat16 if offload else None)
    result = load_zero_prior(pipe, lora, lora_scale=ev.lora_scale) if lora is not None else None
    if ev.offload == "model":
        pipe.enable_model_cpu_offload()
    elif ev.offload == "sequential":
        pipe.enable_sequential_cpu_offload()
    pipe.set_progress_bar_config(disable=True)
    return pipe, result


def _free_memory() -> None:
    """Release a pipeline or metric model before the next one loads (Qwen-Image is about 40 GB in bf16)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _prompt_table(spec: ExperimentSpec, jobs: Sequence[ArmJob], templates: Sequence[int]) -> list[dict[str, Any]]:
    subjects = {job.arm: job.subject_text for job in jobs}
    return [{
        "template": EVAL_TEMPLATES[t],
        "class_prompt": EVAL_TEMPLATES[t].format(subject=spec.subject.class_phrase),
        "subject_prompts": {arm: EVAL_TEMPLATES[t].format(subject=subject) for arm, subject in subjects.items()},
    } for t in templates]


def _image_records(jobs: Sequence[ArmJob], files: dict[tuple[str, str, int, int], str],
                   scores: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One record per (run, kind, template, seed); a baseline's subject and class records share a file."""
    arm_of = {job.name: job.arm for job in jobs} | {BASE_RUN: None}
    return [{"run": run, "arm": arm_of[run], "kind": kind, "template": EVAL_TEMPLATES[template], "seed": seed,
             "file": file, "metrics": scores[file]} for (run, kind, template, seed), file in sorted(files.items())]
