"""ai-toolkit's diff_output_preservation with the placeholder token, through the real ``run.py``.

ai-toolkit's preservation pass replaces the trigger word (here the token) in
each caption with ``diff_output_preservation_class``, predicts that prompt with
the network off (the prior target) and with it on, and adds their MSE times
``diff_output_preservation_multiplier`` to the loss. The preservation prompt
holds no placeholder, so it must give the LoRA a loss and the vector nothing.

The proof: two 2-step runs from the same seed that differ only in the
multiplier (10 vs 0). On the first step the LoRA's ``lora_B`` is zero, so both
predictions agree and both runs take the same step; on the second the
preservation loss is non-zero. If it gave the vector any gradient, the vectors
after it would differ; they must be equal bit for bit, while the LoRAs differ.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from aitk_cases import TOKEN
from aitk_jobs import Run, run_written, write_job
from safetensors.torch import load_file

from zero_prior.aitk.launch import stage_ai_toolkit
from zero_prior.aitk.step_log import read_step_log
from zero_prior.testbed import make_subject_dataset
from zero_prior.weights.format import read_zero_prior

MULTIPLIERS = {"preserved": 10.0, "unweighted": 0.0}


@pytest.fixture(scope="module")
def dop_runs(ai_toolkit_checkout: Path, tiny_pipeline_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """One ``run.py`` over the two jobs; saves in fp32 so a small LoRA difference is not rounded away."""
    work = tmp_path_factory.mktemp("dop")
    root = stage_ai_toolkit(ai_toolkit_checkout, work / "staged")
    dataset = make_subject_dataset(work / "subject", num_images=2, size=64, seed=0)[0].parent
    written = {}
    for name, multiplier in MULTIPLIERS.items():

        def change(process: dict, multiplier: float = multiplier) -> None:
            process["train"].update(steps=2, disable_sampling=True, diff_output_preservation=True,
                                    diff_output_preservation_class="a striped fish",
                                    diff_output_preservation_multiplier=multiplier)
            process["save"]["dtype"] = "float32"
            process["logging"].update(log_every=1, use_ui_logger=True)

        written[name] = write_job(work, name, tiny_pipeline_dir, dataset, change)
    return run_written(root, written)


def test_preservation_pass_trains_the_lora_and_gives_the_vector_no_gradient(dop_runs: dict[str, Run]) -> None:
    preserved = dop_runs["preserved"]
    logs = {name: read_step_log(run.save_root / "loss_log.db") for name, run in dop_runs.items()}
    # Logged on the second step (ai-toolkit counts from 0 and logs no first step): the LoRA gets a preservation
    # loss once lora_B has moved.
    assert [step for step, _ in logs["preserved"]["loss/preservation"]] == [1]
    assert logs["preserved"]["loss/preservation"][0][1] > 0
    assert all(value == 0 for _, value in logs["unweighted"]["loss/preservation"])

    vectors = {name: read_zero_prior(run.final).placeholders[0].vectors for name, run in dop_runs.items()}
    initial = read_zero_prior(preserved.final).placeholders[0].initial_norms[0]
    assert float(vectors["preserved"].norm()) > 10 * initial  # the vector trained, from the token's captions
    assert torch.equal(vectors["preserved"], vectors["unweighted"])  # and nothing from the preservation pass
    # The vector's gradient norm on each logged step, as the trainer logged it: the same in both runs, not zero.
    key = f"placeholder/{TOKEN}/grad_norm"
    assert logs["preserved"][key] == logs["unweighted"][key] and min(g for _, g in logs["preserved"][key]) > 0

    loras = {name: load_file(run.final) for name, run in dop_runs.items()}
    assert loras["preserved"].keys() == loras["unweighted"].keys()
    changed = [key for key in loras["preserved"] if not torch.equal(loras["preserved"][key], loras["unweighted"][key])]
    assert changed and all(".lora_" in key for key in changed)
