"""FLUX.2 [klein] in diffusers: the placeholder trains through ``Flux2KleinPipeline`` and loads back exactly.

Here the vector trains in-process through the pipeline's own ``encode_prompt``
and transformer on the tiny model (training through ai-toolkit's ``run.py``
is ``test_family_runs.py``). What a
user relies on when loading: the text encoder is untouched, the embeddings at
the token come back as at training time, a file of another family is refused
with nothing changed, and an ai-toolkit FLUX.2 LoRA (BFL key names) lands on
the diffusers transformer with the weights ai-toolkit trained, checked against
ai-toolkit's own FLUX.2 module at the tiny sizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import tinytrain
import torch
from diffusers import Flux2KleinInpaintPipeline
from diffusers.loaders.single_file_utils import convert_flux2_transformer_checkpoint_to_diffusers

from zero_prior.errors import FormatError
from zero_prior.models.flux2_klein import FLUX2_KLEIN
from zero_prior.models.z_image import Z_IMAGE
from zero_prior.placeholder.config import PlaceholderConfig
from zero_prior.placeholder.prepare import add_placeholders
from zero_prior.testbed.flux2_bfl import SIZES_FILE
from zero_prior.weights.export import export_weights
from zero_prior.weights.format import read_zero_prior, save_lora_file, to_record
from zero_prior.weights.loader import load_zero_prior

# A whole family (about 20 s on an idle CPU): the second pass of the test command, as the other families.
pytestmark = [pytest.mark.long, pytest.mark.slow]

PROMPT = "a photo of <zwx> on a beach"
STEPS = 3
TOKENIZER_LENGTH = 151669


def _flow_loss(pipe, prompt: str, generator: torch.Generator) -> torch.Tensor:
    """One flow-matching loss on random 2x2 packed latents, differentiable through ``encode_prompt``."""
    embeds, text_ids = pipe.encode_prompt(prompt, device="cpu")
    latents = torch.randn(1, pipe.transformer.config.in_channels, 2, 2, generator=generator)
    latent_ids = pipe._prepare_latent_ids(latents)
    packed = pipe._pack_latents(latents)
    noise = torch.randn(packed.shape, generator=generator)
    t = torch.rand(1, generator=generator)
    pred = pipe.transformer(hidden_states=(1 - t) * packed + t * noise, encoder_hidden_states=embeds, timestep=t,
                            img_ids=latent_ids, txt_ids=text_ids, guidance=None, return_dict=False)[0]
    return torch.nn.functional.mse_loss(pred, noise - packed)


def _lora_state(transformer: torch.nn.Module, names: list[str], prefix: str, seed: int) -> dict[str, torch.Tensor]:
    """Random rank-4 LoRA tensors (``prefix``-ed peft keys) for the named linear layers of ``transformer``."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name in names:
        weight = transformer.get_submodule(name).weight
        state[f"{prefix}{name}.lora_A.weight"] = 0.1 * torch.randn(4, weight.shape[1], generator=generator)
        state[f"{prefix}{name}.lora_B.weight"] = 0.1 * torch.randn(weight.shape[0], 4, generator=generator)
    return state


@pytest.fixture(scope="module")
def trained(tiny_flux2_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The vector trained for ``STEPS`` AdamW steps, saved with a LoRA and the family; what training saw."""
    pipe = tinytrain.load_pipe(tiny_flux2_dir)
    before = {name: tensor.clone() for name, tensor in pipe.text_encoder.state_dict().items()}
    configs = [PlaceholderConfig()]
    [zwx] = add_placeholders(pipe.text_encoder, pipe.tokenizer, configs, family=FLUX2_KLEIN)
    initial = zwx.vectors.detach().clone()
    optimizer = torch.optim.AdamW([zwx.vectors], lr=1e-2, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    grad_norms = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        _flow_loss(pipe, PROMPT, generator).backward()
        grad_norms.append(zwx.vectors.grad.norm().item())
        optimizer.step()
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(PROMPT, device="cpu")
    linears = ["transformer_blocks.0.attn.to_q", "single_transformer_blocks.0.attn.to_qkv_mlp_proj"]
    lora = _lora_state(pipe.transformer, linears, "transformer.", seed=1)
    record = to_record([zwx], configs, tokenizer_length=TOKENIZER_LENGTH, base_model="tiny", training_step=STEPS,
                       family=FLUX2_KLEIN.name)
    path = save_lora_file(tmp_path_factory.mktemp("flux2") / "zwx.safetensors", lora, {"name": "zwx"}, record)
    unchanged = all(torch.equal(tensor, before[name]) for name, tensor in pipe.text_encoder.state_dict().items()
                    if name in before)
    return {"path": path, "embeds": embeds, "grad_norms": grad_norms, "unchanged": unchanged,
            "moved": (zwx.vectors.detach() - initial).norm().item()}


def test_the_vector_trains_through_the_pipeline_and_nothing_else_in_the_encoder(trained) -> None:
    assert trained["unchanged"]  # every text-encoder tensor bit-identical
    assert all(norm > 0 for norm in trained["grad_norms"]) and trained["moved"] > 0
    print(f"\nFLUX.2 [klein] tiny: vector grad norms {[f'{n:.3g}' for n in trained['grad_norms']]}, "
          f"moved {trained['moved']:.3g}")


def test_the_file_loads_into_flux2_klein_with_the_training_embeddings(trained, tiny_flux2_dir: Path) -> None:
    pipe = tinytrain.load_pipe(tiny_flux2_dir)
    result = load_zero_prior(pipe, trained["path"])
    assert [token.token_ids for token in result.tokens] == [(TOKENIZER_LENGTH,)]  # a spare row, nothing shrunk
    assert pipe.text_encoder.get_input_embeddings().num_embeddings == 151936
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(PROMPT, device="cpu")
    difference = (embeds - trained["embeds"]).abs().max().item()
    print(f"\nFLUX.2 [klein] tiny: max abs difference of the prompt embeddings, loaded vs training: {difference:.3g}")
    assert difference <= 1e-6

    inpaint = Flux2KleinInpaintPipeline(**tinytrain.load_pipe(tiny_flux2_dir).components)
    load_zero_prior(inpaint, trained["path"])
    with torch.no_grad():
        assert torch.equal(inpaint.encode_prompt(PROMPT, device="cpu")[0], embeds)


def test_the_diffusers_export_loads_back_the_same(trained, tiny_flux2_dir: Path, tmp_path: Path) -> None:
    exported = export_weights(trained["path"], tmp_path / "diffusers", "diffusers").output
    pipe, direct = tinytrain.load_pipe(tiny_flux2_dir), tinytrain.load_pipe(tiny_flux2_dir)
    load_zero_prior(pipe, exported)
    load_zero_prior(direct, trained["path"])
    with torch.no_grad():
        assert torch.equal(pipe.encode_prompt(PROMPT, device="cpu")[0], trained["embeds"])
        hidden = torch.linspace(-1, 1, 4 * pipe.transformer.config.in_channels).reshape(1, 4, -1)
        inputs = {"hidden_states": hidden, "encoder_hidden_states": trained["embeds"], "timestep": torch.tensor([0.5]),
                  "img_ids": pipe._prepare_latent_ids(torch.zeros(1, 1, 2, 2)),
                  "txt_ids": pipe._prepare_text_ids(trained["embeds"]), "guidance": None, "return_dict": False}
        assert torch.equal(pipe.transformer(**inputs)[0], direct.transformer(**inputs)[0])


def test_a_flux2_klein_file_is_refused_by_another_family_and_the_other_way(trained, tiny_flux2_dir: Path,
                                                                             tiny_zimage_dir: Path,
                                                                             tmp_path: Path) -> None:
    zimage = tinytrain.load_pipe(tiny_zimage_dir)
    with pytest.raises(FormatError, match=r"was trained for FLUX.2 \[klein\], but this is a Z-Image pipeline"):
        load_zero_prior(zimage, trained["path"])
    assert len(zimage.tokenizer) == TOKENIZER_LENGTH and not zimage.get_list_adapters()

    [zwx] = add_placeholders(zimage.text_encoder, zimage.tokenizer, [PlaceholderConfig()], family=Z_IMAGE)
    record = to_record([zwx], [PlaceholderConfig()], tokenizer_length=TOKENIZER_LENGTH, family=Z_IMAGE.name)
    pipe = tinytrain.load_pipe(tiny_flux2_dir)
    other = save_lora_file(tmp_path / "zimage.safetensors",
                           _lora_state(pipe.transformer, ["transformer_blocks.0.attn.to_q"], "transformer.", 2),
                           {"name": "z"}, record)
    with pytest.raises(FormatError, match=r"was trained for Z-Image, but this is a FLUX.2 \[klein\] pipeline"):
        load_zero_prior(pipe, other)
    assert len(pipe.tokenizer) == TOKENIZER_LENGTH and not pipe.get_list_adapters()


@pytest.fixture(scope="module")
def aitk_flux2(aitk_flux2_src: ModuleType) -> ModuleType:
    """ai-toolkit's own FLUX.2 module (src/model.py: torch and einops only)."""
    return aitk_flux2_src.model


@pytest.fixture(scope="module")
def tiny_params(tiny_flux2_dir: Path) -> dict:
    """ai-toolkit's Klein4BParams values for the tiny test bed (its aitk_sizes.json)."""
    return json.loads((tiny_flux2_dir / SIZES_FILE).read_text())["Klein4BParams"]


def test_an_ai_toolkit_flux2_lora_lands_on_the_diffusers_transformer_exactly(aitk_flux2, tiny_params: dict,
                                                                               tiny_flux2_dir: Path,
                                                                               tmp_path: Path) -> None:
    torch.manual_seed(0)
    bfl = aitk_flux2.Flux2(aitk_flux2.Klein4BParams(**tiny_params))
    base = {key: value.detach().clone() for key, value in bfl.state_dict().items()}
    pipe = tinytrain.load_pipe(tiny_flux2_dir)
    # The tiny test bed is ai-toolkit's architecture: its weights load strictly, shape for shape.
    pipe.transformer.load_state_dict(convert_flux2_transformer_checkpoint_to_diffusers(dict(base)))
    # What ai-toolkit's LoRA wraps by default (network.transformer_only: the double and single blocks).
    blocks = sorted(name for name, module in bfl.named_modules() if isinstance(module, torch.nn.Linear)
                    and name.split(".")[0] in ("double_blocks", "single_blocks"))
    lora = _lora_state(bfl, blocks, "diffusion_model.", seed=3)
    merged = dict(base)
    for name in blocks:
        merged[f"{name}.weight"] = (base[f"{name}.weight"] + lora[f"diffusion_model.{name}.lora_B.weight"]
                                    @ lora[f"diffusion_model.{name}.lora_A.weight"])
    path = save_lora_file(tmp_path / "aitk.safetensors", lora, {"name": "aitk"}, None)
    load_zero_prior(pipe, path)
    pipe.fuse_lora(components=["transformer"])
    pipe.unload_lora_weights()
    expected = convert_flux2_transformer_checkpoint_to_diffusers(dict(merged))
    got = pipe.transformer.state_dict()
    difference = max((expected[key] - got[key]).abs().max().item() for key in expected)
    print(f"\nai-toolkit FLUX.2 LoRA on {len(blocks)} block layers, fused in diffusers vs merged in ai-toolkit's "
          f"weights: max abs difference {difference:.3g}")
    assert difference <= 1e-6


def test_an_ai_toolkit_lora_on_the_final_modulation_is_refused_before_anything_changes(aitk_flux2, trained,
                                                                                       tiny_params: dict,
                                                                                       tiny_flux2_dir: Path,
                                                                                       tmp_path: Path) -> None:
    torch.manual_seed(0)
    bfl = aitk_flux2.Flux2(aitk_flux2.Klein4BParams(**tiny_params))
    base = {key: value.detach().clone() for key, value in bfl.state_dict().items()}
    final = "final_layer.adaLN_modulation.1"
    lora = _lora_state(bfl, ["double_blocks.0.img_attn.qkv", final], "diffusion_model.", 4)
    path = save_lora_file(tmp_path / "all_layers.safetensors", lora, {"name": "all"},
                          read_zero_prior(trained["path"]))
    # Why it is refused: diffusers' own loader applies that layer's LoRA with its shift and scale halves swapped.
    stock = tinytrain.load_pipe(tiny_flux2_dir)
    stock.transformer.load_state_dict(convert_flux2_transformer_checkpoint_to_diffusers(dict(base)))
    stock.load_lora_weights(str(path.parent), weight_name=path.name)
    stock.fuse_lora(components=["transformer"])
    stock.unload_lora_weights()
    merged = {**base, f"{final}.weight": base[f"{final}.weight"] + lora[f"diffusion_model.{final}.lora_B.weight"]
              @ lora[f"diffusion_model.{final}.lora_A.weight"]}
    expected = convert_flux2_transformer_checkpoint_to_diffusers(merged)["norm_out.linear.weight"]
    swapped = (expected - stock.transformer.state_dict()["norm_out.linear.weight"]).abs().max().item()
    print(f"\ndiffusers' stock load of an ai-toolkit LoRA on {final}: max abs weight difference {swapped:.3g}")
    assert swapped > 1e-2  # if diffusers learns to swap the halves, this refusal can go

    pipe = tinytrain.load_pipe(tiny_flux2_dir)
    with pytest.raises(FormatError, match=r"all_layers.safetensors: it holds a LoRA on ai-toolkit's "
                                          r"final_layer.adaLN_modulation.1 \(trained with network.transformer_only"):
        load_zero_prior(pipe, path)
    assert not pipe.get_list_adapters() and len(pipe.tokenizer) == TOKENIZER_LENGTH
    with pytest.raises(FormatError, match="final_layer.adaLN_modulation.1"):  # nor exported with it misread
        export_weights(path, tmp_path / "export", "diffusers")
    assert not (tmp_path / "export").exists()
