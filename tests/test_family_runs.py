"""Z-Image and FLUX.2 [klein] through ai-toolkit's real ``run.py``, on each family's tiny model, on CPU.

The promises of ``test_aitk_run.py`` that depend on the model family, for the
two families whose prompt comes from a Qwen3 encoder (Z-Image: its last hidden
state; FLUX.2 [klein]: layers 9, 18 and 27 of ai-toolkit's own FLUX.2 model,
built from BFL single files): the vector trains and nothing else in the
encoder changes, samples use the current vector, the file records the family
and loads in the family's diffusers pipeline with the training-time
embeddings (and is refused by another family's pipeline), a resume restores the
vector bit-exactly, the toggle off is ai-toolkit's own training, and a prefix
cache the family cannot build is refused before ai-toolkit starts; the pivot
freezes the prompts and drops the encoder. Z-Image resumes through a quantized
encoder.
ai-toolkit builds FLUX.2 at the published sizes; the staged
``zero_prior_testbed`` extension gives its loader the tiny sizes, for the
built-in baseline and zero-prior's subclass alike. Per family, two ``run.py``
starts: the first holds every job, the second resumes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tinytrain
import torch
from aitk_cases import TOKEN
from aitk_jobs import (
    Run,
    assert_resumed_bit_exactly,
    assert_same_lora,
    assert_samples_encode_as,
    assert_vector_trained,
    baseline,
    continue_from,
    resume_to_step_6,
    run_jobs,
    run_written,
    stage_with_probe,
    write_job,
)
from safetensors.torch import load_file

from zero_prior.errors import FormatError
from zero_prior.models.family import ModelFamily
from zero_prior.models.flux2_klein import FLUX2_KLEIN
from zero_prior.models.z_image import Z_IMAGE
from zero_prior.testbed import make_subject_dataset
from zero_prior.weights.format import read_zero_prior
from zero_prior.weights.loader import load_zero_prior
from zero_prior.weights.lora_check import read_lora

VECTORS = 2
FIRST_SPARE_ID = 151669  # Qwen3's tokenizer holds 151669 entries
PIVOT_STEP = 2

pytestmark = pytest.mark.long  # whole families through run.py: the second pass of the test command


@dataclass(frozen=True)
class FamilyRun:
    """What differs between the families this module runs."""

    family: ModelFamily
    model: str  # the conftest fixture giving the family's tiny pipeline folder
    other_model: str  # the fixture of another family's tiny pipeline, which must refuse the file
    encode: dict[str, Any] = field(default_factory=dict)  # encode_prompt's extra arguments for the comparison
    splits_fused_qkv: bool = False  # diffusers splits each stored fused-qkv LoRA (BFL names) into q, k and v
    quantized_resume: bool = False  # resume with the text encoder in qfloat8


CASES = [
    FamilyRun(Z_IMAGE, "tiny_zimage_dir", "tiny_pipeline_dir", {"do_classifier_free_guidance": False},
              quantized_resume=True),
    FamilyRun(FLUX2_KLEIN, "tiny_flux2_dir", "tiny_zimage_dir", splits_fused_qkv=True),
]


@pytest.fixture(scope="module", params=CASES, ids=[case.family.name for case in CASES])
def case(request: pytest.FixtureRequest) -> FamilyRun:
    return request.param


@pytest.fixture(scope="module")
def model(case: FamilyRun, request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(case.model)


@pytest.fixture(scope="module")
def workdir(case: FamilyRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(case.family.name)


@pytest.fixture(scope="module")
def aitk_root(ai_toolkit_checkout: Path, workdir: Path) -> Path:
    return stage_with_probe(ai_toolkit_checkout, workdir / "staged")


@pytest.fixture(scope="module")
def dataset(workdir: Path) -> Path:
    return make_subject_dataset(workdir / "subject", num_images=4, size=64, seed=0)[0].parent


@pytest.fixture(scope="module")
def runs(case: FamilyRun, aitk_root: Path, workdir: Path, dataset: Path, model: Path) -> dict[str, Run]:
    """One ``run.py -r``: the probe run, the pivot, a refused prefix cache, the baseline as ours and as sd_trainer."""

    def zero_prior(process: dict) -> None:
        process["type"] = "zero_prior_probe"
        process["placeholder"]["num_vectors"] = VECTORS

    def pivot(process: dict) -> None:
        process["type"] = "zero_prior_probe"
        process["placeholder"]["stop_step"] = PIVOT_STEP

    def prefix_cache(process: dict) -> None:
        process["placeholder"]["prefix_cache"] = True

    jobs = {"zero_prior": zero_prior, "pivot": pivot, "prefix_cache": prefix_cache,
            "baseline_ours": baseline("zero_prior_trainer"), "baseline_builtin": baseline("sd_trainer")}
    written = {name: write_job(workdir, name, model, dataset, change, arch=case.family.aitk_arch)
               for name, change in jobs.items()}
    return run_written(aitk_root, written, recover=True)


@pytest.fixture(scope="module")
def resumed(case: FamilyRun, aitk_root: Path, workdir: Path, dataset: Path, model: Path,
            runs: dict[str, Run]) -> Run:
    """The zero-prior run's final save and optimizer state continued to step 6 by the real process type."""
    path, run = write_job(workdir, "resumed", model, dataset, resume_to_step_6(VECTORS, case.quantized_resume),
                          arch=case.family.aitk_arch)
    continue_from(runs["zero_prior"], run.save_root)
    return Run(run_jobs(aitk_root, [path]), run.save_root)


def test_the_vector_trains_and_the_text_encoder_does_not(case: FamilyRun, runs: dict[str, Run]) -> None:
    assert_vector_trained(runs["zero_prior"], case.family.name, FIRST_SPARE_ID, VECTORS, case.family.label)


def test_samples_use_the_current_vector(runs: dict[str, Run]) -> None:
    probe = json.loads((runs["zero_prior"].save_root.parent / "probe.json").read_text())
    samples = probe["samples"]
    assert [s["step"] for s in samples] == [2, 4]
    assert all(s["prompt"] == f"a photo of {TOKEN}" and s["equal"] for s in samples)
    assert samples[0]["vector_norm"] != samples[1]["vector_norm"]


def test_the_file_loads_in_the_family_pipeline_with_the_trained_rows(case: FamilyRun, runs: dict[str, Run],
                                                                     model: Path) -> None:
    final = runs["zero_prior"].final
    pipe = tinytrain.load_pipe(model)
    result = load_zero_prior(pipe, final)
    stored = read_zero_prior(final).placeholders[0]
    [registered] = result.tokens
    assert list(registered.token_ids) == stored.token_ids
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[stored.token_ids].detach(), stored.vectors)
    converted, stored_count = len(read_lora(pipe, final, final.name)[0]), len(load_file(final))
    assert result.lora_tensors == converted > 0
    assert converted > stored_count if case.splits_fused_qkv else converted == stored_count
    assert pipe.get_list_adapters() == {"transformer": [result.adapter_name]}
    # The last sample's prompt embeddings in training equal the diffusers pipeline's with the file loaded.
    assert_samples_encode_as(runs["zero_prior"], pipe, result, case.family.label, **case.encode)


def test_another_family_refuses_the_file(case: FamilyRun, runs: dict[str, Run],
                                         request: pytest.FixtureRequest) -> None:
    pipe = tinytrain.load_pipe(request.getfixturevalue(case.other_model))
    vocabulary = len(pipe.tokenizer)
    with pytest.raises(FormatError, match=f"trained for {re.escape(case.family.label)}"):
        load_zero_prior(pipe, runs["zero_prior"].final)
    assert len(pipe.tokenizer) == vocabulary and not pipe.get_list_adapters()


def test_resume_restores_the_vector_bit_exactly(case: FamilyRun, runs: dict[str, Run], resumed: Run) -> None:
    assert_resumed_bit_exactly(runs["zero_prior"], resumed, VECTORS)
    assert ("Quantizing Text Encoder" in resumed.output) == case.quantized_resume


def test_the_pivot_freezes_the_prompts_and_drops_the_encoder(runs: dict[str, Run]) -> None:
    run = runs["pivot"]
    probe = json.loads((run.save_root.parent / "probe.json").read_text())
    assert probe["pivot"]["step"] == PIVOT_STEP and probe["pivot"]["text_encoder_now"] == "FakeTextEncoder"
    assert probe["pivot"]["old_text_encoder_devices"] == ["meta"]  # its memory is released
    assert not any(probe["pivot"]["vector_requires_grad"]) and probe["pivot"]["sample_prompts_cached"]
    assert probe["text_encoder_changed"] == []
    at_pivot, final = read_zero_prior(run.step(PIVOT_STEP)), read_zero_prior(run.final)
    assert torch.equal(at_pivot.placeholders[0].vectors, final.placeholders[0].vectors)
    assert final.training_step == 4


def test_prefix_cache_true_is_refused_before_ai_toolkit_writes(case: FamilyRun, runs: dict[str, Run]) -> None:
    run = runs["prefix_cache"]
    assert ("Error running job: config.process[0].placeholder.prefix_cache: true cannot be used with "
            f"{case.family.label}") in run.output
    assert not run.save_root.parent.exists()


def test_baseline_through_this_process_equals_sd_trainer(runs: dict[str, Run]) -> None:
    assert_same_lora(runs["baseline_ours"], runs["baseline_builtin"])
