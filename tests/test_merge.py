"""``zero-prior merge`` (``zero_prior.weights.merge``): LoRAs merged exactly, the placeholder kept, clashes refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import tinytrain
import torch
from safetensors.torch import load_file

from zero_prior.cli import main
from zero_prior.errors import FormatError
from zero_prior.weights.format import read_header, read_zero_prior, save_lora_file, vector_sha256
from zero_prior.weights.loader import load_zero_prior
from zero_prior.weights.merge import merge_loras


def _plain_lora(source: Path, target: Path, seed: int, zero_up: bool = False) -> Path:
    """A plain LoRA (no placeholder) with ``source``'s layout and random weights (zero up matrices if asked)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, value in load_file(source).items():
        random = torch.randn(value.shape, generator=generator).to(value.dtype)
        tensors[key] = torch.zeros_like(value) if zero_up and ".lora_B." in key else random
    return save_lora_file(target, tensors)


def _updates(path: Path) -> dict[str, torch.Tensor]:
    """Each module's LoRA update ``up @ down`` (these files have alpha == rank, so scale 1)."""
    tensors = load_file(path)
    return {key[: -len(".lora_A.weight")]: tensors[key.replace("lora_A", "lora_B")].float() @ tensors[key].float()
            for key in tensors if key.endswith(".lora_A.weight")}


def test_the_merged_update_is_the_sum_and_the_placeholder_is_kept(trained, tmp_path: Path) -> None:
    style = _plain_lora(trained.path, tmp_path / "style.safetensors", seed=1)
    merged = tmp_path / "merged.safetensors"
    assert main(["merge", str(trained.path), str(style), "-o", str(merged), "--strength", "1", "--strength",
                 "0.5"]) == 0
    ours, theirs, both = _updates(trained.path), _updates(style), _updates(merged)
    assert both.keys() == ours.keys()
    for module, update in both.items():
        torch.testing.assert_close(update, ours[module] + 0.5 * theirs[module], rtol=1e-4, atol=1e-5)
    kept, original = read_zero_prior(merged), read_zero_prior(trained.path)
    assert [vector_sha256(p.vectors) for p in kept.placeholders] == \
        [vector_sha256(p.vectors) for p in original.placeholders]
    assert kept.extra["merged_from"] == [{"file": trained.path.name, "strength": 1.0},
                                         {"file": "style.safetensors", "strength": 0.5}]


@pytest.mark.slow  # a pipeline load and a forward pass: about 5 s
def test_merged_with_a_zero_update_it_generates_as_the_trained_file(trained, tiny_pipeline_dir: Path,
                                                                     tmp_path: Path) -> None:
    silent = _plain_lora(trained.path, tmp_path / "silent.safetensors", seed=2, zero_up=True)
    merged = merge_loras([silent, trained.path], tmp_path / "merged.safetensors").path
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(pipe, merged)
    output = tinytrain.transformer_output(pipe, trained.embeds)
    torch.testing.assert_close(output, trained.output, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # a pipeline load and a fuse: about 5 s
def test_files_on_different_modules_load_each_at_its_own_strength(trained, tiny_pipeline_dir: Path,
                                                                   tmp_path: Path) -> None:
    # A style LoRA on half of the subject's modules: merged ranks differ per module unless the merge evens them.
    full = load_file(_plain_lora(trained.path, tmp_path / "full_style.safetensors", seed=3))
    half = sorted(key[: -len(".lora_A.weight")] for key in full if key.endswith(".lora_A.weight"))[::2]
    style = save_lora_file(tmp_path / "style.safetensors", {
        key: value for key, value in full.items() if key.rsplit(".lora_", 1)[0] in half})
    merged = merge_loras([trained.path, style], tmp_path / "merged.safetensors", [1.0, 0.5]).path
    ours, theirs = _updates(trained.path), _updates(style)
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    before = {name: module.weight.detach().clone() for name, module in pipe.transformer.named_modules()
              if hasattr(module, "weight") and isinstance(module, torch.nn.Linear)}
    load_zero_prior(pipe, merged)
    pipe.fuse_lora(lora_scale=1.0)
    for module, update in ours.items():
        name = module.split(".", 1)[1]  # the file's prefix (diffusion_model. / transformer.) off
        expected = update + 0.5 * theirs[module] if module in theirs else update
        delta = pipe.transformer.get_submodule(name).weight.detach() - before[name]
        torch.testing.assert_close(delta, expected, rtol=1e-3, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")

def test_two_vectors_for_one_token_are_refused_before_writing(trained, tmp_path: Path) -> None:
    record = read_zero_prior(trained.path)
    moved = [replace(record.placeholders[0], vectors=record.placeholders[0].vectors + 1e-3),
             *record.placeholders[1:]]
    other = save_lora_file(tmp_path / "other_run.safetensors", load_file(trained.path),
                           record=replace(record, placeholders=moved))
    target = tmp_path / "merged.safetensors"
    with pytest.raises(FormatError, match=rf"{trained.path} and {other} hold different vectors for '<zwx>'"):
        merge_loras([trained.path, other], target)
    assert not target.exists()
    assert main(["merge", str(trained.path), str(other), "-o", str(target)]) == 1
    assert not target.exists()


def test_bad_arguments_name_the_fix(trained, tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="at least two"):
        merge_loras([trained.path], tmp_path / "out.safetensors")
    with pytest.raises(FormatError, match="1 strengths for 2 files"):
        merge_loras([trained.path, trained.path], tmp_path / "out.safetensors", [0.5])
    with pytest.raises(FormatError, match="is one of the inputs"):
        merge_loras([trained.path, trained.path], trained.path, overwrite=True)
    assert "zero_prior" in read_header(trained.path)  # the input is untouched
