"""Loader cost: ``load_zero_prior`` against diffusers' plain ``load_lora_weights``, side by side.

Tiny model (default): trains a 2-step placeholder + LoRA on the tiny test-bed
pipeline, saves it, then alternates the two loaders on fresh pipelines (the
same file each time). ``--proxy``: Qwen-Image's real widths (3072-wide
transformer blocks, the 3584-wide text encoder with its real 152064-row
embedding, bf16, random init) with few layers (``--blocks`` transformer
blocks, default 2, and 1 encoder layer), the real tokenizer and a rank-16
LoRA on every attention and MLP projection of those blocks; there the two loaders alternate on one
pipeline, each load undone (``unload_lora_weights`` / ``unload_zero_prior``,
untimed) before the next. Reports the median time of each, their ratio, and
the median of each round's ratio and difference. The extra work of
``load_zero_prior`` is the metadata read and checks, the token checks (entry
lookups, then the template contexts with the entries added), the shape checks
and the sampled LoRA digest, and the row write; it reads the LoRA once and
hands diffusers the tensors, so diffusers' own read is not repeated.

    python benchmarks/loader_overhead.py [--rounds 21] [--proxy [--blocks 2]]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tinytrain  # noqa: E402  (test-only training helpers)
import torch  # noqa: E402
from gpu_step import LORA_TARGETS, SIZES, build  # noqa: E402  (this folder)

from zero_prior.placeholder.config import PlaceholderConfig  # noqa: E402
from zero_prior.testbed import cached_tiny_pipeline, qwen_tokenizer_dir  # noqa: E402
from zero_prior.weights.loader import load_zero_prior, unload_zero_prior  # noqa: E402


def proxy_size(blocks: int) -> dict:
    """Qwen-Image's widths, ``blocks`` transformer blocks and 1 encoder layer."""
    return {"transformer": {**SIZES["full"]["transformer"], "num_layers": blocks},
            "text": {**SIZES["full"]["text"], "num_hidden_layers": 1}}


def proxy_file(pipe: Any, path: Path) -> Path:
    """A zero-prior file for ``pipe``: a rank-16 LoRA and one placeholder vector; ``pipe`` is left as built."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from zero_prior.placeholder.prepare import add_placeholders
    from zero_prior.placeholder.vocabulary import light_copy
    from zero_prior.weights.format import save_lora_file, to_record

    pipe.transformer.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=LORA_TARGETS))
    lora = {f"diffusion_model.{k}": v.clone() for k, v in get_peft_model_state_dict(pipe.transformer).items()}
    pipe.transformer.unload_lora()
    configs = [PlaceholderConfig()]
    placeholders = add_placeholders(pipe.text_encoder, light_copy(pipe.tokenizer), configs)
    record = to_record(placeholders, configs, tokenizer_length=len(pipe.tokenizer), base_model="proxy")
    for placeholder in placeholders:
        placeholder.detach()
    return save_lora_file(path, lora, {"name": "proxy"}, record)


def time_loaders(loaders: dict[str, Callable[[], None]], undo: dict[str, Callable[[], None]] | None,
                 rounds: int) -> dict[str, list[float]]:
    """Alternate the loaders (order flipped every round); ``undo`` (untimed) puts the pipeline back after each."""
    timings: dict[str, list[float]] = {name: [] for name in loaders}
    for index in range(rounds):
        for name in (list(loaders) if index % 2 == 0 else list(loaders)[::-1]):
            start = time.perf_counter()
            loaders[name]()
            timings[name].append(time.perf_counter() - start)
            if undo:
                undo[name]()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--proxy", action="store_true", help="Qwen-Image's real widths, few layers (about 4 GB)")
    parser.add_argument("--blocks", type=int, default=2, help="--proxy: transformer blocks (0.7 GB each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.proxy:
            pipe = build(proxy_size(args.blocks), str(qwen_tokenizer_dir()), "cpu", torch.bfloat16)
            path = proxy_file(pipe, Path(tmp) / "subject.safetensors")
            loaders = {"load_lora_weights": lambda: pipe.load_lora_weights(str(path.parent), weight_name=path.name),
                       "load_zero_prior": lambda: load_zero_prior(pipe, path)}
            undo = {"load_lora_weights": pipe.unload_lora_weights, "load_zero_prior": lambda: unload_zero_prior(pipe)}
            time_loaders(loaders, undo, 1)  # warm-up: first-call imports and allocations
            label = f"proxy (Qwen-Image widths, {args.blocks} blocks, 1 encoder layer, bf16)"
        else:
            model = cached_tiny_pipeline(seed=0)
            pipe = tinytrain.load_pipe(model)
            configs = [PlaceholderConfig()]
            placeholders, _ = tinytrain.train(pipe, configs, steps=2)
            path = tinytrain.save(pipe, placeholders, configs, Path(tmp) / "subject.safetensors")
            fresh = {}

            def on_fresh(load: Callable[[Any], object]) -> Callable[[], None]:
                def run() -> None:
                    load(fresh["pipe"])
                return run

            def prepare() -> None:
                fresh["pipe"] = tinytrain.load_pipe(model)

            prepare()
            loaders = {"load_lora_weights": on_fresh(lambda p: p.load_lora_weights(str(path.parent),
                                                                                   weight_name=path.name)),
                       "load_zero_prior": on_fresh(lambda p: load_zero_prior(p, path))}
            undo = {name: prepare for name in loaders}
            label = "tiny model"
        timings = time_loaders(loaders, undo, args.rounds)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(label)
    for name, value in medians.items():
        print(f"{name:18s} median {value * 1000:8.1f} ms over {args.rounds} rounds "
              f"(all: {', '.join(f'{v * 1000:.0f}' for v in timings[name])})")
    ratio = medians["load_zero_prior"] / medians["load_lora_weights"]
    # Each round times both loaders back to back, so its ratio and difference are free of the drift between rounds
    # that a shared 2-core machine shows (the plain load alone ranges over 20-40 ms from one run to the next).
    pairs = list(zip(timings["load_zero_prior"], timings["load_lora_weights"], strict=True))
    paired = statistics.median(ours / plain for ours, plain in pairs)
    extra = statistics.median(ours - plain for ours, plain in pairs)
    print(f"ratio load_zero_prior / load_lora_weights: {ratio:.2f} (medians); {paired:.2f} (median of the rounds' "
          f"ratios); load_zero_prior's extra time: median {extra * 1000:.1f} ms a load")


if __name__ == "__main__":
    main()
