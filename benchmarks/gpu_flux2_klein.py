"""Step time and peak GPU memory, baseline vs zero-prior, on the full-size FLUX.2 [klein] 4B architecture.

Random-init weights with the published klein 4B configs (diffusers'
``Flux2Transformer2DModel`` at ai-toolkit's ``Klein4BParams``: 5 double and
20 single blocks at width 3072, text input 7680, no guidance embedding; the
Qwen3-4B text encoder, the same as Z-Image's; bf16) and the real Qwen3
tokenizer; a rank-16 LoRA on every linear of the double and single blocks
(ai-toolkit's default for FLUX.2), gradient checkpointing on. The arms are
``gpu_step.run_arm``'s, the prompt through ``Flux2KleinPipeline.encode_prompt``
(512 padded positions, the hidden states of layers 9, 18 and 27 stacked; the
pipeline's encoder call runs all 36 layers and lm_head): baseline (encoded
once), zero-prior encoding every step (FLUX.2 [klein]'s prefix cache is
refused, so this is what zero-prior trains with), and after the pivot.

``--size tiny`` runs the identical code on the CPU test-bed sizes.

    python benchmarks/gpu_flux2_klein.py --tokenizer DIR [--size full] [--resolutions 512 1024] [--out FILE]
"""

from __future__ import annotations

from typing import Any

import torch
from gpu_step import benchmark_main
from gpu_zimage import ARMS, qwen3_config  # the arms of a family whose prefix cache is refused
from gpu_zimage import SIZES as ZIMAGE_SIZES

SIZES: dict[str, dict[str, Any]] = {
    "full": {  # diffusers' klein-4b conversion config (= ai-toolkit's Klein4BParams); Qwen3-4B
        "transformer": {"num_layers": 5, "num_single_layers": 20, "attention_head_dim": 128,
                        "num_attention_heads": 24, "joint_attention_dim": 7680, "axes_dims_rope": (32, 32, 32, 32)},
        "text": ZIMAGE_SIZES["full"]["text"],
    },
    "tiny": {  # testbed/flux2_klein.py's sizes: the 27 layers the pipeline reads, at width 32
        "transformer": {"num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2,
                        "joint_attention_dim": 3 * 32, "axes_dims_rope": (4, 4, 4, 4)},
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 27, "num_attention_heads": 2,
                 "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 1024},
    },
}
# Every linear of the double blocks (attention and both feed-forwards) and of the single blocks (the fused
# input projection and attn.to_out); a double block's attn.to_out is a ModuleList, hence one expression.
LORA_TARGETS = (r".*(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out|to_qkv_mlp_proj)"
                r"|single_transformer_blocks\.\d+\.attn\.to_out|ff(_context)?\.linear_(in|out))")


def build(size_name: str, tokenizer_dir: str, device: str, dtype: torch.dtype) -> Any:
    """Construct both models directly on ``device`` in ``dtype`` with their default random init."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    size = SIZES[size_name]
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = Flux2Transformer2DModel(
                patch_size=1, in_channels=128, timestep_guidance_channels=256, mlp_ratio=3.0, rope_theta=2000,
                eps=1e-6, guidance_embeds=False, **size["transformer"])
            text_encoder = Qwen3ForCausalLM(qwen3_config(size["text"]))
    finally:
        torch.set_default_dtype(default_dtype)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return Flux2KleinPipeline(FlowMatchEulerDiscreteScheduler(), None, text_encoder.eval(), tokenizer, transformer)


def flow_loss(pipe: Any, encoded: tuple[torch.Tensor, torch.Tensor], resolution: int,
              generator: torch.Generator) -> torch.Tensor:
    """One flow-matching loss at ``resolution`` px (8x VAE, 32 channels patchified 2x2 into 128), as the pipeline
    calls the transformer (packed latents, position ids, timestep in [0, 1], no guidance)."""
    embeds, text_ids = encoded
    side = resolution // 16
    device, dtype = pipe.transformer.device, pipe.transformer.dtype
    latents = torch.randn(1, pipe.transformer.config.in_channels, side, side, generator=generator)
    image_ids = pipe._prepare_latent_ids(latents).to(device)
    latents = pipe._pack_latents(latents).to(device, dtype)
    noise = torch.randn(latents.shape, generator=generator).to(device, dtype)
    t = torch.rand(1, generator=generator).to(device)
    noisy = (1 - t.to(dtype)) * latents + t.to(dtype) * noise
    pred = pipe.transformer(hidden_states=noisy, timestep=t, guidance=None, encoder_hidden_states=embeds,
                            txt_ids=text_ids, img_ids=image_ids, return_dict=False)[0]
    return torch.nn.functional.mse_loss(pred.float(), (noise - latents).float())


def main() -> None:
    from zero_prior.models import family_named

    # run_arm's default encode is the pipeline's encode_prompt: Flux2KleinPipeline's (embeds, text ids).
    benchmark_main(__doc__.splitlines()[0], "folder of the real Qwen3 tokenizer", build, SIZES, LORA_TARGETS, ARMS,
                   "FLUX.2 [klein] 4B", family=family_named("flux2_klein"), loss=flow_loss)


if __name__ == "__main__":
    main()
