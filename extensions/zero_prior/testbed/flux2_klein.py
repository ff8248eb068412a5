"""The tiny FLUX.2 [klein]: the real architecture at CPU size (``Flux2KleinPipeline`` folder layout).

The classes diffusers loads (``Flux2Transformer2DModel`` without guidance
embedding, as klein has none; ``AutoencoderKLFlux2`` with 32 latent channels
patchified 2x2 into the transformer's 128 input channels and its batch-norm
statistics; transformers ``Qwen3ForCausalLM`` with the real 151936-row, tied
embedding) and the Qwen3 tokenizer rebuilt from the real ranks (151669
entries, so a new token lands on id 151669, a spare row). The pipeline stacks
the encoder's hidden states after layers 9, 18 and 27, so the tiny encoder
keeps 27 decoder layers (at width 32) and the transformer's text input is
three times that width; its head width (16) equals the sum of its four rope axes.
The folder also holds the same transformer and VAE in BFL's layout, the files
ai-toolkit loads, and the ai-toolkit sizes that build them (``flux2_bfl``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import ConfigError
from ._cache import folder_digests
from .flux2_bfl import write_bfl_files
from .qwen3 import tiny_qwen3_config
from .qwen_image import copy_tokenizer
from .tokenizer import qwen3_tokenizer_dir

# Bump when the configs or files below change, so cached builds are redone.
BUILD_VERSION = "3"
TEXT_HIDDEN = 32
TEXT_LAYERS = 27  # Flux2KleinPipeline reads hidden_states[27]
STACKED_LAYERS = 3  # hidden states 9, 18, 27 side by side
LATENT_CHANNELS = 32
# diffusers' FLUX.2 [klein] scheduler settings (the published scheduler_config.json, as ai-toolkit's flux2 model).
SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
                    "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}


def _model_index() -> dict:
    from diffusers import __version__ as diffusers_version

    return {
        "_class_name": "Flux2KleinPipeline",
        "_diffusers_version": diffusers_version,
        "is_distilled": False,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3ForCausalLM"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "Flux2Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLFlux2"],
    }


def build(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a random-weight, real-architecture FLUX.2 [klein] pipeline folder and return its path.

    >>> import tempfile
    >>> from diffusers import Flux2KleinPipeline
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     pipe = Flux2KleinPipeline.from_pretrained(build(Path(tmp) / "tiny_flux2_klein", seed=0))
    ...     pipe(prompt="a photo", height=64, width=64, num_inference_steps=2).images[0].size
    (64, 64)
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; choose a new folder for the tiny pipeline or delete this one")

    import torch
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import Qwen3ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = Flux2Transformer2DModel(
            patch_size=1, in_channels=4 * LATENT_CHANNELS, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=STACKED_LAYERS * TEXT_HIDDEN, timestep_guidance_channels=256,
            mlp_ratio=3.0, axes_dims_rope=(4, 4, 4, 4), rope_theta=2000, eps=1e-6, guidance_embeds=False,
        )
        transformer.save_pretrained(out / "transformer", safe_serialization=True)

        torch.manual_seed(seed + 1)
        vae = AutoencoderKLFlux2(
            in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, block_out_channels=(32, 32, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1, norm_num_groups=32, sample_size=64,
        )
        # Latent statistics away from the identity, as the real VAE's, so every path must apply them the same way.
        with torch.no_grad():
            vae.bn.running_mean.copy_(0.1 * torch.randn_like(vae.bn.running_mean))
            vae.bn.running_var.copy_(0.5 + torch.rand_like(vae.bn.running_var))
        vae.save_pretrained(out / "vae", safe_serialization=True)

        torch.manual_seed(seed + 2)
        text_config = tiny_qwen3_config(TEXT_HIDDEN, layers=TEXT_LAYERS, heads=2, kv_heads=1)
        Qwen3ForCausalLM(text_config).eval().save_pretrained(out / "text_encoder")

    write_bfl_files(out)
    FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG).save_pretrained(out / "scheduler")
    copy_tokenizer(qwen3_tokenizer_dir(), out / "tokenizer")
    # ai-toolkit reads the encoder and its tokenizer from one folder (as the hub's Qwen/Qwen3-4B holds both).
    copy_tokenizer(qwen3_tokenizer_dir(), out / "text_encoder")
    (out / "model_index.json").write_text(json.dumps(_model_index(), indent=2) + "\n", encoding="utf-8")
    return out


def cache_inputs() -> dict[str, str]:
    """What this build depends on besides the seed: its version and the tokenizer's file hashes."""
    tokenizer_files = json.dumps(folder_digests(qwen3_tokenizer_dir()), sort_keys=True)
    return {"build_version": BUILD_VERSION, "tokenizer": hashlib.sha256(tokenizer_files.encode()).hexdigest()}
