"""Step-time and memory overhead of zero-prior over the baseline, measured side by side.

Runs the same tiny CPU config (config_examples/tiny_cpu.yaml) through real
ai-toolkit with ``train_placeholder_token`` false (the baseline) and true,
alternating the two arms for ``--rounds`` rounds, each job in its own
process, with sampling and logging moved past the last step so only training
steps are timed. Reports the median step time after warm-up per arm and its ratio,
the per-round ratios, the peak RSS ratio, and the extra memory of the
trainable state at Qwen-Image's real size against ai-toolkit's whole-matrix
``embedding:`` approach.

    python benchmarks/step_overhead.py [--steps 25] [--rounds 3] [--warmup 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from zero_prior.aitk.launch import find_ai_toolkit, load_config_template, stage_ai_toolkit, write_config
from zero_prior.installer import config_examples_dir
from zero_prior.testbed import cached_tiny_pipeline, make_subject_dataset

HERE = Path(__file__).resolve().parent
# Qwen-Image's text-encoder embedding: rows x hidden.
REAL_ROWS, REAL_HIDDEN = 152064, 3584


def trainable_state_bytes(elements: int) -> int:
    """fp32 value + gradient + AdamW's two moments."""
    return elements * 4 * 4


def run_arm(root: Path, config: Path, result: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(HERE / "_timed_job.py"), str(config), str(result)], cwd=root,
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{config.name} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="steps dropped from the start of each run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zero_prior_bench_") as tmp_name:
        tmp = Path(tmp_name)
        root = stage_ai_toolkit(find_ai_toolkit(), tmp)
        dataset = tmp / "subject"
        make_subject_dataset(dataset, num_images=8, size=64)
        steps: dict[str, list[float]] = {"baseline": [], "zero_prior": []}
        rss: dict[str, list[float]] = {"baseline": [], "zero_prior": []}
        round_ratios = []
        for round_index in range(args.rounds):
            medians = {}
            for arm in steps:
                values = {"MODEL_PATH": str(cached_tiny_pipeline()), "DATASET_PATH": str(dataset),
                          "TRAINING_FOLDER": str(tmp / f"runs{round_index}")}
                config = load_config_template(config_examples_dir() / "tiny_cpu.yaml", values)
                process = config["config"]["process"][0]
                config["config"]["name"] = arm
                process["train"].update(train_placeholder_token=arm == "zero_prior", steps=args.steps)
                process["sample"]["sample_every"] = args.steps * 10
                # Steps only: telemetry (nearest tokens over the whole vocabulary) runs on log
                # steps, every 2 in the tiny config; real configs log every 10-100 steps.
                process["logging"]["log_every"] = args.steps * 10
                process["save"]["save_every"] = args.steps
                if arm == "baseline":
                    process["trigger_word"] = "person"
                path = write_config(config, tmp / f"{arm}{round_index}.yaml")
                measured = run_arm(root, path, tmp / f"{arm}{round_index}.json")
                kept = measured["step_seconds"][args.warmup:]
                steps[arm].extend(kept)
                rss[arm].append(measured["peak_rss_mib"])
                medians[arm] = statistics.median(kept)
            round_ratios.append(medians["zero_prior"] / medians["baseline"])
            print(f"round {round_index + 1}: baseline {medians['baseline'] * 1000:.1f} ms, "
                  f"zero-prior {medians['zero_prior'] * 1000:.1f} ms, ratio {round_ratios[-1]:.3f}")
    base, zero = statistics.median(steps["baseline"]), statistics.median(steps["zero_prior"])
    print(f"median step (pooled, {len(steps['baseline'])} steps per arm after {args.warmup} warm-up steps per run): "
          f"baseline {base * 1000:.1f} ms, zero-prior {zero * 1000:.1f} ms, ratio {zero / base:.3f}")
    print(f"median of per-round ratios: {statistics.median(round_ratios):.3f}")
    print(f"peak RSS: baseline {max(rss['baseline']):.0f} MiB, zero-prior {max(rss['zero_prior']):.0f} MiB, "
          f"ratio {max(rss['zero_prior']) / max(rss['baseline']):.3f}")
    per_token = trainable_state_bytes(REAL_HIDDEN)
    whole = trainable_state_bytes(REAL_ROWS * REAL_HIDDEN)
    print(f"trainable state at Qwen-Image size (fp32 value + grad + 2 Adam moments): zero-prior {per_token / 1024:.0f} KiB "
          f"per token vector; ai-toolkit embedding: (whole {REAL_ROWS}x{REAL_HIDDEN} matrix) {whole / 2**30:.2f} GiB "
          f"(x{whole // per_token})")


if __name__ == "__main__":
    main()
