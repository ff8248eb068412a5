"""``zero-prior demo``: the whole product on the built-in tiny model, in a few minutes on a CPU.

Builds the tiny real-architecture model of a family (Qwen-Image unless
``family`` says otherwise) and a synthetic subject (with control images for
an edit family), trains
the baseline (semantic trigger word) and the zero-prior arm through
ai-toolkit's real ``run.py`` (staged, so the user's checkout is not touched),
loads both results with ``load_zero_prior``, writes a side-by-side image with
the same seed and prints what happened to the placeholder. The tiny model
has random weights: the images show the pipeline working, not quality.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AiToolkitError, FormatError
from ..models import DEFAULT_FAMILY, family_named
from ..weights.format import read_zero_prior

BASELINE_TRIGGER = "person"
PROMPT = "a photo of {trigger} on a beach"
TINY_CONFIG = "tiny_cpu.yaml"


@dataclass
class DemoResult:
    """Paths and figures the demo reports."""

    baseline_lora: Path
    zero_prior_lora: Path
    image: Path
    log: Path
    seconds: float
    summary: str


def run_demo(out: Path, ai_toolkit: str | None = None, steps: int = 4, seed: int = 0,
             family: str = DEFAULT_FAMILY.name) -> DemoResult:
    """Train both arms on ``family``'s tiny model through ai-toolkit and compare them (see module docstring)."""
    from zero_prior.config_examples import example_path

    from ..aitk.checkout import TESTED_COMMIT, find_ai_toolkit
    from ..aitk.launch import load_config_template, run_jobs
    from .qwen_image_edit_plus import FIRST_CONTROL, edit_job
    from .subject import make_subject_dataset
    from .tiny_model import cached_tiny_pipeline

    started = time.perf_counter()
    arch = family_named(family).aitk_arch
    try:
        checkout = find_ai_toolkit(ai_toolkit)
    except AiToolkitError as error:
        raise AiToolkitError(
            f"{error}. The demo trains through ai-toolkit; get it with:\n"
            "  git clone https://github.com/ostris/ai-toolkit ~/ai-toolkit\n"
            f"  git -C ~/ai-toolkit checkout {TESTED_COMMIT[:8]}\n"
            "  scripts/bootstrap.sh   # installs its requirements into .venv\n"
            "or pass --ai-toolkit PATH / set AI_TOOLKIT_DIR"
        ) from None
    out = Path(out).resolve()
    runs = out / "runs"
    if runs.exists():
        shutil.rmtree(runs)  # a leftover run would make ai-toolkit resume instead of train
    model = cached_tiny_pipeline(seed=0, family=family)
    dataset = out / "subject"
    control = out / "control" if family_named(family).control_images else None
    make_subject_dataset(dataset, num_images=8, size=64, seed=seed, caption="a photo of [trigger]", overwrite=True,
                         control_dir=control)
    values = {"MODEL_PATH": str(model), "DATASET_PATH": str(dataset), "TRAINING_FOLDER": str(runs)}
    arms = {"demo_baseline": False, "demo_zero_prior": True}
    log = out / "train.log"
    configs = []
    for name, enabled in arms.items():
        config = load_config_template(example_path(TINY_CONFIG), values)
        process = config["config"]["process"][0]
        config["config"]["name"] = name
        process["train"]["train_placeholder_token"] = enabled
        process["train"]["steps"] = steps
        process["model"]["arch"] = arch
        if control is not None:
            edit_job(process, str(control))
        if not enabled:
            process["trigger_word"] = BASELINE_TRIGGER
        configs.append(config)
    print(f"zero-prior demo: training {len(arms)} arms x {steps} steps of the tiny {family_named(family).label} "
          f"through ai-toolkit ({checkout}); log: {log}")
    run_jobs(checkout, configs, log_path=log)
    baseline, zero_prior = (runs / name / f"{name}.safetensors" for name in arms)
    image = out / "side_by_side.png"
    lines = _compare(model, baseline, zero_prior, image, seed, control / FIRST_CONTROL if control else None)
    return DemoResult(baseline, zero_prior, image, log, time.perf_counter() - started, "\n".join(lines))


def _compare(model: Path, baseline: Path, zero_prior: Path, image: Path, seed: int,
             control: Path | None) -> list[str]:
    """Load both LoRAs with the project's loader, generate with one seed (editing ``control`` for an edit family),
    describe the placeholder."""
    from PIL import Image

    from ..serving.generate import generate_images, load_pipeline
    from ..weights.loader import load_zero_prior

    edited = Image.open(control).convert("RGB") if control is not None else None
    pictures, lines = [], []
    for path, trigger, label in ((baseline, BASELINE_TRIGGER, "baseline"), (zero_prior, "<zwx>", "zero-prior")):
        pipe = load_pipeline(model, device="cpu")
        result = load_zero_prior(pipe, path)
        prompt = PROMPT.format(trigger=trigger)
        [picture] = generate_images(pipe, [prompt], seed=seed, steps=4, height=64, width=64, image=edited)
        pictures.append((f"{label}: {prompt}", picture))
        lines.append(f"{label:10s}: {result.lora_tensors} LoRA tensors from {path}")
    record = read_zero_prior(zero_prior)
    if record is None:
        raise FormatError(f"{zero_prior} has no placeholder record; the zero-prior arm did not train a token")
    for stored in record.placeholders:
        lines.append(
            f"{'':10s}  token {stored.token!r} id {stored.token_ids}, vector norm "
            f"{stored.initial_norms[0]:.3g} -> {float(stored.vectors.norm(dim=1)[0]):.3g} after "
            f"{record.training_step} steps"
        )
    check = record.extra.get("text_encoder_sha256")
    if check:
        same = "yes" if check["start"] == check.get("at_save", check.get("at_pivot")) else "NO"
        lines.append(f"{'':10s}  text encoder unchanged by training (sha256 at start == at save): {same}")
    _side_by_side(pictures, image)
    lines.append(f"image     : {image} (same seed; left baseline, right zero-prior)")
    return lines


def _side_by_side(pictures: list[tuple[str, Any]], path: Path, scale: int = 4) -> None:
    from PIL import Image, ImageDraw

    tiles = [picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST) for _, picture in pictures]
    band = 18
    canvas = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles) + band), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for (label, _), tile in zip(pictures, tiles):
        canvas.paste(tile, (x, band))
        draw.text((x + 4, 3), label, fill="black")
        x += tile.width
    canvas.save(path)
