"""The tiny FLUX.2 [klein]'s BFL-layout files hold the diffusers test bed's weights, and ai-toolkit computes with
them what diffusers computes.

ai-toolkit loads ``flux-2-klein-base-4b.safetensors`` and ``ae.safetensors``
into its own ``Flux2`` and ``AutoEncoder`` (testbed/flux2_bfl.py writes them).
diffusers' converters must map both files back to the diffusers folder's
tensors exactly; with ai-toolkit present, its classes built from
``aitk_sizes.json`` load them strictly and match the diffusers forward passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel
from diffusers.loaders.single_file_utils import (
    convert_flux2_transformer_checkpoint_to_diffusers,
    convert_ldm_vae_checkpoint,
)
from safetensors.torch import load_file

from zero_prior.errors import FormatError
from zero_prior.testbed import cached_tiny_pipeline
from zero_prior.testbed.flux2_bfl import (
    SIZES_FILE,
    TRANSFORMER_FILE,
    VAE_FILE,
    aitk_sizes,
    transformer_to_bfl,
    vae_to_bfl,
)


@pytest.fixture(scope="module")
def flux2_dir() -> Path:
    return cached_tiny_pipeline(seed=0, family="flux2_klein")


def _diffusers_state(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(next(folder.glob("*.safetensors")))


def _assert_same(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(expected)
    unequal = [key for key in expected if not torch.equal(got[key], expected[key])]
    assert not unequal, f"tensors differ after the round trip: {unequal}"


def _vae_from_bfl(bfl: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """diffusers' LDM VAE converter on a BFL autoencoder state: BFL keeps the quant convs in its encoder and
    decoder (LDM at the top) and the batch norm, which the LDM converter does not know, at the top."""
    ldm = {key.replace("encoder.quant_conv.", "quant_conv.").replace("decoder.post_quant_conv.", "post_quant_conv."):
           value for key, value in bfl.items() if not key.startswith("bn.")}
    return {**convert_ldm_vae_checkpoint(ldm, config), **{k: v for k, v in bfl.items() if k.startswith("bn.")}}


def _wider_transformer() -> Flux2Transformer2DModel:
    """More blocks and the guidance embedder than the test bed has, so every mapping rule is exercised."""
    torch.manual_seed(5)
    return Flux2Transformer2DModel(
        patch_size=1, in_channels=128, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=48, timestep_guidance_channels=256, mlp_ratio=3.0,
        axes_dims_rope=(4, 4, 4, 4), rope_theta=2000, guidance_embeds=True,
    )


def _wider_vae() -> AutoencoderKLFlux2:
    """Levels of different widths (shortcut convs, decoder levels that only fit in reversed order), two resnets."""
    torch.manual_seed(6)
    return AutoencoderKLFlux2(
        latent_channels=8, block_out_channels=(32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=2, norm_num_groups=32, sample_size=32,
    )


def test_diffusers_converter_gives_back_the_transformer_exactly(flux2_dir: Path) -> None:
    expected = _diffusers_state(flux2_dir / "transformer")
    _assert_same(convert_flux2_transformer_checkpoint_to_diffusers(load_file(flux2_dir / TRANSFORMER_FILE)), expected)
    wider = _wider_transformer().state_dict()
    _assert_same(convert_flux2_transformer_checkpoint_to_diffusers(transformer_to_bfl(wider)), wider)


def test_diffusers_converter_gives_back_the_vae_exactly(flux2_dir: Path) -> None:
    config = json.loads((flux2_dir / "vae" / "config.json").read_text())
    expected = _diffusers_state(flux2_dir / "vae")
    assert not torch.equal(expected["bn.running_var"], torch.ones_like(expected["bn.running_var"]))
    _assert_same(_vae_from_bfl(load_file(flux2_dir / VAE_FILE), config), expected)
    vae = _wider_vae()
    wider = vae.state_dict()
    _assert_same(_vae_from_bfl(vae_to_bfl(wider, len(vae.config.up_block_types)), dict(vae.config)), wider)


def test_a_vae_ai_toolkit_cannot_hold_is_refused_naming_the_setting(flux2_dir: Path) -> None:
    transformer = json.loads((flux2_dir / "transformer" / "config.json").read_text())
    vae = json.loads((flux2_dir / "vae" / "config.json").read_text())
    with pytest.raises(FormatError, match="norm_num_groups"):
        aitk_sizes(transformer, {**vae, "norm_num_groups": 16})
    with pytest.raises(FormatError, match="ch_mult"):
        aitk_sizes(transformer, {**vae, "block_out_channels": [32, 48, 48, 48]})
    with pytest.raises(FormatError, match="conv_shortcut_typo"):
        vae_to_bfl({"encoder.down_blocks.0.resnets.0.conv_shortcut_typo.weight": torch.zeros(1)}, 4)


@pytest.fixture(scope="module")
def sizes(flux2_dir: Path) -> dict[str, dict]:
    return json.loads((flux2_dir / SIZES_FILE).read_text())


def test_ai_toolkit_flux2_loads_the_file_strictly_and_predicts_what_diffusers_predicts(
        aitk_flux2_src: ModuleType, flux2_dir: Path, sizes: dict) -> None:
    model, sampling = aitk_flux2_src.model, aitk_flux2_src.sampling
    with torch.device("meta"):
        bfl = model.Flux2(model.Klein4BParams(**sizes["Klein4BParams"]))
    bfl.load_state_dict(load_file(flux2_dir / TRANSFORMER_FILE), assign=True, strict=True)
    reference = Flux2Transformer2DModel.from_pretrained(flux2_dir / "transformer").eval()

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 128, 2, 3, generator=generator)  # not square: a height/width mix-up shows
    text = torch.randn(2, 5, sizes["Klein4BParams"]["context_in_dim"], generator=generator)
    t = torch.rand(2, generator=generator)
    # ai-toolkit's packing (get_noise_prediction) and diffusers' (Flux2KleinPipeline) of the same inputs.
    ctx, ctx_ids = sampling.batched_prc_txt(text)
    x, x_ids = sampling.batched_prc_img(latents)
    img_ids, txt_ids = Flux2KleinPipeline._prepare_latent_ids(latents), Flux2KleinPipeline._prepare_text_ids(text)
    assert torch.equal(x_ids, img_ids) and torch.equal(ctx_ids, txt_ids)
    with torch.no_grad():
        ours = bfl(x=x, x_ids=x_ids, timesteps=t, ctx=ctx, ctx_ids=ctx_ids, guidance=torch.ones(2))
        theirs = reference(hidden_states=Flux2KleinPipeline._pack_latents(latents), encoder_hidden_states=text,
                           timestep=t, img_ids=img_ids, txt_ids=txt_ids, guidance=None, return_dict=False)[0]
    ours = torch.cat(sampling.scatter_ids(ours, x_ids)).squeeze(2)
    theirs = Flux2KleinPipeline._unpack_latents_with_ids(theirs, img_ids)
    difference = (ours - theirs).abs().max().item()
    print(f"\nai-toolkit Flux2 vs diffusers Flux2Transformer2DModel, fp32: max abs difference {difference:.3g} "
          f"(outputs up to {theirs.abs().max().item():.3g})")
    assert ours.shape == latents.shape
    assert difference <= 1e-5


def test_ai_toolkit_autoencoder_loads_the_file_strictly_and_codes_what_diffusers_codes(
        aitk_flux2_src: ModuleType, flux2_dir: Path, sizes: dict) -> None:
    autoencoder = aitk_flux2_src.autoencoder
    with torch.device("meta"):
        bfl = autoencoder.AutoEncoder(autoencoder.AutoEncoderParams(**sizes["AutoEncoderParams"]))
    bfl.load_state_dict(load_file(flux2_dir / VAE_FILE), assign=True, strict=True)
    vae = AutoencoderKLFlux2.from_pretrained(flux2_dir / "vae").eval()
    pipe = Flux2KleinPipeline(scheduler=None, vae=vae, text_encoder=None, tokenizer=None, transformer=None)

    image = 2 * torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1)) - 1
    with torch.no_grad():
        # ai-toolkit's encode: the mean, patchified 2x2, batch-normed; the pipeline's image latents the same way.
        ours, theirs = bfl.encode(image), pipe._encode_vae_image(image, generator=None)
        encoded = (ours - theirs).abs().max().item()
        # and back: the pipeline's decode path (undo the batch norm, unpatchify, decode)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
        unpatched = pipe._unpatchify_latents(theirs * std + vae.bn.running_mean.view(1, -1, 1, 1))
        decoded = (bfl.decode(theirs) - vae.decode(unpatched, return_dict=False)[0]).abs().max().item()
    print(f"\nai-toolkit AutoEncoder vs diffusers AutoencoderKLFlux2, fp32: max abs difference {encoded:.3g} "
          f"encoding (latents up to {theirs.abs().max().item():.3g}), {decoded:.3g} decoding")
    assert ours.shape == (1, 128, 2, 3)
    assert encoded <= 1e-5 and decoded <= 1e-5
