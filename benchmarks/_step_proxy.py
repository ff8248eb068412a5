"""``step_overhead.py --proxy``: the Qwen-Image step at its real depths and token counts, at 1/``scale`` width.

Both models keep their real layer counts (text encoder 28 layers, transformer
60 blocks), the real tokenizer and 34-token template, a ~100-token caption
with the placeholder near its start and 1024 image tokens (512 px); every
width is divided by the same ``scale`` (heads keep the real query/key-value
ratio, 7:1, and the rotary sections their proportions). The arms are
``gpu_step.run_arm``'s (the GPU benchmark's own code), alternated round by
round in one process: baseline (cached embeddings), zero-prior with and
without the prefix cache, and after the pivot. Steps are timed in CPU time
of this process on one thread (``time.process_time``): on a shared machine
wall time swings by a third from one arm to the next with other processes'
load, and several threads wait on each other at every operation.

Dividing every width by ``scale`` divides the projections and MLPs by
``scale``² but attention (sequence² x width) only by ``scale``, and the
transformer attends over 1124 positions where the encoder attends over ~140,
so the proxy's transformer carries relatively more work than the real one:
``flops.py`` prints both encoder/transformer FLOP ratios, and the floor the
same FLOP model predicts for the proxy next to the measured ratio (measured
extra / predicted extra is how much less efficiently the encoder's small
pass runs than the transformer per FLOP).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from flops import FAMILIES, PLACEHOLDER_AT, Encoder, Family, Transformer
from gpu_step import ARMS, LORA_TARGETS, SIZES, build, run_arm
from peft import LoraConfig

from zero_prior.testbed import qwen_tokenizer_dir

# 100 tokens with "<zwx>" (or "a person", for the baseline) at token 3, as ai-toolkit captions start with the trigger.
CAPTION = ("a photo of {}, smiling warmly and standing in a sunlit garden full of tall sunflowers, red tulips and "
           "white roses, wearing a light blue linen shirt, dark jeans and brown leather boots, with a small wooden "
           "bench, a stone fountain and an old brick wall covered in green ivy behind, soft golden evening light, "
           "gentle shadows on the grass, a clear sky with a few thin clouds, shot on a full-frame camera with a "
           "fifty millimetre lens, shallow depth of field, natural colours, high detail")
GOALS = {"zero_prior": 1.10, "zero_prior_pivot": 1.00}  # the GPU goals at 512 px (issue 16)


def proxy_size(scale: int) -> dict[str, dict[str, Any]]:
    """Qwen-Image's configs (``gpu_step.SIZES["full"]``) with every width divided by ``scale`` (16 or 32)."""
    full = SIZES["full"]
    head = 32  # 3072 / scale = (96 / scale) heads of 32, rotary axes 1/4 of the real (16, 56, 56)
    return {
        "transformer": {**full["transformer"], "attention_head_dim": head,
                        "num_attention_heads": 3072 // scale // head, "joint_attention_dim": 3584 // scale,
                        "axes_dims_rope": (4, 14, 14)},
        "text": {**full["text"], "hidden_size": 3584 // scale, "intermediate_size": 18944 // scale,
                 "num_attention_heads": 7, "num_key_value_heads": 1,
                 "mrope_section": [section * 3584 // scale // 7 // 128 for section in (16, 24, 24)]},
    }


def proxy_family(size: dict[str, dict[str, Any]]) -> Family:
    """``flops.py``'s Qwen-Image with the proxy's widths."""
    text, transformer = size["text"], size["transformer"]
    dim = transformer["attention_head_dim"] * transformer["num_attention_heads"]
    encoder = Encoder(layers=text["num_hidden_layers"], hidden=text["hidden_size"],
                      intermediate=text["intermediate_size"], heads=text["num_attention_heads"],
                      kv_heads=text["num_key_value_heads"],
                      head_dim=text["hidden_size"] // text["num_attention_heads"], vocab=152064)
    full = FAMILIES["qwen_image"]
    return Family("qwen_image proxy", encoder, Transformer("dual", transformer["num_layers"], dim, 4 * dim, 2,
                                                           text["hidden_size"]), full.template_prefix,
                  full.template_suffix, full.drop)


def run(scale: int, rounds: int, steps: int, warmup: int) -> None:
    """Build the proxy, alternate the arms for ``rounds`` rounds, print step times, ratios and the floors."""
    size = proxy_size(scale)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    started = time.perf_counter()
    pipe = build(size, str(qwen_tokenizer_dir()), "cpu", torch.float32)
    pipe.transformer.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    pipe.transformer.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=LORA_TARGETS))
    pipe.transformer.enable_gradient_checkpointing()
    tokens = len(pipe.tokenizer(CAPTION.format("<zwx>")).input_ids)
    print(f"proxy 1/{scale} width: transformer 60 blocks x {size['transformer']['num_attention_heads']} heads x "
          f"{size['transformer']['attention_head_dim']}, text encoder 28 layers x {size['text']['hidden_size']} "
          f"(MLP {size['text']['intermediate_size']}); caption {tokens} tokens + 34-token template (+5 after), "
          f"placeholder at caption token {PLACEHOLDER_AT}; 1024 image tokens (512 px); built in "
          f"{time.perf_counter() - started:.0f} s; steps timed in CPU seconds of this process, 1 thread")
    medians: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for index in range(rounds):
        for arm in (ARMS if index % 2 == 0 else ARMS[::-1]):
            measured = run_arm(pipe, arm, 512, steps, warmup, template=CAPTION, clock=time.process_time)
            medians[arm].append(measured["median_step_s"])
            pipe.tokenizer = type(pipe.tokenizer).from_pretrained(str(qwen_tokenizer_dir()))
        print(f"round {index + 1}: " + ", ".join(f"{arm} {medians[arm][-1]:.2f} s" for arm in ARMS))
    base = statistics.median(medians["baseline"])
    print(f"median step (CPU s) over {rounds} rounds ({steps} steps each, {warmup} dropped):")
    for arm in ARMS:
        per_round = statistics.median(m / b for m, b in zip(medians[arm], medians["baseline"], strict=True))
        goal = f"   GPU goal at 512 px <= {GOALS[arm]:.2f}" if arm in GOALS else ""
        print(f"  {arm:24s} {statistics.median(medians[arm]):6.2f} s   ratio to the baseline "
              f"{statistics.median(medians[arm]) / base:.3f} (median of per-round {per_round:.3f}){goal}")
    proxy, real = proxy_family(size), FAMILIES["qwen_image"]
    print(f"encoder forward / transformer forward FLOPs at 512 px: proxy {proxy.encoder_share(512):.4f}, real "
          f"{real.encoder_share(512):.4f} (the proxy's is {proxy.encoder_share(512) / real.encoder_share(512):.2f}x "
          "the real one: attention shrinks by the scale, projections by its square)")
    measured = {arm: statistics.median(medians[arm]) / base for arm in ARMS}
    for arm, cached in (("zero_prior", True), ("zero_prior_full_encode", False)):
        predicted = proxy.floor(512, cached)
        print(f"  {arm}: FLOP floor for the proxy {predicted:.4f}, measured {measured[arm]:.3f} (measured extra / "
              f"floor extra {(measured[arm] - 1) / (predicted - 1):.1f}); real Qwen-Image floor "
              f"{real.floor(512, cached):.4f} at 512 px, {real.floor(1024, cached):.4f} at 1024 px")
