"""Train every arm through ai-toolkit's own ``run.py``, one subprocess per job, and log what happened.

A result is only worth as much as the record of how it was made, so
``experiment_log.json`` (next to the results) holds every command, the library
versions and the ai-toolkit commit, the seeds, the sha256 of every input
(arm jobs, dataset files, the model's ``model_index.json``) and output (LoRA
files, ai-toolkit's step logs) and the timings. It is rewritten after every
arm, so a failed arm leaves a log that says how far the experiment got.

Steps: write (or check) the paired captions in the dataset, write one job per
arm under ``OUTPUT/jobs/``, run each through a staged ai-toolkit root (the
user's checkout is never written to) with its output streamed to the console
and to ``OUTPUT/logs/NAME.log``; a failed arm stops the experiment with its log
path. A job whose final LoRA already exists and whose job file is unchanged is
reused, so a rerun after a failure trains only what is missing.
"""

from __future__ import annotations

import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from ..aitk.checkout import check_ai_toolkit
from ..aitk.facts import STEP_LOG
from ..aitk.launch import log_tail, run_ai_toolkit, stage_ai_toolkit, write_config
from ..errors import ExperimentError
from ..fileio import sha256_file
from ..placeholder.config import PlaceholderConfig
from .arms import PROCESS, ArmJob
from .captions import BASELINE, RARE_WORD, STATS_FILE, ZERO_PRIOR, caption_path, plan_captions, write_captions
from .layout import JOBS_FOLDER, LOGS_FOLDER, relative, subject_folders, training_images, write_log
from .spec import ExperimentSpec

LIBRARIES = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "zero-prior")
CAPTION_MODES = (BASELINE, ZERO_PRIOR, RARE_WORD)


class ExperimentResult:
    """Where the experiment's outputs are."""

    log: Path
    metrics: Path | None
    report: Path | None


def train_arms(
    spec: ExperimentSpec,
    jobs: Sequence[ArmJob],
    checkout: Path,
    log: dict[str, Any],
    fresh: bool = False,
    echo: bool = True,
    env: Mapping[str, str] | None = None,
) -> None:
    """Write each job file and run the jobs that are not done yet; stop at the first failure.

    ``log["arms"]`` may hold the entries of an earlier run; reused results keep theirs.
    """
    job_files = [spec.output_dir / JOBS_FOLDER / f"{job.name}.yaml" for job in jobs]
    todo = [(job, path) for job, path in zip(jobs, job_files) if _needs_training(spec, job, path, fresh)]
    earlier = {entry["name"]: entry for entry in log.get("arms", [])}
    log["arms"] = []
    for job, path in zip(jobs, job_files):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_config(job.job, path)
        entry = _arm_entry(spec, job, path, "pending" if any(job is t for t, _ in todo) else "reused")
        previous = earlier.get(job.name, {})
        if entry["status"] == "reused" and previous.get("job_sha256") == entry["job_sha256"]:
            # Keep how the reused result was made (command, log, timings) from the run that trained it.
            entry = {**previous, **entry}
        log["arms"].append(entry)
    entries = {entry["name"]: entry for entry in log["arms"]}
    write_log(spec.output_dir, log)
    if not todo:
        return
    with tempfile.TemporaryDirectory(prefix="zero_prior_experiment_") as tmp:
        root = stage_ai_toolkit(checkout, Path(tmp))
        for job, path in todo:
            entry = entries[job.name]
            command = [sys.executable, "run.py", str(path)]
            log_path = spec.output_dir / LOGS_FOLDER / f"{job.name}.log"
            entry.update(status="running", command=command, cwd=f"staged ai-toolkit root linking {checkout}",
                         log=relative(log_path, spec.output_dir), started=_now())
            write_log(spec.output_dir, log)
            if echo:
                print(f"zero-prior experiment: training {job.arm} (seed {job.training_seed}) -> "
                      f"{log_path}", flush=True)
            started = time.perf_counter()
            completed = run_ai_toolkit(root, [path], env=env, log_path=log_path, echo=echo, capture=False)
            code = completed.returncode
            entry.update(seconds=round(time.perf_counter() - started, 3), returncode=code)
            if code != 0 or not job.lora_path(spec.runs_dir).is_file():
                entry["status"] = "failed"
                write_log(spec.output_dir, log)
                raise ExperimentError(
                    f"arm {job.arm} (training seed {job.training_seed}) failed (exit code {code}"
                    f"{'' if code else ', no final LoRA written'}); its log: {log_path}\n{log_tail(completed.stdout)}"
                )
            entry.update(_arm_entry(spec, job, path, "trained"), seconds=entry["seconds"], returncode=code)
            write_log(spec.output_dir, log)


def prepare_captions(spec: ExperimentSpec) -> list[dict[str, Any]]:
    """Write the paired captions (baseline, zero_prior, rare_word) next to every subject image, or check them.

    Captions already there must be exactly what the plan would write: other
    captions would silently change what an arm trains on.
    """
    process = spec.base_job["config"]["process"][0]
    token = PlaceholderConfig.from_dict(process.get("placeholder"), path=f"{PROCESS}.placeholder").token
    summaries = []
    for folder in subject_folders(spec):
        plan = plan_captions(folder, seed=spec.subject.captions_seed, subject_class=spec.subject.subject_class,
                             token=token, rare_word=spec.subject.rare_word, subject_phrases=spec.subject.phrases)
        planned = {caption_path(folder / e.image, mode): text
                   for e in plan.entries for mode, text in e.captions.items()}
        differing = [path for path, text in planned.items()
                     if path.is_file() and path.read_text(encoding="utf-8") != text]
        if differing:
            raise ExperimentError(
                f"{differing[0]} holds a different caption than this experiment plans "
                f"({len(differing)} such file(s)); the arms must train on captions from one plan: delete the "
                f"dataset's *.{{{','.join(CAPTION_MODES)}}}.txt files, or make experiment.subject match the settings "
                "they were written with"
            )
        missing = [path for path in planned if not path.is_file()]
        if missing:
            write_captions(plan, overwrite=True)  # every existing caption equals the plan: rewriting changes nothing
        summaries.append({"dataset": str(folder), "images": len(plan.entries), "written": len(missing),
                          "statistics": str(folder / STATS_FILE)})
    return summaries


def start_log(spec: ExperimentSpec, checkout: Path) -> dict[str, Any]:
    """The log's fixed part: experiment file, environment, seeds."""
    return {
        "experiment": spec.name,
        "spec": {"path": str(spec.path), "sha256": sha256_file(spec.path), "base_job": spec.base_job_source},
        "started": _now(),
        "environment": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "libraries": {name: _version(name) for name in LIBRARIES},
            "ai_toolkit": {"path": str(checkout), "commit": check_ai_toolkit(checkout)},
        },
        "seeds": {
            "training": list(spec.training_seeds),
            "placeholder_init": list(spec.training_seeds),
            "captions": spec.subject.captions_seed,
            "evaluation": list(spec.evaluation.seeds),
            "statistics": spec.evaluation.stats_seed,
        },
    }


def input_hashes(spec: ExperimentSpec) -> dict[str, Any]:
    """sha256 of the dataset files the arms read and of the base model's ``model_index.json``."""
    dataset = {}
    for image in training_images(spec):
        dataset[str(image)] = sha256_file(image)
        for mode in CAPTION_MODES:
            caption = caption_path(image, mode)
            dataset[str(caption)] = sha256_file(caption)
    model = str(spec.base_job["config"]["process"][0]["model"]["name_or_path"])
    return {"dataset": dataset, "model": {"name_or_path": model, **_model_index(model)}}


def check_token_only_lora(path: Path) -> int:
    """Count the LoRA's up tensors and refuse a token_only result whose LoRA is not exactly zero."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        ups = [key for key in handle.keys() if key.endswith((".lora_B.weight", ".lora_up.weight"))]
        moved = [key for key in ups if bool(handle.get_tensor(key).any())]
    if not ups or moved:
        raise ExperimentError(
            f"{path}: the token_only arm must leave its LoRA at zero, but {len(moved)} of {len(ups)} lora_B tensors "
            f"are non-zero (e.g. {moved[0] if moved else 'none found'}); the optimizer did not honour train.lr: 0"
        )
    return len(ups)


def _needs_training(spec: ExperimentSpec, job: ArmJob, job_file: Path, fresh: bool) -> bool:
    """Whether ``job`` must run; refuses to mix a different earlier job into this experiment."""
    save_root = job.save_root(spec.runs_dir)
    if fresh:
        shutil.rmtree(save_root, ignore_errors=True)
        return True
    if not save_root.exists():
        return True
    same = job_file.is_file() and yaml.safe_load(job_file.read_text(encoding="utf-8")) == job.job
    if not same:
        raise ExperimentError(
            f"{save_root} holds a run of a different job than {job.name} now is (compare {job_file}); ai-toolkit "
            "would resume from it; pass --fresh to retrain, or choose another experiment.output_dir"
        )
    # Same job: done -> reuse; interrupted -> run again, and ai-toolkit resumes from its last checkpoint.
    return not job.lora_path(spec.runs_dir).is_file()


def _arm_entry(spec: ExperimentSpec, job: ArmJob, job_file: Path, status: str) -> dict[str, Any]:
    """The log entry of one job: its settings, input and, when present, output hashes."""
    entry: dict[str, Any] = {
        "arm": job.arm,
        "name": job.name,
        "training_seed": job.training_seed,
        "status": status,
        "job_file": relative(job_file, spec.output_dir),
        "job_sha256": sha256_file(job_file),
        "caption_mode": job.caption_mode,
        "placeholder_token": job.placeholder_token,
    }
    lora = job.lora_path(spec.runs_dir)
    if lora.is_file():
        outputs = {relative(lora, spec.output_dir): sha256_file(lora)}
        step_log = job.save_root(spec.runs_dir) / STEP_LOG
        if step_log.is_file():
            outputs[relative(step_log, spec.output_dir)] = sha256_file(step_log)
        entry["outputs"] = outputs
        if job.arm == "token_only":
            entry["lora_frozen"] = {"lora_b_tensors": check_token_only_lora(lora), "all_zero": True}
    return entry


def _model_index(model: str) -> dict[str, Any]:
    """sha256 of the model's ``model_index.json`` from a local folder or the hub cache (never downloaded)."""
    local = Path(model).expanduser() / "model_index.json"
    if local.is_file():
        return {"model_index.json": str(local), "sha256": sha256_file(local)}
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "model_index.json")
    except ValueError:  # not a valid repo id
        cached = None
    if isinstance(cached, str):
        return {"model_index.json": cached, "sha256": sha256_file(cached)}
    return {"sha256": None, "missing": "not a local folder and not in the Hugging Face cache yet; not hashed"}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
