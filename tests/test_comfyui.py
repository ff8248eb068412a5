"""The ComfyUI node "Load zero-prior LoRA" against diffusers, in a real ComfyUI checkout.

ComfyUI parses ``sys.argv`` and sets process-wide state when imported, so
``comfyui_probe.py`` runs it in a subprocess once per module: it loads the
node with ComfyUI's own custom-node loader, builds ComfyUI's Qwen-Image text
encoder and diffusion model at the tiny test bed's width with its weights,
runs the node and records what ComfyUI would feed the encoder. Here the same
prompts go through ``load_zero_prior`` and diffusers' ``encode_prompt``: the
token sequences must be equal (placeholders by name: ComfyUI's ids differ),
the input embeddings equal to the bit, the encoder outputs equal to float
rounding, and every LoRA tensor must land on its layer at the asked strength.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lora_files import rewrite, scale_vectors, set_vectors, vectors_of, with_tensors
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tinytrain import load_pipe

from zero_prior import load_zero_prior
from zero_prior.comfyui.checkout import CHECKOUT_FILES
from zero_prior.comfyui.install import install, node_target
from zero_prior.config_examples import example_path
from zero_prior.models import QWEN_IMAGE
from zero_prior.plugin_folder import package_dir
from zero_prior.weights.export import export_weights
from zero_prior.weights.format import METADATA_KEY

pytestmark = pytest.mark.slow

PROBE = Path(__file__).with_name("comfyui_probe.py")
WORKFLOW = "comfyui_qwen_image_api.json"
# name -> (clip, prompt); clip names a chain of nodes in CHAINS (or "stock": ComfyUI's CLIP as loaded)
CASES = {
    "start": ("one", "<zwx> standing in a field"),
    "middle": ("one", "a photo of <zwx> on a beach"),
    "end": ("one", "a photo of <zwx>"),
    "punctuation": ("one", "a dog,<zwx>. (<zwx>) \"<zwx>\"!"),
    "possessive": ("one", "<zwx>'s face"),
    "whitespace": ("one", "a  photo of\n<zwx>  \t at dusk "),
    "multi_vector": ("one", "a photo of <bg2> in the snow"),
    "two_tokens": ("one", "a photo of <zwx> in front of <bg2>"),
    "no_token": ("one", "a photo of a cat"),
    "two_subjects": ("two", "<zwx> and <pq7> on a beach"),
    "zip_package": ("zip", "a photo of <zwx> on a beach"),
    "edit_plus_file": ("edit", "a photo of <zwx> on a beach"),
    "token_strength": ("half", "a photo of <zwx> and <bg2>"),
}
# The same prompts through a bf16 encoder: the inserted rows are rounded as diffusers' bf16 embedding rounds them.
BF16_CASES = {"bf16_middle": ("bf16", CASES["middle"][1]), "bf16_multi_vector": ("bf16", CASES["multi_vector"][1]),
              "bf16_no_token": ("bf16", CASES["no_token"][1])}
# bf16 outputs of two encoder implementations differ by rounding (about 2e-2 at the tiny model's scale of 3),
# with the token as without it.
BF16_COND_TOLERANCE = 5e-2
CHAINS = {
    "one": [("subject.safetensors", 1.0, 1.0)],
    "two": [("subject.safetensors", 1.0, 1.0), ("second.safetensors", 1.0, 1.0)],
    "half": [("subject.safetensors", 0.5, 0.25)],
    "zip": [("subject/weights.zip", 1.0, 1.0)],
    "edit": [("edit_plus.safetensors", 1.0, 1.0)],
    "bf16": [("subject.safetensors", 1.0, 1.0)],
}
# Float rounding between two implementations of the same encoder (fp32); the inputs must be bit-equal.
COND_TOLERANCE = 1e-5


def _second_subject(data: dict) -> None:
    """One placeholder <pq7>: <zwx>'s entry renamed, with another vector."""
    item = data["placeholders"][0]
    item.update(token="<pq7>", token_strings=["<pq7>"])
    set_vectors(item, vectors_of(item).flip(1) * 3)
    data["placeholders"] = [item]


def _wider(data: dict) -> None:
    data["hidden_size"] = 2 * data["hidden_size"]
    for item in data["placeholders"]:
        set_vectors(item, vectors_of(item).repeat(1, 2))


def _loras(folder: Path, subject: Path) -> dict[str, str]:
    """The files the probe's node reads from its ``loras`` folder."""
    folder.mkdir()
    (folder / "subject.safetensors").write_bytes(subject.read_bytes())
    workflow_lora = json.loads(example_path(WORKFLOW).read_text())["4"]["inputs"]["lora_name"]
    (folder / workflow_lora).write_bytes(subject.read_bytes())
    export_weights(subject, folder / "subject", "zip")
    rewrite(subject, folder / "second.safetensors", _second_subject)
    rewrite(subject, folder / "edit_plus.safetensors", lambda d: d.update(family="qwen_image_edit_plus"))
    rewrite(subject, folder / "zimage.safetensors", lambda d: d.update(family="zimage"))
    rewrite(subject, folder / "wide.safetensors", _wider)
    rewrite(subject, folder / "clash.safetensors", lambda d: scale_vectors(d, 2.0))
    with safe_open(str(subject), framework="pt") as handle:
        header = {k: v for k, v in handle.metadata().items() if k != METADATA_KEY}
    save_file(load_file(str(subject)), str(folder / "plain.safetensors"), metadata=header)
    stray = "diffusion_model.transformer_blocks.7.attn.to_q"  # the tiny model has 2 blocks
    with_tensors(subject, folder / "unmapped.safetensors", lambda key, tensor: tensor,
                 {f"{stray}.lora_A.weight": torch.zeros(4, 64), f"{stray}.lora_B.weight": torch.zeros(64, 4)})
    with_tensors(subject, folder / "other_width.safetensors",
                 lambda key, tensor: tensor.repeat(1, 2) if "lora_A" in key else tensor)
    return {"unmapped_file": "unmapped.safetensors", "other_width_file": "other_width.safetensors",
            "plain_file": "plain.safetensors", "zimage_file": "zimage.safetensors", "wide_file": "wide.safetensors",
            "clash_file": "clash.safetensors", "coverage_file": "subject.safetensors"}


@pytest.fixture(scope="module")
def probe(comfyui_checkout, trained, tiny_pipeline_dir, tmp_path_factory) -> dict:
    """What ComfyUI made of every case (``comfyui_probe.py``), its tensors under ``tensors``."""
    work = tmp_path_factory.mktemp("comfyui")
    files = _loras(work / "loras", trained.path)
    # The node is loaded from a copy install in a stand-in checkout (the real one is never written to).
    stand_in = work / "ComfyUI"
    for name in CHECKOUT_FILES:
        (stand_in / name).parent.mkdir(parents=True, exist_ok=True)
        (stand_in / name).write_text("")
    install(stand_in, copy=True)
    lora = load_file(str(trained.path))
    request = {
        "tiny_pipeline": str(tiny_pipeline_dir), "loras": str(work / "loras"),
        "node_package": str(node_target(stand_in)),
        "chains": {name: [{"file": f, "strength_model": m, "strength_token": t} for f, m, t in steps]
                   for name, steps in CHAINS.items()},
        "patched_chain": "half", "base_chain": "one", "chain_dtypes": {"bf16": "bfloat16"},
        "workflow": str(example_path(WORKFLOW)),
        "patched_keys": sorted({key.split("diffusion_model.", 1)[1].rsplit(".lora_", 1)[0] + ".weight"
                                for key in lora}),
        "cases": [{"name": name, "clip": clip, "prompt": prompt}
                  for name, (clip, prompt) in {**CASES, **BF16_CASES}.items()]
        + [{"name": "no_token", "clip": "stock", "prompt": CASES["no_token"][1]},
           {"name": "end", "clip": "stock", "prompt": CASES["end"][1]},
           {"name": "second_token", "clip": "one", "prompt": CASES["two_subjects"][1]}],
        **files,
    }
    (work / "request.json").write_text(json.dumps(request))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package_dir().parent), *sys.path])}
    done = subprocess.run([sys.executable, str(PROBE), str(comfyui_checkout), str(work / "request.json"),
                           str(work / "out")], capture_output=True, text=True, env=env, cwd=work, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((work / "out" / "result.json").read_text())
    result["loras_folder"], result["request_cases"] = str(work / "loras"), request["cases"]
    result["tensors"] = load_file(str(work / "out" / "tensors.safetensors"))
    result["lora"] = lora
    result["base"] = load_file(str(next((tiny_pipeline_dir / "transformer").glob("*.safetensors"))))
    return result


@pytest.fixture(scope="module")
def diffusers_side(trained, tiny_pipeline_dir, probe) -> dict:
    """Token sequences (placeholders by name), input embeddings and prompt embeddings from diffusers."""
    pipes = {"stock": load_pipe(tiny_pipeline_dir), "one": load_pipe(tiny_pipeline_dir)}
    load_zero_prior(pipes["one"], trained.path)
    pipes["two"] = load_pipe(tiny_pipeline_dir)
    load_zero_prior(pipes["two"], trained.path)
    second = Path(probe["loras_folder"]) / "second.safetensors"
    load_zero_prior(pipes["two"], second)
    pipes["zip"] = pipes["edit"] = pipes["one"]
    pipes["bf16"] = load_pipe(tiny_pipeline_dir, torch.bfloat16)
    load_zero_prior(pipes["bf16"], trained.path)
    pipes["half"] = load_pipe(tiny_pipeline_dir)
    load_zero_prior(pipes["half"], trained.path, lora_scale=CHAINS["half"][0][1], token_scale=CHAINS["half"][0][2])
    out = {}
    for key in probe["sequences"]:
        clip, name = key.split(".", 1)
        prompt = next(c["prompt"] for c in probe["request_cases"] if f"{c['clip']}.{c['name']}" == key)
        pipe = pipes[clip]
        ids = pipe.tokenizer(QWEN_IMAGE.wrap_prompt(prompt))["input_ids"]
        first_new = len(pipes["stock"].tokenizer)
        names = pipe.tokenizer.convert_ids_to_tokens(ids)
        with torch.no_grad():
            embeds = pipe.text_encoder.get_input_embeddings()(torch.tensor([ids]))[0].float()
            cond = pipe.encode_prompt(prompt, device="cpu")[0][0].float()
        out[key] = {"sequence": [names[i] if t >= first_new else t for i, t in enumerate(ids)],
                    "input_embeds": embeds, "cond": cond}
    return out


def test_node_is_found_by_comfyuis_own_loader(probe):
    assert probe["loaded"] is True
    assert probe["display_name"] == "Load zero-prior LoRA"
    required = probe["input_types"]["required"]
    assert list(required) == ["model", "clip", "lora_name", "strength_model", "strength_token"]
    assert [required[k][0] for k in ("model", "clip", "strength_model", "strength_token")] == [
        "MODEL", "CLIP", "FLOAT", "FLOAT"]
    assert {"subject.safetensors", "subject/weights.zip"} <= set(required["lora_name"][0])
    assert probe["return_types"] == ["MODEL", "CLIP"]
    assert probe["tokenizer_length"] == 151669  # ComfyUI's bundled tokenizer: ids differ from training's


@pytest.mark.parametrize("case", sorted(CASES))
def test_prompt_encodes_as_in_diffusers(probe, diffusers_side, case):
    key = f"{CASES[case][0]}.{case}"
    ours = diffusers_side[key]
    assert probe["sequences"][key] == ours["sequence"]
    comfy_embeds, comfy_cond = probe["tensors"][f"{key}.input_embeds"], probe["tensors"][f"{key}.cond"]
    assert torch.equal(comfy_embeds, ours["input_embeds"])
    assert comfy_cond.shape == ours["cond"].shape
    assert (comfy_cond - ours["cond"]).abs().max().item() <= COND_TOLERANCE


@pytest.mark.parametrize("case", sorted(BF16_CASES))
def test_bf16_encoder_gets_the_rows_diffusers_has(probe, diffusers_side, case):
    key = f"bf16.{case}"
    ours = diffusers_side[key]
    assert probe["sequences"][key] == ours["sequence"]
    assert torch.equal(probe["tensors"][f"{key}.input_embeds"], ours["input_embeds"])
    assert (probe["tensors"][f"{key}.cond"] - ours["cond"]).abs().max().item() <= BF16_COND_TOLERANCE


def test_stock_clip_is_unchanged(probe, diffusers_side):
    """The node's input CLIP still reads <zwx> as text; a prompt without the token is what stock ComfyUI gives."""
    stock_end = probe["sequences"]["stock.end"]
    assert all(isinstance(t, int) for t in stock_end) and stock_end == diffusers_side["stock.end"]["sequence"]
    assert probe["sequences"]["stock.no_token"] == probe["sequences"]["one.no_token"]
    assert torch.equal(probe["tensors"]["stock.no_token.cond"], probe["tensors"]["one.no_token.cond"])
    # the first node's CLIP did not learn the second node's token
    assert "<pq7>" not in probe["sequences"]["one.second_token"]
    assert "<pq7>" in probe["sequences"]["two.two_subjects"]


def test_every_lora_tensor_maps_and_applies_at_the_strength(probe):
    coverage = probe["coverage"]
    assert coverage["left"] == [] and coverage["mapped"] == coverage["total"] == len(probe["lora"])
    assert coverage["patched_layers"] == len(probe["lora"]) // 2
    strength = CHAINS["half"][0][1]
    worst = 0.0
    for key in sorted({k.split("diffusion_model.", 1)[1].rsplit(".lora_", 1)[0] for k in probe["lora"]}):
        up = probe["lora"][f"diffusion_model.{key}.lora_B.weight"].float()
        down = probe["lora"][f"diffusion_model.{key}.lora_A.weight"].float()
        expected = probe["base"][f"{key}.weight"].float() + strength * up @ down
        worst = max(worst, (probe["tensors"][f"patched.{key}.weight"] - expected).abs().max().item())
    assert worst <= 1e-6


def test_errors_name_the_file_and_the_fix(probe):
    errors = probe["errors"]
    assert "plain.safetensors has no zero-prior metadata" in errors["plain"]
    assert "LoraLoaderModelOnly" in errors["plain"]
    assert "was trained for Z-Image" in errors["family"] and "Qwen-Image-Edit-Plus" in errors["family"]
    assert "hidden size 128 but this CLIP's text encoder has 64" in errors["hidden"]
    assert "this CLIP's tokenizer is SD1Tokenizer" in errors["not_qwen_clip"]
    assert "this MODEL is QwenImageTEModel; load Qwen-Image's diffusion model" in errors["not_qwen_model"]
    assert "2 of 18 LoRA tensors match no layer of this Qwen-Image MODEL" in errors["unmapped"]
    assert "is 64x128 but this MODEL's layer is 64x64; the file was trained for another base" in errors["other_width"]
    assert "placeholder '<zwx>' is already loaded on this CLIP" in errors["clash"]
    assert "already loaded on this CLIP" in errors["strength"]
    assert errors["again"] is None  # the same file and strength twice: the token is reused


def test_example_workflow_passes_comfyuis_validation(probe):
    """The API-format example is what ComfyUI's server accepts: every node known, every input given and typed."""
    workflow = json.loads(example_path(WORKFLOW).read_text())
    report = probe["workflow"]
    assert report["valid"] is True, report
    assert report["node_errors"] == {}
    node = next(n for n in workflow.values() if n["class_type"] == "LoadZeroPriorLora")
    assert set(node["inputs"]) == set(probe["input_types"]["required"])
    encoders = [n for n in workflow.values() if n["class_type"] == "CLIPTextEncode"]
    assert encoders and all(n["inputs"]["clip"] == [key, 1] for n in encoders
                            for key, value in workflow.items() if value is node)
    assert "<zwx>" in encoders[0]["inputs"]["text"]
