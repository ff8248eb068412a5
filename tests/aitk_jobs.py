"""Writing tiny jobs, running them through ai-toolkit's real ``run.py`` and reading what they left.

Shared by every test module that runs ``run.py`` (``test_aitk_run.py`` on
Qwen-Image, ``test_family_*.py`` on the other families), so each runs and
reads jobs the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aitk_cases import TINY_CONFIG, TOKEN

from zero_prior.aitk.launch import load_config_template, run_ai_toolkit, stage_ai_toolkit, write_config

PROBE_DIR = Path(__file__).resolve().parent / "aitk_probe"

JOB = "tiny_zero_prior"  # config.name in tiny_cpu.yaml: ai-toolkit's checkpoint prefix
RUN_TIMEOUT = 600


@dataclass
class Run:
    """One job's outcome: the shared run.py output and the job's checkpoint folder."""

    output: str
    save_root: Path

    @property
    def final(self) -> Path:
        return self.save_root / f"{JOB}.safetensors"

    def step(self, number: int) -> Path:
        return self.save_root / f"{JOB}_{number:09d}.safetensors"


def stage_with_probe(checkout: Path, folder: Path) -> Path:
    """A staged ai-toolkit root seeing this package and the probe (process type ``zero_prior_probe``)."""
    return stage_ai_toolkit(checkout, folder, {"zero_prior_probe": PROBE_DIR})


def job_config(model: Path, dataset: Path, training_folder: Path, change: Callable[[dict], None] | None = None,
               arch: str | None = None) -> dict:
    """``tiny_cpu.yaml`` with its paths filled, the model's ``arch`` (default Qwen-Image's) and ``change`` applied."""
    config = load_config_template(
        TINY_CONFIG, {"MODEL_PATH": str(model), "DATASET_PATH": str(dataset), "TRAINING_FOLDER": str(training_folder)},
    )
    process = config["config"]["process"][0]
    if arch is not None:
        process["model"]["arch"] = arch
    if change is not None:
        change(process)
    return config


def write_job(workdir: Path, name: str, model: Path, dataset: Path, change: Callable[[dict], None] | None = None,
              arch: str | None = None) -> tuple[Path, Run]:
    """Job ``name``'s YAML (``job_config``) at ``workdir/<name>.yaml``, its outputs under ``workdir/<name>``.

    Returns the YAML's path and the job's ``Run`` with no output yet (``run_jobs`` gives that).
    """
    folder = workdir / name
    path = write_config(job_config(model, dataset, folder, change, arch=arch), workdir / f"{name}.yaml")
    return path, Run("", folder / JOB)


def run_jobs(root: Path, config_paths: list[Path], recover: bool = False, launcher: tuple[str, ...] = (),
             env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT) -> str:
    """One ``run.py`` over ``config_paths`` (``-r``: go on after a failed job); its output, asserting rc 0."""
    result = run_ai_toolkit(root, config_paths, recover=recover, env={"HF_HUB_OFFLINE": "1", **(env or {})},
                            timeout=timeout, launcher=launcher)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def run_written(root: Path, written: dict[str, tuple[Path, Run]], recover: bool = False) -> dict[str, Run]:
    """One ``run.py`` over the jobs ``write_job`` wrote (``-r`` with ``recover``); each job's ``Run``, by name."""
    output = run_jobs(root, [path for path, _ in written.values()], recover=recover)
    return {name: Run(output, run.save_root) for name, (_, run) in written.items()}


def grad_norms(output: str, step: int, vectors: int) -> dict[str, float]:
    """Per-vector gradient norms from the trainer's telemetry line(s) for ``step``."""
    pattern = rf"zero-prior step {step}: placeholder/{re.escape(TOKEN)}/(\d+) norm \S+ grad_norm (\S+)"
    found = re.findall(pattern, output)
    assert len(found) == vectors, f"no telemetry for every vector at step {step}"
    return {index: float(value) for index, value in found}


def assert_vector_trained(run: Run, family: str, first_id: int, vectors: int, label: str) -> dict[str, Any]:
    """``run`` (the probe's 4 steps) trained its ``vectors``-vector placeholder at the first spare ids of the
    ``family``'s tokenizer and changed no text-encoder tensor; returns the probe's record for more checks."""
    import json

    import torch

    from zero_prior.weights.format import read_zero_prior

    at_2, at_4 = read_zero_prior(run.step(2)), read_zero_prior(run.final)
    assert at_4.family == family and (at_2.training_step, at_4.training_step) == (2, 4)
    [stored] = at_4.placeholders
    assert stored.token == TOKEN and stored.token_ids == list(range(first_id, first_id + vectors))
    assert stored.vectors.norm(dim=1).min() > 10 * max(stored.initial_norms)
    assert not torch.equal(at_2.placeholders[0].vectors, stored.vectors)
    norms = grad_norms(run.output, 2, vectors)
    print(f"\n{label} through run.py: step-2 grad norms {norms}")
    assert min(norms.values()) > 0
    probe = json.loads((run.save_root.parent / "probe.json").read_text())
    assert probe["text_encoder_tensors"] > 0 and probe["text_encoder_changed"] == []
    return probe


def last_sample_embeds(run: Run) -> dict[str, Any]:
    """The probe's prompt embeddings of the run's last sampling, by prompt (a tensor, or a list per prompt)."""
    import torch

    return torch.load(run.save_root.parent / "sample_embeds.pt")


def last_sample_controls(run: Run) -> dict[str, Any]:
    """Edit models: the control images (as the encoder got them) of the last sampling's prompts, by prompt."""
    import torch

    return torch.load(run.save_root.parent / "sample_controls.pt")


def max_abs_difference(a: Any, b: Any) -> float:
    """Largest absolute difference between two embeddings (tensors, or lists of per-prompt tensors)."""
    pairs = zip(a, b, strict=True) if isinstance(a, list) else [(a, b)]
    worst = 0.0
    for x, y in pairs:
        assert x.shape == y.shape, f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}"
        worst = max(worst, float((x.float() - y.float()).abs().max()))
    return worst


def assert_samples_encode_as(run: Run, pipe: Any, result: Any, label: str, **encode: Any) -> None:
    """The run's last sample embeddings ('a photo of <token>') equal ``pipe.encode_prompt``'s with the file loaded
    (``result``: ``load_zero_prior``'s), to 1e-6; prints the difference. ``encode``: further ``encode_prompt``
    arguments."""
    import torch

    from zero_prior.placeholder.vocabulary import expand_prompt

    trained = last_sample_embeds(run)
    assert list(trained) == [f"a photo of {TOKEN}"]
    for prompt, embeds in trained.items():
        with torch.no_grad():
            fresh, _ = pipe.encode_prompt(expand_prompt(prompt, result.tokens), device="cpu", **encode)
        difference = max_abs_difference(embeds, fresh)
        print(f"\n{label}: max abs difference, training vs {type(pipe).__name__} embeddings at {prompt!r}: "
              f"{difference:.3g}")
        assert difference <= 1e-6


def baseline(process_type: str) -> Callable[[dict], None]:
    """A job change: the toggle off (a plain trigger word, no sampling) under ``process_type``."""
    def change(process: dict) -> None:
        process["type"] = process_type
        process["trigger_word"] = "striped fish"
        process["train"].update(train_placeholder_token=False, disable_sampling=True)
    return change


def resume_to_step_6(vectors: int, quantize_te: bool = False) -> Callable[[dict], None]:
    """A job change: a ``vectors``-vector run continued to step 6, logging every step, without samples.

    ``quantize_te`` runs the text encoder in qfloat8, so the same steps show the
    gradient reaching the vector through a quantized encoder.
    """
    def change(process: dict) -> None:
        process["placeholder"]["num_vectors"] = vectors
        process["train"].update(steps=6, disable_sampling=True)
        process["logging"]["log_every"] = 1
        if quantize_te:
            process["model"].update(quantize_te=True, qtype_te="qfloat8")
    return change


def continue_from(source: Run, save_root: Path, save: Path | None = None) -> None:
    """Put ``source``'s optimizer state and ``save`` (default its final one) into ``save_root``, so a job there
    resumes from them."""
    import shutil

    save_root.mkdir(parents=True)
    for name in ("optimizer.pt", (save or source.final).name):  # the save copied last: newest, as resume wants
        shutil.copy2(source.save_root / name, save_root / name)


def assert_resumed_bit_exactly(source: Run, resumed: Run, vectors: int) -> None:
    """``resumed`` (continued from ``source``'s step-4 save to step 6) restored its vector bit-exactly and trained."""
    import json

    from zero_prior.weights.format import METADATA_KEY, read_header, read_zero_prior

    stored = json.loads(read_header(source.final)[METADATA_KEY])["placeholders"][0]["vectors"]
    assert f"restored placeholder '{TOKEN}' from {JOB}.safetensors (step 4), vector sha256 {stored['sha256']}" \
        in resumed.output
    assert "Failed to load optimizer state" not in resumed.output
    assert read_zero_prior(resumed.final).training_step == 6
    assert min(grad_norms(resumed.output, 5, vectors).values()) > 0


def assert_same_lora(ours: Run, builtin: Run) -> None:
    """The two runs saved the very same LoRA tensors, and ``ours`` (the toggle off) no placeholder."""
    import torch
    from safetensors.torch import load_file

    from zero_prior.weights.format import read_zero_prior

    mine, theirs = load_file(ours.final), load_file(builtin.final)
    assert read_zero_prior(ours.final) is None
    assert mine.keys() == theirs.keys() and len(mine) > 0
    assert all(torch.equal(mine[key], theirs[key]) for key in mine)
