"""Qwen-Image-Edit-Plus through ai-toolkit's real ``run.py`` (arch ``qwen_image_edit_plus``), on the tiny Edit-Plus.

The family-dependent promises of ``test_aitk_run.py`` for an edit model, whose
prompts are encoded with control images through the processor's own
tokenizer: the vector trains on (control, target) pairs and nothing else in
the encoder (vision tower included) changes, the sample uses the current
vector, the file records the family and loads in ``QwenImageEditPlusPipeline``
with the training embeddings, the token is on both of the pipeline's
tokenizers or on neither, a file of another family is refused with nothing
changed, a resume restores the vector bit-exactly, the toggle off is
ai-toolkit's own training, and what the family rules out is refused before
ai-toolkit writes anything. Two ``run.py`` starts: the first holds every job,
the second resumes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tinytrain
import torch
from aitk_cases import EDIT_PLUS_REFUSALS, TOKEN
from aitk_jobs import (
    Run,
    assert_resumed_bit_exactly,
    assert_same_lora,
    assert_vector_trained,
    baseline,
    continue_from,
    last_sample_controls,
    last_sample_embeds,
    max_abs_difference,
    resume_to_step_6,
    run_jobs,
    run_written,
    stage_with_probe,
    write_job,
)
from PIL import Image
from safetensors.torch import load_file

from zero_prior.errors import ConfigError, FormatError, PlaceholderError
from zero_prior.models.qwen_image_edit_plus import QWEN_IMAGE_EDIT_PLUS
from zero_prior.placeholder.vocabulary import expand_prompt, light_copy
from zero_prior.serving.generate import generate_images
from zero_prior.testbed import cached_tiny_pipeline, make_subject_dataset
from zero_prior.testbed.qwen_image_edit_plus import edit_job
from zero_prior.weights import loader as loader_module
from zero_prior.weights.format import read_zero_prior
from zero_prior.weights.loader import load_zero_prior, unload_zero_prior

VECTORS = 2
FIRST_SPARE_ID = 151665  # Qwen2.5-VL's tokenizer (both of the pipeline's) holds 151665 entries
PROMPT = f"a photo of {TOKEN}"

pytestmark = pytest.mark.long  # a whole family through run.py: the second pass of the test command


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edit_plus")


@pytest.fixture(scope="module")
def tiny_edit_dir() -> Path:
    return cached_tiny_pipeline(seed=0, family=QWEN_IMAGE_EDIT_PLUS.name)


@pytest.fixture(scope="module")
def aitk_root(ai_toolkit_checkout: Path, workdir: Path) -> Path:
    return stage_with_probe(ai_toolkit_checkout, workdir / "staged")


@pytest.fixture(scope="module")
def dataset(workdir: Path) -> tuple[Path, Path]:
    """The subject images and, under the same names, their control images."""
    images = make_subject_dataset(workdir / "subject", num_images=4, size=64, seed=0, control_dir=workdir / "control")
    return images[0].parent, workdir / "control"


def _write(name: str, workdir: Path, model: Path, dataset: tuple[Path, Path], change) -> tuple[Path, Run]:
    """``write_job`` for an edit job: the subject images with their control images."""
    images, control = dataset

    def edit(process: dict) -> None:
        edit_job(process, str(control))
        change(process)

    return write_job(workdir, name, model, images, edit)


@pytest.fixture(scope="module")
def runs(aitk_root: Path, workdir: Path, dataset: tuple[Path, Path], tiny_edit_dir: Path) -> dict[str, Run]:
    """One ``run.py -r``: the zero-prior probe run, every refusal, the baseline as ours and as sd_trainer."""

    def zero_prior(process: dict) -> None:
        process["type"] = "zero_prior_probe"
        process["placeholder"]["num_vectors"] = VECTORS
        process["sample"]["sample_every"] = 4  # one sample, after the last step: each costs ~15 s on a CPU

    jobs = {"zero_prior": zero_prior, **{name: change for name, change, _ in EDIT_PLUS_REFUSALS},
            "baseline_ours": baseline("zero_prior_trainer"), "baseline_builtin": baseline("sd_trainer")}
    written = {name: _write(name, workdir, tiny_edit_dir, dataset, change) for name, change in jobs.items()}
    return run_written(aitk_root, written, recover=True)


@pytest.fixture(scope="module")
def resumed(aitk_root: Path, workdir: Path, dataset: tuple[Path, Path], tiny_edit_dir: Path,
            runs: dict[str, Run]) -> Run:
    """The zero-prior run's final save and optimizer state continued to step 6 by the real process type."""
    path, run = _write("resumed", workdir, tiny_edit_dir, dataset, resume_to_step_6(VECTORS))
    continue_from(runs["zero_prior"], run.save_root)
    return Run(run_jobs(aitk_root, [path]), run.save_root)


@pytest.fixture(scope="module")
def loaded(runs: dict[str, Run], tiny_edit_dir: Path):
    """A tiny ``QwenImageEditPlusPipeline`` with the zero-prior run's final file loaded, and the load's result."""
    pipe = tinytrain.load_pipe(tiny_edit_dir)
    return pipe, load_zero_prior(pipe, runs["zero_prior"].final)


def _encoder_ids(pipe, prompt: str) -> list[int]:
    """The ids ``encode_prompt`` hands the text encoder for ``prompt`` with one control image."""
    seen: list[torch.Tensor] = []
    handle = pipe.text_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"]), with_kwargs=True)
    try:
        with torch.no_grad():
            pipe.encode_prompt(prompt, image=[Image.new("RGB", (384, 384), (200, 120, 40))], device="cpu")
    finally:
        handle.remove()
    return seen[0][0].tolist()


def test_the_vector_trains_and_the_text_encoder_does_not(runs: dict[str, Run], tiny_edit_dir: Path) -> None:
    probe = assert_vector_trained(runs["zero_prior"], QWEN_IMAGE_EDIT_PLUS.name, FIRST_SPARE_ID, VECTORS,
                                  QWEN_IMAGE_EDIT_PLUS.label)
    # Every tensor of the encoder, the vision tower that reads the control images included, is unchanged.
    saved = load_file(tiny_edit_dir / "text_encoder" / "model.safetensors")
    assert any("visual" in name for name in saved) and probe["text_encoder_tensors"] == len(saved)


def test_the_sample_uses_the_current_vector_and_its_control_image(runs: dict[str, Run]) -> None:
    run = runs["zero_prior"]
    [sample] = json.loads((run.save_root.parent / "probe.json").read_text())["samples"]
    assert (sample["step"], sample["prompt"], sample["equal"]) == (4, PROMPT, True)
    final = read_zero_prior(run.final).placeholders[0].vectors
    assert sample["vector_norm"] == pytest.approx(float(final.norm()), rel=1e-6)
    [controls] = last_sample_controls(run).values()
    assert [tuple(image.shape[-2:]) for image in controls] == [(384, 384)]  # resized for the vision tower


def test_the_file_loads_in_edit_plus_pipeline_with_the_training_embeddings(runs: dict[str, Run], loaded) -> None:
    pipe, result = loaded
    final = runs["zero_prior"].final
    stored = read_zero_prior(final).placeholders[0]
    [registered] = result.tokens
    assert list(registered.token_ids) == stored.token_ids
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[stored.token_ids].detach(), stored.vectors)
    assert result.lora_tensors == len(load_file(final)) > 0
    # The token is on the tokenizer the pipeline encodes with (its processor's) as well as on pipe.tokenizer.
    for tokenizer in (pipe.tokenizer, pipe.processor.tokenizer):
        assert tokenizer.convert_tokens_to_ids([TOKEN, f"{TOKEN[:-1]}_1>"]) == stored.token_ids
    # The last sample's prompt embeddings in training equal the pipeline's, for the same control image.
    trained, controls = last_sample_embeds(runs["zero_prior"]), last_sample_controls(runs["zero_prior"])
    assert list(trained) == [PROMPT]
    with torch.no_grad():
        fresh, _ = pipe.encode_prompt(expand_prompt(PROMPT, result.tokens), image=controls[PROMPT], device="cpu")
    difference = max_abs_difference(trained[PROMPT], fresh)
    print(f"Qwen-Image-Edit-Plus: max abs difference, training vs QwenImageEditPlusPipeline embeddings at "
          f"{PROMPT!r}: {difference:.3g}")
    assert difference <= 1e-6


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a NaN latent would only show as a cast warning
def test_generate_images_edits_a_control_image_with_the_token(loaded) -> None:
    pipe, _ = loaded
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ConfigError, match="Qwen-Image-Edit-Plus edits an image: pass the control image"):
        generate_images(pipe, [PROMPT], steps=2, height=64, width=64)
    [image] = generate_images(pipe, [PROMPT], steps=2, height=64, width=64,
                              image=Image.new("RGB", (64, 64), (200, 120, 40)))
    assert image.size == (64, 64)
    ids = _encoder_ids(pipe, PROMPT)
    assert ids.count(FIRST_SPARE_ID) == ids.count(FIRST_SPARE_ID + 1) == 1


def test_a_qwen_image_pipeline_refuses_the_edit_plus_file(runs: dict[str, Run], tiny_pipeline_dir: Path) -> None:
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    vocabulary = len(pipe.tokenizer)
    with pytest.raises(FormatError, match="trained for Qwen-Image-Edit-Plus, but this is a Qwen-Image pipeline"):
        load_zero_prior(pipe, runs["zero_prior"].final)
    assert len(pipe.tokenizer) == vocabulary and not pipe.get_list_adapters()


@pytest.mark.slow
def test_an_edit_plus_pipeline_refuses_a_qwen_image_file_with_both_tokenizers_unchanged(
    trained, tiny_edit_dir: Path
) -> None:
    pipe = tinytrain.load_pipe(tiny_edit_dir)
    before = [len(pipe.tokenizer), len(pipe.processor.tokenizer)]
    with pytest.raises(FormatError, match="trained for Qwen-Image, but this is a Qwen-Image-Edit-Plus pipeline"):
        load_zero_prior(pipe, trained.path)
    assert [len(pipe.tokenizer), len(pipe.processor.tokenizer)] == before and not pipe.get_list_adapters()


@pytest.mark.slow
def test_the_token_goes_on_both_tokenizers_or_on_neither(runs: dict[str, Run], tiny_edit_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = tinytrain.load_pipe(tiny_edit_dir)
    assert pipe.processor.tokenizer is not pipe.tokenizer
    # Registered on pipe.tokenizer alone, the token would never reach the encoder: the processor splits it.
    original, pipe.tokenizer = pipe.tokenizer, light_copy(pipe.tokenizer)
    pipe.tokenizer.add_tokens([TOKEN])
    assert FIRST_SPARE_ID not in _encoder_ids(pipe, PROMPT)
    pipe.tokenizer = original
    # A processor tokenizer that disagrees (an extra entry) is refused before anything changes.
    pipe.processor.tokenizer.add_tokens(["<other>"])
    lengths = [len(pipe.tokenizer), len(pipe.processor.tokenizer)]
    with pytest.raises(PlaceholderError, match=r"the pipeline's tokenizers hold \[151665, 151666\] entries"):
        load_zero_prior(pipe, runs["zero_prior"].final)
    assert [len(pipe.tokenizer), len(pipe.processor.tokenizer)] == lengths and not pipe.get_list_adapters()
    # A load that fails inside its fence (after registering) takes the token off both again.
    pipe.processor.tokenizer = light_copy(pipe.tokenizer)

    def fail(*args, **kwargs):
        raise RuntimeError("install_expansion failed")

    with monkeypatch.context() as patch:
        patch.setattr(loader_module, "install_expansion", fail)
        with pytest.raises(RuntimeError, match="install_expansion failed"):
            load_zero_prior(pipe, runs["zero_prior"].final)
    assert len(pipe.tokenizer) == len(pipe.processor.tokenizer) == FIRST_SPARE_ID and not pipe.get_list_adapters()
    # Loaded, then unloaded: on both, then on neither.
    load_zero_prior(pipe, runs["zero_prior"].final)
    assert len(pipe.tokenizer) == len(pipe.processor.tokenizer) == FIRST_SPARE_ID + VECTORS
    unload_zero_prior(pipe)
    assert len(pipe.tokenizer) == len(pipe.processor.tokenizer) == FIRST_SPARE_ID
    assert TOKEN not in pipe.processor.tokenizer.get_vocab()


def test_resume_restores_the_vector_bit_exactly(runs: dict[str, Run], resumed: Run) -> None:
    assert_resumed_bit_exactly(runs["zero_prior"], resumed, VECTORS)


@pytest.mark.parametrize("name, message", [(r[0], r[2]) for r in EDIT_PLUS_REFUSALS],
                         ids=[r[0] for r in EDIT_PLUS_REFUSALS])
def test_what_edit_plus_rules_out_is_refused_before_ai_toolkit_writes(runs: dict[str, Run], name: str,
                                                                      message: str) -> None:
    run = runs[name]
    assert f"Error running job: {message}" in run.output
    assert not run.save_root.parent.exists()


def test_baseline_through_this_process_equals_sd_trainer(runs: dict[str, Run]) -> None:
    assert_same_lora(runs["baseline_ours"], runs["baseline_builtin"])
