"""Step-time and memory of zero-prior against the baseline, measured side by side in one run.

Runs the same tiny CPU config (config_examples/tiny_cpu.yaml) through real
ai-toolkit in five arms, alternating them for ``--rounds`` rounds, each job in
its own process, with sampling and logging moved past the last step so only
training steps are timed:

- ``baseline``: ``train_placeholder_token: false``, a semantic trigger word,
  the prompt encoded every step without gradient (ai-toolkit's default);
- ``baseline_cached``: the same with ``cache_text_embeddings`` (embeddings
  encoded once, text encoder unloaded);
- ``zero_prior``: the placeholder trains, prompts through the prefix cache
  (the default);
- ``zero_prior_full_encode``: the same with ``placeholder.prefix_cache: false``;
- ``zero_prior_pivot``: ``placeholder.stop_step`` inside the warm-up, so every
  timed step comes after the pivot.

Reports the median step time after warm-up per arm, the ratios (pooled and
median of per-round), peak and end-of-run RSS, and the extra memory of the
trainable state at Qwen-Image's real size against ai-toolkit's whole-matrix
``embedding:`` approach.

    python benchmarks/step_overhead.py [--steps 25] [--rounds 3] [--warmup 5] [--family zimage]

``--family`` runs the family's tiny test bed under its ai-toolkit arch
(Qwen-Image-Edit-Plus with control images encoded at the target size, as
the tests do); where the family refuses the prefix cache, ``zero_prior``
encodes the whole prompt and the ``zero_prior_full_encode`` arm is dropped,
and where it refuses the pivot (Qwen-Image-Edit-Plus) the ``zero_prior_pivot`` arm.

``--proxy``: the proportional CPU proxy of the Qwen-Image step instead
(``_step_proxy.py``: real depths and token counts at 1/``--scale`` width;
defaults 3 rounds of 3 steps, 1 dropped), with the physical floor of
``flops.py``.

    python benchmarks/step_overhead.py --proxy [--scale 32] [--rounds 3] [--steps 3] [--warmup 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from zero_prior.aitk.checkout import find_ai_toolkit
from zero_prior.aitk.launch import load_config_template, stage_ai_toolkit, write_config
from zero_prior.config_examples import example_path
from zero_prior.models import FAMILY_NAMES, ModelFamily, family_named
from zero_prior.models.qwen_image import QWEN_IMAGE
from zero_prior.testbed import cached_tiny_pipeline, make_subject_dataset
from zero_prior.testbed.qwen_image_edit_plus import edit_job

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


ARMS: dict[str, Callable[[dict, int], None]] = {
    "baseline": lambda process, warmup: process.update(trigger_word="person"),
    "baseline_cached": lambda process, warmup: (
        process.update(trigger_word="person"), process["datasets"][0].update(cache_text_embeddings=True)),
    "zero_prior": lambda process, warmup: None,
    "zero_prior_full_encode": lambda process, warmup: process["placeholder"].update(prefix_cache=False),
    # The pivot's own step (encoding every prompt) falls inside the dropped warm-up steps.
    "zero_prior_pivot": lambda process, warmup: process["placeholder"].update(stop_step=max(1, warmup - 1)),
}
# (numerator, denominator) pairs reported as ratios.
RATIOS = [("zero_prior", "baseline"), ("zero_prior", "baseline_cached"), ("zero_prior_full_encode", "baseline"),
          ("zero_prior", "zero_prior_full_encode"), ("zero_prior_pivot", "baseline_cached"),
          ("zero_prior_pivot", "baseline")]


def arm_config(arm: str, values: dict[str, str], steps: int, warmup: int, family: ModelFamily = QWEN_IMAGE,
               control: Path | None = None) -> dict:
    """tiny_cpu.yaml as arm ``arm`` runs it for ``family``: only training steps inside the timed window."""
    config = load_config_template(example_path("tiny_cpu.yaml"), values)
    process = config["config"]["process"][0]
    process["model"]["arch"] = family.aitk_arch
    if family.control_images:
        edit_job(process, str(control))
    config["config"]["name"] = arm
    process["train"].update(train_placeholder_token=arm.startswith("zero_prior"), steps=steps)
    process["sample"]["sample_every"] = steps * 10
    # Steps only: telemetry (nearest tokens over the whole vocabulary) runs on log
    # steps, every 2 in the tiny config; real configs log every 10-100 steps.
    process["logging"]["log_every"] = steps * 10
    process["save"]["save_every"] = steps
    ARMS[arm](process, warmup)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="default 25 (3 with --proxy)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=None, help="steps dropped per run; default 5 (1 with --proxy)")
    parser.add_argument("--proxy", action="store_true", help="the proportional Qwen-Image proxy (see _step_proxy.py)")
    parser.add_argument("--scale", type=int, choices=(16, 32), default=32, help="--proxy: width divisor")
    parser.add_argument("--family", choices=FAMILY_NAMES, default=QWEN_IMAGE.name, help="the tiny test bed's family")
    args = parser.parse_args()
    if args.proxy:
        from _step_proxy import run

        steps, warmup = args.steps or 3, 1 if args.warmup is None else args.warmup
        if steps <= warmup:
            parser.error("--steps must be above --warmup")
        run(args.scale, args.rounds, steps, warmup)
        return
    args.steps = args.steps or 25
    args.warmup = 5 if args.warmup is None else args.warmup
    if args.warmup < 2 or args.steps <= args.warmup:
        parser.error("--warmup must be at least 2 (the pivot arm pivots in the warm-up) and below --steps")
    family = family_named(args.family)
    refusals = {"zero_prior_full_encode": family.prefix_cache_refusal(), "zero_prior_pivot": family.pivot_refusal()}
    arms = [arm for arm in ARMS if refusals.get(arm) is None]
    ratios = [pair for pair in RATIOS if set(pair) <= set(arms)]
    steps: dict[str, list[float]] = {arm: [] for arm in arms}
    peak: dict[str, list[float]] = {arm: [] for arm in arms}
    end: dict[str, list[float]] = {arm: [] for arm in arms}
    round_ratios: dict[tuple[str, str], list[float]] = {pair: [] for pair in ratios}
    with tempfile.TemporaryDirectory(prefix="zero_prior_bench_") as tmp_name:
        tmp = Path(tmp_name)
        root = stage_ai_toolkit(find_ai_toolkit(), tmp)
        dataset, control = tmp / "subject", tmp / "control"
        make_subject_dataset(dataset, num_images=8, size=64, control_dir=control if family.control_images else None)
        model = cached_tiny_pipeline(family=family.name)
        print(f"family {family.name} (tiny test bed, arch {family.aitk_arch}); arms {', '.join(arms)}")
        for arm, refusal in refusals.items():
            if refusal is not None:
                print(f"  {arm} dropped: {refusal}")
        for round_index in range(args.rounds):
            medians = {}
            for arm in arms:
                values = {"MODEL_PATH": str(model), "DATASET_PATH": str(dataset),
                          "TRAINING_FOLDER": str(tmp / f"runs{round_index}")}
                path = write_config(arm_config(arm, values, args.steps, args.warmup, family, control),
                                    tmp / f"{arm}{round_index}.yaml")
                measured = run_arm(root, path, tmp / f"{arm}{round_index}.json")
                kept = measured["step_seconds"][args.warmup:]
                steps[arm].extend(kept)
                peak[arm].append(measured["peak_rss_mib"])
                end[arm].append(measured["end_rss_mib"])
                medians[arm] = statistics.median(kept)
            for pair in ratios:
                round_ratios[pair].append(medians[pair[0]] / medians[pair[1]])
            print(f"round {round_index + 1}: " + ", ".join(f"{arm} {medians[arm] * 1000:.1f} ms" for arm in arms))
    pooled = {arm: statistics.median(values) for arm, values in steps.items()}
    print(f"median step (pooled, {len(steps['baseline'])} steps per arm after {args.warmup} warm-up steps per run):")
    for arm in arms:
        print(f"  {arm:24s} {pooled[arm] * 1000:7.1f} ms   peak RSS {max(peak[arm]):6.0f} MiB   "
              f"RSS at the end {max(end[arm]):6.0f} MiB")
    for pair in ratios:
        print(f"ratio {pair[0]} / {pair[1]}: pooled {pooled[pair[0]] / pooled[pair[1]]:.3f}, "
              f"median of per-round {statistics.median(round_ratios[pair]):.3f}, "
              f"peak RSS {max(peak[pair[0]]) / max(peak[pair[1]]):.3f}")
    per_token = trainable_state_bytes(REAL_HIDDEN)
    whole = trainable_state_bytes(REAL_ROWS * REAL_HIDDEN)
    print(f"trainable state at Qwen-Image size (fp32 value + grad + 2 Adam moments): zero-prior "
          f"{per_token / 1024:.0f} KiB per token vector; ai-toolkit embedding: (whole {REAL_ROWS}x{REAL_HIDDEN} "
          f"matrix) {whole / 2**30:.2f} GiB (x{whole // per_token})")


if __name__ == "__main__":
    main()
