"""Step time and peak GPU memory, baseline vs zero-prior, on the full-size Qwen-Image architecture.

Random-init weights with Qwen-Image's real configs (20B transformer, 7B
Qwen2.5-VL text encoder, bf16) and the real tokenizer; the same LoRA
(rank 16 on every attention and MLP projection of the transformer, gradient
checkpointing on). Per resolution the arms run back to back:

- baseline: prompt embeddings computed once without gradient (what
  ai-toolkit does with a semantic trigger word and cached embeddings);
- zero_prior: the placeholder is spliced in and the text encoder runs
  forward and backward every step from the first placeholder on, the prefix
  before it coming from ``PrefixCache`` (``zero_prior_trainer``'s default);
- zero_prior_full_encode: the same through ``pipe.encode_prompt``, the whole
  prompt and the unused lm_head every step (``prefix_cache: false``);
- zero_prior_pivot: after ``stop_step``: the vector frozen, the prompt
  encoded once with it, the step otherwise the baseline's (the text encoder's
  weights stay resident here; ``gpu_24gb.py`` measures what unloading frees).

Reports the median step time after warm-up, the ratios to the baseline, and
peak memory.
``--size tiny`` runs the identical code on the CPU test-bed sizes, to check
the script before spending GPU time.

    python benchmarks/gpu_step.py --tokenizer DIR [--size full] [--resolutions 512 1024]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

# Qwen-Image's transformer/config.json and text_encoder/config.json (text part).
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "transformer": {"num_layers": 60, "attention_head_dim": 128, "num_attention_heads": 24,
                        "joint_attention_dim": 3584, "axes_dims_rope": (16, 56, 56)},
        "text": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                 "num_attention_heads": 28, "num_key_value_heads": 4, "mrope_section": [16, 24, 24]},
    },
    "tiny": {
        "transformer": {"num_layers": 2, "attention_head_dim": 16, "num_attention_heads": 4,
                        "joint_attention_dim": 64, "axes_dims_rope": (4, 6, 6)},
        "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "mrope_section": [2, 3, 3]},
    },
}
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
                "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2"]
PROMPT = "a professional photo of {} standing in a sunlit garden"


def text_encoder_config(size: dict[str, Any]) -> Any:
    """The layout of Qwen-Image's text_encoder/config.json, so any transformers version parses it."""
    from transformers import Qwen2_5_VLConfig

    text = size["text"]
    return Qwen2_5_VLConfig.from_dict({
        "model_type": "qwen2_5_vl", "vocab_size": 152064, "hidden_size": text["hidden_size"],
        "intermediate_size": text["intermediate_size"], "num_hidden_layers": text["num_hidden_layers"],
        "num_attention_heads": text["num_attention_heads"], "num_key_value_heads": text["num_key_value_heads"],
        "hidden_act": "silu", "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": text["mrope_section"]}, "tie_word_embeddings": False,
        "bos_token_id": 151643, "eos_token_id": 151645,
        "vision_config": {"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
                          "out_hidden_size": text["hidden_size"], "fullatt_block_indexes": [0]},
    })


def build(size_name: str | dict[str, Any], tokenizer_dir: str, device: str, dtype: torch.dtype) -> Any:
    """Construct both models directly on ``device`` in ``dtype`` with their default random init.

    ``size_name`` names one of ``SIZES`` or is a dict laid out like them (the CPU proxies of the other benchmarks).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer

    size = SIZES[size_name] if isinstance(size_name, str) else size_name
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # 20B + 7B parameters built straight in bf16: 54 GB, not 108
    try:
        with torch.device(device):
            transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16,
                                                      guidance_embeds=False, **size["transformer"])
            text_encoder = Qwen2_5_VLForConditionalGeneration(text_encoder_config(size))
    finally:
        torch.set_default_dtype(default_dtype)
    text_encoder.model.visual = None  # Qwen-Image never uses the vision tower (ai-toolkit drops it too)
    tokenizer = Qwen2Tokenizer.from_pretrained(tokenizer_dir)
    return QwenImagePipeline(FlowMatchEulerDiscreteScheduler(), None, text_encoder.eval(), tokenizer, transformer)


def flow_loss(pipe: Any, encoded: tuple[torch.Tensor, torch.Tensor | None], resolution: int,
              generator: torch.Generator) -> torch.Tensor:
    """One flow-matching loss at ``resolution`` px (8x VAE, 2x2 patches -> (res/16)^2 image tokens)."""
    embeds, mask = encoded
    side = resolution // 16
    device, dtype = pipe.transformer.device, pipe.transformer.dtype
    latents = torch.randn(1, side * side, 64, generator=generator).to(device, dtype)
    noise = torch.randn(latents.shape, generator=generator).to(device, dtype)
    t = torch.rand(1, generator=generator).to(device)
    noisy = (1 - t.to(dtype)) * latents + t.to(dtype) * noise
    pred = pipe.transformer(hidden_states=noisy, timestep=t, encoder_hidden_states=embeds,
                            encoder_hidden_states_mask=mask, img_shapes=[[(1, side, side)]], return_dict=False)[0]
    return torch.nn.functional.mse_loss(pred.float(), (noise - latents).float())


ARMS = ("baseline", "zero_prior", "zero_prior_full_encode", "zero_prior_pivot")


def encode_prompt(pipe: Any, prompt: str, device: torch.device) -> Any:
    """The pipeline's own prompt encoding (what ai-toolkit calls without the prefix cache)."""
    return pipe.encode_prompt(prompt, device=device)


def run_arm(pipe: Any, arm: str, resolution: int, steps: int, warmup: int, template: str = PROMPT,
            family: Any = None, encode_full: Callable[[Any, str, torch.device], Any] = encode_prompt,
            loss: Callable[[Any, Any, int, torch.Generator], torch.Tensor] = flow_loss,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Time ``steps`` optimizer steps of one arm; returns median step seconds and peak memory.

    ``template`` is the caption, ``{}`` the subject ("a person" for the baseline, the placeholder otherwise).
    ``family`` (default Qwen-Image), ``encode_full`` and ``loss`` make the same arms run another family
    (``gpu_zimage.py``). ``clock`` times the steps: wall time here; the CPU proxy on a shared machine passes
    ``time.process_time`` (one thread), which other processes' load does not inflate.
    """
    from zero_prior.models import DEFAULT_FAMILY
    from zero_prior.placeholder.config import PlaceholderConfig
    from zero_prior.placeholder.prepare import add_placeholders
    from zero_prior.training.prefix_cache import PrefixCache

    family = family or DEFAULT_FAMILY

    device = pipe.transformer.device
    lora = [p for p in pipe.transformer.parameters() if p.requires_grad]
    groups = [{"params": lora, "weight_decay": 0.01}]
    placeholders = []
    prompt = template.format("a person")
    if arm.startswith("zero_prior"):
        placeholders = add_placeholders(pipe.text_encoder, pipe.tokenizer, [PlaceholderConfig()], family=family)
        groups.append({"params": [p.vectors for p in placeholders], "weight_decay": 0.0, "lr": 5e-4})
        prompt = template.format("<zwx>")
    if arm == "zero_prior":
        cache = PrefixCache.from_pipeline(pipe, placeholders)

        def encode(prompt: str, device: torch.device) -> Any:
            return cache.encode(prompt, device=device)
    elif arm == "zero_prior_full_encode":
        def encode(prompt: str, device: torch.device) -> Any:
            return encode_full(pipe, prompt, device)
    else:  # baseline and after the pivot: encoded once, no gradient
        for placeholder in placeholders:
            placeholder.vectors.requires_grad_(False)
        with torch.no_grad():
            cached = encode_full(pipe, prompt, device)

        def encode(prompt: str, device: torch.device) -> Any:
            return cached
    optimizer = torch.optim.AdamW(groups, lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = clock()
        optimizer.zero_grad(set_to_none=True)
        loss(pipe, encode(prompt, device=device), resolution, generator).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(clock() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    for placeholder in placeholders:
        placeholder.detach()
    return {"median_step_s": statistics.median(times[warmup:]), "peak_gib": peak, "steps": steps}


def benchmark_main(description: str, tokenizer_help: str, build: Callable[..., Any], sizes: dict[str, Any],
                   lora_targets: list[str] | str, arms: tuple[str, ...], label: str, **arm_kwargs: Any) -> None:
    """The command line every full-size step benchmark shares: build, add the LoRA, run ``arms`` per resolution.

    ``lora_targets`` is peft's ``target_modules``: module-name suffixes, or one regular expression over the full
    names where a suffix would also match a non-linear module (FLUX.2's ``attn.to_out``).

    ``arm_kwargs`` go to ``run_arm`` (a family's template, encoder and loss); ``label`` names the
    architecture in the log and, with ``family`` among ``arm_kwargs``, the JSON records that family.
    """
    from peft import LoraConfig

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tokenizer", required=True, help=tokenizer_help)
    parser.add_argument("--size", choices=sorted(sizes), default="full")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    started = time.perf_counter()
    pipe = build(args.size, args.tokenizer, device, dtype)
    pipe.transformer.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    pipe.transformer.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=lora_targets))
    pipe.transformer.enable_gradient_checkpointing()
    print(f"built {args.size} {label} on {device} in {time.perf_counter() - started:.0f} s")
    results = []
    for resolution in args.resolutions:
        row: dict[str, Any] = {"resolution": resolution}
        for arm in arms:
            row[arm] = run_arm(pipe, arm, resolution, args.steps, args.warmup, **arm_kwargs)
            # a fresh tokenizer for the next arm's placeholder
            pipe.tokenizer = type(pipe.tokenizer).from_pretrained(args.tokenizer)
        base = row["baseline"]
        row["step_ratios"] = {arm: row[arm]["median_step_s"] / base["median_step_s"] for arm in arms[1:]}
        row["peak_ratios"] = {arm: row[arm]["peak_gib"] / base["peak_gib"] for arm in arms[1:]}
        results.append(row)
        print(f"{resolution} px: " + " | ".join(
            f"{arm} {row[arm]['median_step_s']:.3f} s/step {row[arm]['peak_gib']:.1f} GiB" for arm in arms))
        print(f"{resolution} px ratios to the baseline: " + ", ".join(
            f"{arm} step {row['step_ratios'][arm]:.3f} peak {row['peak_ratios'][arm]:.3f}" for arm in arms[1:]))
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.out:
        family = {"family": arm_kwargs["family"].name} if "family" in arm_kwargs else {}
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", **family,
                       "size": args.size, "results": results}, handle, indent=2)


def main() -> None:
    benchmark_main(__doc__.splitlines()[0], "folder of the real Qwen2.5-VL tokenizer", build, SIZES, LORA_TARGETS,
                   ARMS, "models")


if __name__ == "__main__":
    main()
