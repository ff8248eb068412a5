"""The extension inside ai-toolkit's real ``python run.py``, on the tiny Qwen-Image, on CPU.

ai-toolkit comes from ``$AI_TOOLKIT_DIR`` or ``~/ai-toolkit`` and is never
modified: ``zero_prior.aitk.launch`` stages a root of symlinks whose
``extensions/`` also holds this package and the test probe (``tests/aitk_probe``,
a recording subclass of the trainer). Every ``run.py`` start costs about 20 s
of imports, so the tests share a few invocations (module-scoped fixtures):
a zero-prior run, its resumption, one ``run.py -r`` holding every refused
config plus the baseline through this process and through ``sd_trainer``,
the pivot runs and the two-rank runs. The config rules themselves are checked
in-process in ``test_aitk_rules.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tinytrain
import torch
from aitk_cases import REFUSALS, TOKEN
from aitk_jobs import (
    JOB,
    Run,
    assert_resumed_bit_exactly,
    assert_same_lora,
    assert_samples_encode_as,
    assert_vector_trained,
    baseline,
    continue_from,
    grad_norms,
    resume_to_step_6,
    run_jobs,
    run_written,
    stage_with_probe,
    write_job,
)
from safetensors.torch import load_file

from zero_prior.models.qwen_image import QWEN_IMAGE
from zero_prior.placeholder.vocabulary import expand_prompt
from zero_prior.testbed import make_subject_dataset
from zero_prior.weights.format import read_zero_prior

VECTORS = 2  # the runs train a two-vector placeholder, so prompts must be expanded to "<zwx><zwx_1>"


# --- real run.py ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aitk_root(ai_toolkit_checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A staged ai-toolkit root seeing this package and the probe; the real checkout stays untouched."""
    return stage_with_probe(ai_toolkit_checkout, tmp_path_factory.mktemp("staged"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def datasets(workdir: Path) -> dict[str, Path]:
    """Four subject images captioned ``a photo of [trigger]``, and one more whose dataset names its own trigger."""
    return {
        "subject": make_subject_dataset(workdir / "subject", num_images=4, size=64, seed=0)[0].parent,
        "other": make_subject_dataset(workdir / "other", num_images=1, size=64, seed=1)[0].parent,
    }


@pytest.fixture(scope="module")
def zero_prior_run(aitk_root: Path, workdir: Path, datasets: dict[str, Path], tiny_pipeline_dir: Path) -> Run:
    """4 steps with the placeholder (probe process), saves at 2 and 4, samples at 2 and 4."""

    def change(process: dict) -> None:
        process["type"] = "zero_prior_probe"
        process["placeholder"]["num_vectors"] = VECTORS
        process["datasets"].append({**process["datasets"][0], "folder_path": str(datasets["other"]),
                                    "trigger_word": "fish"})

    path, run = write_job(workdir, "zero_prior", tiny_pipeline_dir, datasets["subject"], change)
    return Run(run_jobs(aitk_root, [path]), run.save_root)


@pytest.fixture(scope="module")
def resumed_run(aitk_root: Path, workdir: Path, datasets: dict[str, Path], tiny_pipeline_dir: Path,
                zero_prior_run: Run) -> Run:
    """The zero-prior run's final save and optimizer state, continued to step 6 by the real process type.

    It also runs its text encoder quantized (qfloat8), so the same two steps
    show the gradient reaching the placeholder through a quantized encoder.
    """
    path, run = write_job(workdir, "resumed", tiny_pipeline_dir, datasets["subject"],
                          resume_to_step_6(VECTORS, quantize_te=True))
    continue_from(zero_prior_run, run.save_root)
    return Run(run_jobs(aitk_root, [path]), run.save_root)


# Refused by the preflight (the files a config points at), before ai-toolkit loads the model or writes a file:
# (id, change given the work folder, start of the error message).
PREFLIGHT_REFUSALS: list[tuple[str, Callable[[Path], Callable[[dict], None]], str]] = [
    ("token_in_vocabulary", lambda work: lambda p: (p["placeholder"].update(token="hello"), p.pop("trigger_word", 0)),
     "placeholder token 'hello' already exists in the tokenizer vocabulary (id 14990)"),
    ("token_splits", lambda work: lambda p: (p["placeholder"].update(token="a-"), p.pop("trigger_word", 0)),
     "placeholder token 'a-' does not stay one token inside the Qwen-Image prompt template"),
    ("dataset_missing", lambda work: lambda p: p["datasets"][0].update(folder_path=str(work / "no_such_folder")),
     "config.process[0].datasets[0].folder_path"),
    ("dataset_without_images", lambda work: lambda p: p["datasets"][0].update(folder_path=str(work / "empty_dataset")),
     "config.process[0].datasets[0].folder_path"),
]


@pytest.fixture(scope="module")
def refused_and_baseline_runs(aitk_root: Path, workdir: Path, datasets: dict[str, Path],
                              tiny_pipeline_dir: Path) -> dict[str, Run]:
    """One ``run.py -r``: every refused config, then one baseline YAML run as ``zero_prior_trainer``, then as
    ``sd_trainer``."""
    (workdir / "empty_dataset").mkdir()
    (workdir / "empty_dataset" / "001.txt").write_text("a photo of [trigger]")
    preflight = [(name, change(workdir), message) for name, change, message in PREFLIGHT_REFUSALS]
    jobs = {f"refused_{name}": change for name, change, _ in [*REFUSALS, *preflight]}
    jobs.update(baseline_ours=baseline("zero_prior_trainer"), baseline_builtin=baseline("sd_trainer"))
    written = {name: write_job(workdir, name, tiny_pipeline_dir, datasets["subject"], change)
               for name, change in jobs.items()}
    return {name.removeprefix("refused_"): run for name, run in run_written(aitk_root, written, recover=True).items()}


def _dead_pid() -> int:
    """The id of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_toggle_on_saves_the_placeholder_and_toggle_off_is_a_plain_lora(
    zero_prior_run: Run, refused_and_baseline_runs: dict[str, Run]
) -> None:
    for path in (zero_prior_run.step(2), zero_prior_run.final):
        meta = read_zero_prior(path)
        assert meta is not None and [p.token for p in meta.placeholders] == [TOKEN]
    assert read_zero_prior(refused_and_baseline_runs["baseline_ours"].final) is None
    on, off = load_file(zero_prior_run.final), load_file(refused_and_baseline_runs["baseline_ours"].final)
    assert on.keys() == off.keys()  # the same LoRA layout; the placeholder lives in the metadata only


def test_the_vector_trains_and_the_text_encoder_does_not(zero_prior_run: Run) -> None:
    # Every vector gets a gradient: "[trigger]" in the captions became the token, expanded to all its entries.
    assert_vector_trained(zero_prior_run, QWEN_IMAGE.name, 151665, VECTORS, QWEN_IMAGE.label)
    assert read_zero_prior(zero_prior_run.final).placeholders[0].initial_norms[0] < 1e-3  # std 1e-5 x sqrt(64)


def test_samples_use_the_current_vector(zero_prior_run: Run) -> None:
    probe = json.loads((zero_prior_run.save_root.parent / "probe.json").read_text())
    samples = probe["samples"]
    assert [s["step"] for s in samples] == [2, 4]
    assert all(s["prompt"] == f"a photo of {TOKEN}" and s["equal"] for s in samples)  # expanded inside the model
    assert samples[0]["vector_norm"] != samples[1]["vector_norm"]
    images = sorted(p.name for p in (zero_prior_run.save_root / "samples").glob("*.jpg"))
    assert len(images) == 2 and "_000000002_" in images[0] and "_000000004_" in images[1]


def test_only_ai_toolkit_checkpoints_are_written(zero_prior_run: Run) -> None:
    written = sorted(p.name for p in zero_prior_run.save_root.iterdir())
    assert written == ["config.yaml", "optimizer.pt", "samples", f"{JOB}.safetensors", f"{JOB}_000000002.safetensors"]


def test_lora_file_loads_with_load_zero_prior(zero_prior_run: Run, tiny_pipeline_dir: Path) -> None:
    from zero_prior.weights.loader import load_zero_prior

    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    result = load_zero_prior(pipe, zero_prior_run.final)
    stored = read_zero_prior(zero_prior_run.final).placeholders[0]
    [registered] = result.tokens
    assert registered.token == TOKEN and list(registered.token_ids) == stored.token_ids
    rows = pipe.text_encoder.get_input_embeddings().weight[list(registered.token_ids)]
    assert torch.equal(rows.detach(), stored.vectors)
    assert result.lora_tensors == len(load_file(zero_prior_run.final))
    # The last sample's prompt embeddings in training equal QwenImagePipeline's with the file loaded.
    assert_samples_encode_as(zero_prior_run, pipe, result, "Qwen-Image")


def test_lora_file_loads_with_plain_diffusers(zero_prior_run: Run, tiny_pipeline_dir: Path) -> None:
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    # Folder plus weight_name: the form diffusers accepts for a local file also under HF_HUB_OFFLINE=1.
    pipe.load_lora_weights(str(zero_prior_run.save_root), weight_name=zero_prior_run.final.name,
                           adapter_name="subject")
    assert pipe.get_list_adapters() == {"transformer": ["subject"]}


def test_resume_restores_the_vector_bit_exactly_and_continues(zero_prior_run: Run, resumed_run: Run) -> None:
    assert_resumed_bit_exactly(zero_prior_run, resumed_run, VECTORS)
    output = resumed_run.output
    assert f"RESUMING FROM {resumed_run.final}" in output and "Found step 4 in metadata" in output
    assert "Loading optimizer state" in output
    resumed, before = read_zero_prior(resumed_run.final), read_zero_prior(zero_prior_run.final)
    assert not torch.equal(resumed.placeholders[0].vectors, before.placeholders[0].vectors)


def test_gradient_reaches_the_placeholder_through_a_quantized_text_encoder(resumed_run: Run) -> None:
    assert "Quantizing Text Encoder" in resumed_run.output
    assert min(grad_norms(resumed_run.output, 5, VECTORS).values()) > 0


@pytest.mark.parametrize("name, message", [(r[0], r[2]) for r in [*REFUSALS, *PREFLIGHT_REFUSALS]],
                         ids=[r[0] for r in [*REFUSALS, *PREFLIGHT_REFUSALS]])
def test_refused_config_stops_run_py_before_writing(
    refused_and_baseline_runs: dict[str, Run], name: str, message: str
) -> None:
    run = refused_and_baseline_runs[name]
    assert f"Error running job: {message}" in run.output
    assert not run.save_root.parent.exists()


def test_baseline_through_this_process_equals_sd_trainer(refused_and_baseline_runs: dict[str, Run]) -> None:
    assert_same_lora(refused_and_baseline_runs["baseline_ours"], refused_and_baseline_runs["baseline_builtin"])


# --- pivot-then-cache (placeholder.stop_step) and the trainer's prefix cache -------------------

PIVOT = 4  # ai-toolkit counts steps from 0: the save at step 2 holds 3 updates, the pivot comes after 4


@pytest.fixture(scope="module")
def pivot_and_full_encode_runs(aitk_root: Path, workdir: Path, datasets: dict[str, Path],
                               tiny_pipeline_dir: Path) -> dict[str, Run]:
    """One ``run.py``: 8 steps pivoting at step 4 (half the captions dropped), and the zero-prior run's twin
    with ``prefix_cache: false``."""

    def pivot(process: dict) -> None:
        process["type"] = "zero_prior_probe"
        process["placeholder"].update(num_vectors=VECTORS, stop_step=PIVOT)
        process["train"]["steps"] = 8
        process["datasets"][0]["caption_dropout_rate"] = 0.5

    def full_encode(process: dict) -> None:
        process["type"] = "zero_prior_probe"
        process["placeholder"].update(num_vectors=VECTORS, prefix_cache=False)
        process["datasets"].append({**process["datasets"][0], "folder_path": str(datasets["other"]),
                                    "trigger_word": "fish"})

    written = {name: write_job(workdir, name, tiny_pipeline_dir, datasets["subject"], change)
               for name, change in (("pivot", pivot), ("full_encode", full_encode))}
    return run_written(aitk_root, written)


@pytest.fixture(scope="module")
def resumed_after_pivot(aitk_root: Path, workdir: Path, datasets: dict[str, Path], tiny_pipeline_dir: Path,
                        pivot_and_full_encode_runs: dict[str, Run]) -> dict[str, Run]:
    """One ``run.py -r``: the pivot run's step-6 save continued to step 10, and the same save resumed with
    another stop_step (refused)."""
    source = pivot_and_full_encode_runs["pivot"]
    written = {}
    cases = (("resumed_pivot", PIVOT), ("resumed_other_stop_step", 3), ("resumed_cut_optimizer", PIVOT))
    for name, stop_step in cases:

        def change(process: dict, stop_step: int = stop_step) -> None:
            process["placeholder"].update(num_vectors=VECTORS, stop_step=stop_step)
            process["train"]["steps"] = 10
            process["datasets"][0]["caption_dropout_rate"] = 0.5

        written[name] = path, run = write_job(workdir, name, tiny_pipeline_dir, datasets["subject"], change)
        continue_from(source, run.save_root, source.step(6))
        if name == "resumed_other_stop_step":  # the user's config.yaml of the earlier run must survive the refusal
            (run.save_root / "config.yaml").write_text("the earlier run's config\n")
        if name == "resumed_cut_optimizer":  # killed in the middle of a save: a cut-off optimizer.pt and a temporary
            optimizer = run.save_root / "optimizer.pt"
            optimizer.write_bytes(optimizer.read_bytes()[:1000])
            (run.save_root / f".{JOB}_000000008.safetensors.{_dead_pid()}.x.tmp").mkdir()
    return run_written(aitk_root, written, recover=True)


def test_the_pivot_freezes_the_vector_and_unloads_the_text_encoder(pivot_and_full_encode_runs: dict[str, Run]) -> None:
    run = pivot_and_full_encode_runs["pivot"]
    at = {step: read_zero_prior(run.step(step)) for step in (2, 4, 6)}
    final = read_zero_prior(run.final)
    assert not torch.equal(at[2].placeholders[0].vectors, at[4].placeholders[0].vectors)  # trained up to the pivot
    assert torch.equal(at[4].placeholders[0].vectors, final.placeholders[0].vectors)  # frozen from it on
    assert "pivot_step" not in at[2].extra
    assert at[4].extra["pivot_step"] == final.extra["pivot_step"] == PIVOT and final.training_step == 8
    probe = json.loads((run.save_root.parent / "probe.json").read_text())
    assert probe["pivot"]["step"] == PIVOT and probe["pivot"]["text_encoder_now"] == "FakeTextEncoder"
    assert probe["pivot"]["old_text_encoder_devices"] == ["meta"]  # its memory is released
    assert not any(probe["pivot"]["vector_requires_grad"])  # also after ai-toolkit's ensure_params_requires_grad
    assert probe["pivot"]["sample_prompts_cached"] and probe["text_encoder_changed"] == []
    samples = sorted(p.name for p in (run.save_root / "samples").glob("*.jpg"))
    assert [name.split("_")[-2] for name in samples] == ["000000002", "000000004", "000000006", "000000008"]
    # The LoRA goes on training after the pivot.
    at_4, at_8 = load_file(run.step(4)), load_file(run.final)
    assert any(not torch.equal(at_4[key], at_8[key]) for key in at_4)


def test_cached_prompts_equal_a_fresh_encode_with_the_final_vector(
    pivot_and_full_encode_runs: dict[str, Run], tiny_pipeline_dir: Path
) -> None:

    from zero_prior.weights.loader import load_zero_prior

    run = pivot_and_full_encode_runs["pivot"]
    cached = torch.load(run.save_root.parent / "pivot_prompts.pt")
    # Each caption as the data loader finishes it, and the dropped caption (trigger added to "").
    assert sorted(cached) == [f"{TOKEN} ", f"a photo of {TOKEN}"]
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    registered = load_zero_prior(pipe, run.final).tokens
    for prompt, embeds in cached.items():
        with torch.no_grad():
            fresh, _ = pipe.encode_prompt(expand_prompt(prompt, registered), device="cpu")
        assert embeds.shape == fresh.shape
        assert float((embeds - fresh).norm() / fresh.norm()) <= 1e-5


def test_resume_across_the_pivot(pivot_and_full_encode_runs: dict[str, Run],
                                 resumed_after_pivot: dict[str, Run]) -> None:
    frozen = read_zero_prior(pivot_and_full_encode_runs["pivot"].step(6))
    run = resumed_after_pivot["resumed_pivot"]
    assert f"pivot at step 6 (stop_step {PIVOT})" in run.output
    resumed = read_zero_prior(run.final)
    assert resumed.training_step == 10 and resumed.extra["pivot_step"] == PIVOT
    assert torch.equal(resumed.placeholders[0].vectors, frozen.placeholders[0].vectors)
    refused = resumed_after_pivot["resumed_other_stop_step"]
    assert (f"froze its placeholder at step {PIVOT}, but this config's placeholder.stop_step resolves to 3"
            in refused.output)
    assert not refused.final.exists()


def test_a_refused_resume_keeps_the_folders_config_yaml(resumed_after_pivot: dict[str, Run]) -> None:
    refused = resumed_after_pivot["resumed_other_stop_step"]
    assert (refused.save_root / "config.yaml").read_text() == "the earlier run's config\n"


def test_a_resume_after_a_killed_save_is_honest(pivot_and_full_encode_runs: dict[str, Run],
                                                resumed_after_pivot: dict[str, Run]) -> None:
    run = resumed_after_pivot["resumed_cut_optimizer"]
    assert f"zero-prior: WARNING: {run.save_root / 'optimizer.pt'} cannot be loaded (it is cut off" in run.output
    final = read_zero_prior(run.final)
    assert final.training_step == 10 and final.extra["optimizer_restarted_at_step"] == 6
    assert not [p.name for p in run.save_root.iterdir() if p.name.endswith(".tmp")]  # the dead save's temporary
    # The vector is still the frozen one (it resumed from the file, not from the optimizer).
    frozen = read_zero_prior(pivot_and_full_encode_runs["pivot"].step(6))
    assert torch.equal(final.placeholders[0].vectors, frozen.placeholders[0].vectors)


def test_prefix_cache_trains_like_the_full_encode(zero_prior_run: Run,
                                                  pivot_and_full_encode_runs: dict[str, Run]) -> None:
    used = json.loads((zero_prior_run.save_root.parent / "probe.json").read_text())["prefix_cache"]
    full = pivot_and_full_encode_runs["full_encode"].save_root.parent / "probe.json"
    assert used["hits"] > 0 and used["misses"] >= 1  # the default run encoded through the cache ...
    assert json.loads(full.read_text())["prefix_cache"] is None  # ... its twin never built one
    cached = read_zero_prior(zero_prior_run.final)
    full = read_zero_prior(pivot_and_full_encode_runs["full_encode"].final)
    difference = cached.placeholders[0].vectors - full.placeholders[0].vectors
    assert float(difference.norm() / full.placeholders[0].vectors.norm()) <= 1e-4
    ours, theirs = load_file(zero_prior_run.final), load_file(pivot_and_full_encode_runs["full_encode"].final)
    for key in ours:
        assert torch.allclose(ours[key].float(), theirs[key].float(), rtol=1e-3, atol=1e-5), key


# --- several processes (torchrun; accelerate on CPU uses gloo) --------------------------------


TWO_RANKS = ("-m", "torch.distributed.run", "--nproc_per_node", "2")
# accelerate's multi-CPU state (gloo); one thread per rank on two cores.
TWO_RANKS_ENV = {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def two_process_runs(aitk_root: Path, workdir: Path, datasets: dict[str, Path],
                     tiny_pipeline_dir: Path) -> dict[str, Run]:
    """Two ranks of ``run.py`` (torchrun, gloo): 4 steps, pivot at 3, each rank drawing its own noise; then
    the step-2 save resumed to step 5 (only rank 0 reads the step from the file).

    ``accelerate launch --cpu`` starts one process; torchrun with
    ``ACCELERATE_USE_CPU`` gives accelerate's multi-CPU state, the CPU stand-in
    for ``accelerate launch --multi_gpu``.
    """
    runs = {}
    for name, steps in (("two_processes", 4), ("two_processes_resumed", 5)):

        def change(process: dict, steps: int = steps) -> None:
            process["type"] = "zero_prior_probe"
            process["placeholder"].update(num_vectors=VECTORS, stop_step=3)
            process["train"].update(disable_sampling=True, steps=steps)

        path, run = write_job(workdir, name, tiny_pipeline_dir, datasets["subject"], change)
        if name == "two_processes_resumed":
            continue_from(runs["two_processes"], run.save_root, runs["two_processes"].step(2))
        # A rank that started at another step would wait in a collective forever: a short timeout.
        output = run_jobs(aitk_root, [path], launcher=TWO_RANKS, env=TWO_RANKS_ENV, timeout=240)
        runs[name] = Run(output, run.save_root)
    return runs


def _rank_records(run: Run) -> list[list[dict]]:
    return [json.loads((run.save_root.parent / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.long
def test_two_processes_keep_the_vector_and_lora_identical_and_save_once(two_process_runs: dict[str, Run]) -> None:
    run = two_process_runs["two_processes"]
    ranks = _rank_records(run)
    assert [s["step"] for s in ranks[0]] == [s["step"] for s in ranks[1]] == [0, 1, 2, 3]
    # The ranks trained on different noise (different losses), yet step with one averaged gradient.
    assert all(a["loss"] != b["loss"] for a, b in zip(*ranks))
    assert all(a["vectors"] == b["vectors"] and a["lora"] == b["lora"] for a, b in zip(*ranks))
    assert len({s["vectors"] for s in ranks[0]}) == 3  # trained on steps 0-2, frozen at the pivot (step 3)
    saved = sorted(p.name for p in run.save_root.glob("*.safetensors"))
    assert saved == [f"{JOB}.safetensors", f"{JOB}_000000002.safetensors"]
    assert read_zero_prior(run.final).extra["pivot_step"] == 3


@pytest.mark.long
def test_two_processes_resume_at_the_same_step(two_process_runs: dict[str, Run]) -> None:
    ranks = _rank_records(two_process_runs["two_processes_resumed"])
    assert [s["step"] for s in ranks[0]] == [s["step"] for s in ranks[1]] == [2, 3, 4]
    assert all(a["vectors"] == b["vectors"] and a["lora"] == b["lora"] for a, b in zip(*ranks))
