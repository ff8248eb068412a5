"""Step time and peak GPU memory, baseline vs zero-prior, on the full-size Z-Image architecture.

Random-init weights with Z-Image's real configs (the 6B S3-DiT transformer,
diffusers' ``ZImageTransformer2DModel`` defaults; the Qwen3-4B text encoder,
bf16) and the real Qwen3 tokenizer; a rank-16 LoRA on every attention and
feed-forward projection of the transformer, gradient checkpointing on. The
arms are ``gpu_step.run_arm``'s: baseline (embeddings computed once),
zero-prior through the pipeline's ``encode_prompt`` every step (Z-Image's
prefix cache is refused, so this is what zero-prior trains with), and after
the pivot.

``--size tiny`` runs the identical code on the CPU test-bed sizes.

    python benchmarks/gpu_zimage.py --tokenizer DIR [--size full] [--resolutions 512 1024] [--out gpu_zimage.json]
"""

from __future__ import annotations

from typing import Any

import torch
from gpu_step import benchmark_main

SIZES: dict[str, dict[str, Any]] = {
    "full": {  # diffusers' defaults are Z-Image's transformer/config.json; Qwen3-4B's config.json
        "transformer": {},
        "text": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 40960},
    },
    "tiny": {  # testbed/z_image.py's sizes
        "transformer": {"dim": 32, "n_layers": 2, "n_refiner_layers": 1, "n_heads": 2, "n_kv_heads": 2,
                        "cap_feat_dim": 64, "axes_dims": [8, 4, 4], "axes_lens": [1024, 64, 64]},
        "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 1024},
    },
}
ARMS = ("baseline", "zero_prior_full_encode", "zero_prior_pivot")
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "w1", "w2", "w3"]
PROMPT = "a professional photo of {} standing in a sunlit garden"


def qwen3_config(text: dict[str, Any]) -> Any:
    """Qwen3-4B's config.json (vocabulary, norms, rope) at the widths and depth of ``text`` (a ``SIZES`` entry's)."""
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                       bos_token_id=151643, eos_token_id=151645, **text)


def build(size_name: str, tokenizer_dir: str, device: str, dtype: torch.dtype) -> Any:
    """Construct both models directly on ``device`` in ``dtype`` with their default random init."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    size = SIZES[size_name]
    config = qwen3_config(size["text"])
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = ZImageTransformer2DModel(**size["transformer"])
            text_encoder = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    with torch.no_grad():  # created with torch.empty
        transformer.x_pad_token.fill_(1.0)
        transformer.cap_pad_token.fill_(1.0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return ZImagePipeline(FlowMatchEulerDiscreteScheduler(), None, text_encoder.eval(), tokenizer, transformer)


def encode_prompt(pipe: Any, prompt: str, device: torch.device) -> list[torch.Tensor]:
    """ZImagePipeline's own encoding: one unpadded tensor per prompt (guidance off, as in training)."""
    embeds, _ = pipe.encode_prompt(prompt, device=device, do_classifier_free_guidance=False)
    return embeds


def flow_loss(pipe: Any, encoded: list[torch.Tensor], resolution: int, generator: torch.Generator) -> torch.Tensor:
    """One flow-matching loss at ``resolution`` px (8x VAE, 16 channels, 2x2 patches), as the pipeline calls it."""
    side = resolution // 8
    device, dtype = pipe.transformer.device, pipe.transformer.dtype
    latents = torch.randn(16, 1, side, side, generator=generator).to(device, dtype)
    noise = torch.randn(latents.shape, generator=generator).to(device, dtype)
    t = torch.rand(1, generator=generator).to(device)
    noisy = (1 - t.to(dtype)) * latents + t.to(dtype) * noise
    [pred] = pipe.transformer([noisy], t, encoded, return_dict=False)[0]
    return torch.nn.functional.mse_loss(pred.float(), (noise - latents).float())


def main() -> None:
    from zero_prior.models import family_named

    benchmark_main(__doc__.splitlines()[0], "folder of the real Qwen3 tokenizer", build, SIZES, LORA_TARGETS, ARMS,
                   "Z-Image", template=PROMPT, family=family_named("zimage"), encode_full=encode_prompt,
                   loss=flow_loss)


if __name__ == "__main__":
    main()
