"""The tiny Qwen-Image: the real architecture at CPU size, for tests, benchmarks and the demo.

Every component is the real class (diffusers ``QwenImageTransformer2DModel``,
``AutoencoderKLQwenImage``, ``FlowMatchEulerDiscreteScheduler``; transformers
``Qwen2_5_VLForConditionalGeneration``; the real Qwen2.5-VL tokenizer) with a
small config and seeded random weights, saved in the diffusers folder layout,
so that code under test takes exactly the loading path it takes with the 20 B
model. The facts placeholder training relies on are kept: a 152064-row,
untied embedding (new token ids land on existing rows), rms_norm_eps 1e-6,
mrope, an 8x VAE with 16 latent channels and 2x2 patches (32-pixel buckets).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from ..errors import ConfigError
from ._cache import MANIFEST_NAME, folder_digests
from .tokenizer import qwen_tokenizer_dir

# Bump when the configs or files below change, so cached builds are redone.
BUILD_VERSION = "1"
HEAD_DIM = 16  # text-encoder head dim; mrope_section below must sum to HEAD_DIM // 2
MROPE_SECTION = [2, 3, 3]  # the real [16, 24, 24] scaled to a 16-dim head
VOCAB_ROWS = 152064  # the real embedding height; the tokenizer uses 151665 of them

# Qwen-Image's own scheduler settings (dynamic, exponential time shift).
SCHEDULER_CONFIG = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}


def _text_encoder_config(hidden: int):
    """Qwen2.5-VL config: real vocabulary and token ids, two 64-wide layers, a 2-block vision tower."""
    from transformers import Qwen2_5_VLConfig

    heads = hidden // HEAD_DIM
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": VOCAB_ROWS,
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "num_key_value_heads": heads // 2 if heads % 2 == 0 else heads,
            "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "mrope_section": MROPE_SECTION, "rope_theta": 1000000.0},
            "bos_token_id": 151643,
            "eos_token_id": 151645,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": hidden,
            "fullatt_block_indexes": [1],
        },
        tie_word_embeddings=False,
        dtype="float32",
    )


def _model_index() -> dict:
    """``model_index.json`` naming the class of every component folder."""
    from diffusers import __version__ as diffusers_version

    return {
        "_class_name": "QwenImagePipeline",
        "_diffusers_version": diffusers_version,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "QwenImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLQwenImage"],
    }


def copy_tokenizer(source: Path, destination: Path) -> None:
    """Copy a cached tokenizer folder's files (not its cache manifest) into a pipeline folder."""
    destination.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name != MANIFEST_NAME:
            shutil.copyfile(path, destination / path.name)


def build(out_dir: str | Path, seed: int = 0, text_hidden_size: int = 64) -> Path:
    """Write a random-weight, real-architecture Qwen-Image pipeline folder and return its path.

    Each component is initialised from its own ``seed``-derived generator
    state, so the same seed gives byte-identical safetensors; the caller's
    global RNG state is left untouched. Weights are fp32.

    >>> import tempfile
    >>> from diffusers import QwenImagePipeline
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     pipe = QwenImagePipeline.from_pretrained(build(Path(tmp) / "tiny_qwen", seed=0))
    ...     pipe("a photo", height=64, width=64, num_inference_steps=2).images[0].size
    (64, 64)
    """
    if text_hidden_size <= 0 or text_hidden_size % HEAD_DIM:
        raise ConfigError(
            f"text_hidden_size={text_hidden_size} must be a positive multiple of {HEAD_DIM} "
            f"(the tiny text encoder uses {HEAD_DIM}-wide attention heads)"
        )
    out = new_folder(out_dir)
    write_components(out, seed, text_hidden_size)
    (out / "model_index.json").write_text(json.dumps(_model_index(), indent=2) + "\n", encoding="utf-8")
    return out


def new_folder(out_dir: str | Path) -> Path:
    """``out_dir``, created; a folder that already holds files is refused."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; choose a new folder for the tiny pipeline or delete this one")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_components(out: Path, seed: int, text_hidden_size: int = 64, vae_base_dim: int = 16,
                     **transformer_options: bool) -> None:
    """Qwen-Image's transformer, VAE, text encoder, scheduler and tokenizer into ``out`` (shared with Edit-Plus).

    ``vae_base_dim`` is the VAE's first width; ``transformer_options`` go to
    ``QwenImageTransformer2DModel`` (Edit-2511's ``zero_cond_t``).
    """
    import torch
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=64,  # 16 latent channels x 2x2 patch
            out_channels=16,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=4,
            joint_attention_dim=text_hidden_size,
            guidance_embeds=False,
            axes_dims_rope=(4, 6, 6),  # even, sums to attention_head_dim
            **transformer_options,
        )
        transformer.save_pretrained(out / "transformer", safe_serialization=True)

        torch.manual_seed(seed + 1)
        vae = AutoencoderKLQwenImage(
            base_dim=vae_base_dim,
            z_dim=16,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],  # 8x spatial, like the real VAE
        )
        vae.save_pretrained(out / "vae", safe_serialization=True)

        torch.manual_seed(seed + 2)
        text_encoder = Qwen2_5_VLForConditionalGeneration(_text_encoder_config(text_hidden_size)).eval()
        text_encoder.save_pretrained(out / "text_encoder")

    FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG).save_pretrained(out / "scheduler")
    copy_tokenizer(qwen_tokenizer_dir(), out / "tokenizer")


def cache_inputs() -> dict[str, str]:
    """What this build depends on besides the seed: its version and the tokenizer's file hashes."""
    tokenizer_files = json.dumps(folder_digests(qwen_tokenizer_dir()), sort_keys=True)
    return {"build_version": BUILD_VERSION,
            "tokenizer": hashlib.sha256(tokenizer_files.encode()).hexdigest()}
