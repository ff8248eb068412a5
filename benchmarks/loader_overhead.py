"""Loader cost: ``load_zero_prior`` against diffusers' plain ``load_lora_weights``, side by side.

Trains a 2-step placeholder + LoRA on the tiny test-bed pipeline, saves it,
then alternates the two loaders on fresh pipelines (the same file each time)
and reports the median time of each and their ratio. The extra work of
``load_zero_prior`` is the metadata read and checks, the token checks on a
copy of the tokenizer, and the row write.

    python benchmarks/loader_overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tinytrain  # noqa: E402  (test-only training helpers)

from zero_prior.placeholder.config import PlaceholderConfig  # noqa: E402
from zero_prior.testbed import cached_tiny_pipeline  # noqa: E402
from zero_prior.weights.loader import load_zero_prior  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = cached_tiny_pipeline(seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = tinytrain.load_pipe(model)
        configs = [PlaceholderConfig()]
        placeholders, _ = tinytrain.train(pipe, configs, steps=2)
        path = tinytrain.save(pipe, placeholders, configs, Path(tmp) / "subject.safetensors")
        timings: dict[str, list[float]] = {"load_lora_weights": [], "load_zero_prior": []}
        for _ in range(args.rounds):
            for name in timings:
                fresh = tinytrain.load_pipe(model)
                start = time.perf_counter()
                if name == "load_zero_prior":
                    load_zero_prior(fresh, path)
                else:
                    fresh.load_lora_weights(str(path))
                timings[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    for name, value in medians.items():
        print(f"{name:18s} median {value * 1000:8.1f} ms over {args.rounds} rounds")
    ratio = medians["load_zero_prior"] / medians["load_lora_weights"]
    print(f"ratio load_zero_prior / load_lora_weights: {ratio:.2f}")


if __name__ == "__main__":
    main()
