"""The tiny Z-Image: the real architecture at CPU size (``ZImagePipeline`` folder layout).

The classes ai-toolkit and diffusers load (diffusers ``ZImageTransformer2DModel``
and ``AutoencoderKL`` with an 8x VAE and 16 latent channels; transformers
``Qwen3ForCausalLM`` with the real 151936-row, tied embedding and
``rms_norm_eps`` 1e-6) and the Qwen3 tokenizer rebuilt from the real ranks
(151669 entries, so a new token lands on id 151669, a spare row). The
transformer's head width (32 wide, 2 heads of 16) equals the sum of its rope
axes, as the model requires; its caption width is the text encoder's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import ConfigError
from ._cache import folder_digests
from .qwen3 import tiny_qwen3_config
from .qwen_image import copy_tokenizer
from .tokenizer import qwen3_tokenizer_dir

# Bump when the configs or files below change, so cached builds are redone.
BUILD_VERSION = "1"
TEXT_HIDDEN = 64
# ai-toolkit's ZImageModel scheduler settings (z_image.py scheduler_config).
SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "use_dynamic_shifting": False, "shift": 3.0}




def _model_index() -> dict:
    from diffusers import __version__ as diffusers_version

    return {
        "_class_name": "ZImagePipeline",
        "_diffusers_version": diffusers_version,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3ForCausalLM"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "ZImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def build(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a random-weight, real-architecture Z-Image pipeline folder and return its path.

    >>> import tempfile
    >>> from diffusers import ZImagePipeline
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     pipe = ZImagePipeline.from_pretrained(build(Path(tmp) / "tiny_zimage", seed=0))
    ...     pipe("a photo", height=64, width=64, num_inference_steps=2).images[0].size
    (64, 64)
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; choose a new folder for the tiny pipeline or delete this one")

    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel
    from transformers import Qwen3ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = ZImageTransformer2DModel(
            all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
            n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=TEXT_HIDDEN, rope_theta=256.0,
            t_scale=1000.0, axes_dims=[8, 4, 4], axes_lens=[1024, 64, 64],
        )
        with torch.no_grad():  # created with torch.empty: give them defined values so builds are reproducible
            transformer.x_pad_token.fill_(1.0)
            transformer.cap_pad_token.fill_(1.0)
        transformer.save_pretrained(out / "transformer", safe_serialization=True)

        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(32, 32, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1, norm_num_groups=32, sample_size=64, scaling_factor=0.3611, shift_factor=0.1159,
        )
        vae.save_pretrained(out / "vae", safe_serialization=True)

        torch.manual_seed(seed + 2)
        text_config = tiny_qwen3_config(TEXT_HIDDEN, layers=2, heads=4, kv_heads=2)
        Qwen3ForCausalLM(text_config).eval().save_pretrained(out / "text_encoder")

    FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG).save_pretrained(out / "scheduler")
    copy_tokenizer(qwen3_tokenizer_dir(), out / "tokenizer")
    (out / "model_index.json").write_text(json.dumps(_model_index(), indent=2) + "\n", encoding="utf-8")
    return out


def cache_inputs() -> dict[str, str]:
    """What this build depends on besides the seed: its version and the tokenizer's file hashes."""
    tokenizer_files = json.dumps(folder_digests(qwen3_tokenizer_dir()), sort_keys=True)
    return {"build_version": BUILD_VERSION, "tokenizer": hashlib.sha256(tokenizer_files.encode()).hexdigest()}
