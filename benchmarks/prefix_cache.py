"""Text-encoder time and activation memory per step: PrefixCache against diffusers' encode_prompt.

Both arms run forward + backward to the placeholder vectors on the tiny
Qwen-Image (fp32, CPU unless CUDA is present), alternating per round, with
the prefix cache warm (every caption seen once before timing, as from the
second epoch on). Memory is the bytes autograd saves for backward (counted
once per storage through ``saved_tensors_hooks``): a device-independent
measure of activation memory, not an allocator peak. On CUDA the allocator
peak (``max_memory_allocated``) is reported as well.

    python benchmarks/prefix_cache.py [--steps 50] [--rounds 3] [--batch 1]

``--fingerprint``: the per-call cost of the ``"version"`` fingerprint at the
real encoder's tensor count (Qwen2.5-VL 7B with its 32-block vision tower,
as ``QwenImagePipeline`` loads it, built on the meta device: no memory),
against walking the module tree on every call as it did before.

    python benchmarks/prefix_cache.py --fingerprint
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import QwenImagePipeline  # noqa: E402

from zero_prior.placeholder.config import PlaceholderConfig  # noqa: E402
from zero_prior.placeholder.prepare import add_placeholders  # noqa: E402
from zero_prior.testbed import cached_tiny_pipeline  # noqa: E402
from zero_prior.training.prefix_cache import PrefixCache  # noqa: E402

CAPTIONS = [  # the batch-2 arm of "full, no lm_head" pads; only its timing is meant
    "a photo of <zwx>, smiling, standing in a sunlit meadow with tall grass and wildflowers",
    "a close-up portrait of <zwx> wearing a red scarf, soft studio lighting",
    "<zwx> sitting on a wooden bench in a park in autumn, leaves on the ground",
    "a watercolor painting of <zwx> reading a book by the window at dusk",
]


def saved_bytes(step, model: torch.nn.Module) -> int:
    """Bytes autograd keeps for backward during ``step()`` (each storage once, the model's weights excluded)."""
    weights = {t.untyped_storage().data_ptr() for t in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    loss.backward()
    return sum(seen.values())


def full_without_lm_head(pipe, prompts, device) -> torch.Tensor:
    """``_get_qwen_prompt_embeds`` through ``text_encoder.model`` (no logits); equal-length prompts only."""
    texts = [pipe.prompt_template_encode.format(p) for p in prompts]
    tokens = pipe.tokenizer(texts, padding=True, return_tensors="pt").to(device)
    output = pipe.text_encoder.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
    hidden = output.last_hidden_state
    return hidden[:, pipe.prompt_template_encode_start_idx :]


def fingerprint_cost(calls: int = 200) -> None:
    """Milliseconds per ``"version"`` fingerprint on a meta-device full-size encoder, now and with a walk per call."""
    from gpu_step import SIZES, text_encoder_config
    from transformers import Qwen2_5_VLForConditionalGeneration

    from zero_prior.testbed import load_qwen_tokenizer

    config = text_encoder_config(SIZES["full"])
    config.vision_config.update({"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                                 "fullatt_block_indexes": [7, 15, 23, 31]})
    with torch.device("meta"):
        encoder = Qwen2_5_VLForConditionalGeneration(config)
    cache = PrefixCache(encoder, load_qwen_tokenizer(), [151665])

    def walk() -> tuple:  # the fingerprint as computed before: every tensor found by a walk on every call
        tensors = [*encoder.parameters(), *encoder.buffers()]
        return tuple((t.data_ptr(), t._version, tuple(t.shape), t.dtype, str(t.device)) for t in tensors)

    tensors = len([*encoder.parameters(), *encoder.buffers()])
    arms = (("tree walk per call (before)", walk), ("slots found once (now)", cache._compute_fingerprint))
    for name, compute in arms:
        compute()
        start = time.perf_counter()
        for _ in range(calls):
            compute()
        print(f"{name:28s} {(time.perf_counter() - start) / calls * 1e3:7.3f} ms per call, {tensors} tensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--fingerprint", action="store_true", help="only the fingerprint's cost at full size")
    args = parser.parse_args()
    if args.fingerprint:
        fingerprint_cost()
        return

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipe = QwenImagePipeline.from_pretrained(str(cached_tiny_pipeline(seed=0)), torch_dtype=torch.float32).to(device)
    [zwx] = add_placeholders(pipe.text_encoder, pipe.tokenizer, [PlaceholderConfig()])
    cache = PrefixCache.from_pipeline(pipe, [zwx])
    batches = [
        [CAPTIONS[(i + j) % len(CAPTIONS)] for j in range(args.batch)] for i in range(len(CAPTIONS))
    ]
    arms = {
        "full encode_prompt": lambda prompts: pipe.encode_prompt(prompts, device=device)[0],
        # Isolates the lm_head skip (PrefixCache never computes logits) from the prefix reuse.
        "full, no lm_head": lambda prompts: full_without_lm_head(pipe, prompts, device),
        "PrefixCache.encode": lambda prompts: cache.encode(prompts, device=device)[0],
    }
    for prompts in batches:  # warm the cache and the kernels
        for encode in arms.values():
            encode(prompts).sum().backward()

    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, encode in arms.items():
            for step in range(args.steps):
                zwx.vectors.grad = None
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                encode(batches[step % len(batches)]).square().sum().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)

    lengths = [len(pipe.tokenizer(pipe.prompt_template_encode.format(c)).input_ids) for c in CAPTIONS]
    print(f"device {device}, batch {args.batch}, {args.rounds} rounds x {args.steps} steps, "
          f"template+caption tokens {lengths}, prefix cache entries {len(cache)}, stats {cache.stats}")
    base = statistics.median(times["full encode_prompt"])
    for name, encode in arms.items():
        memory = saved_bytes(lambda encode=encode: encode(batches[0]).square().sum(), pipe.text_encoder)
        line = f"{name:20s} median {statistics.median(times[name]) * 1e3:7.2f} ms/step " \
               f"(x{statistics.median(times[name]) / base:.2f})  saved-for-backward {memory / 1024:8.1f} KiB"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            encode(batches[0]).square().sum().backward()
            line += f"  cuda peak {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB"
        print(line)


if __name__ == "__main__":
    main()
