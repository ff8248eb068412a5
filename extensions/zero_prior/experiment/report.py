"""``report.md``, comparison grids and training-curve plots, from ``metrics.json`` and the runs' step logs.

Numbers are copied from ``metrics.json`` only (nothing is recomputed or
rounded before it is stored), so the report can never show a number the
metrics file does not hold. It also says what was *not* measured and why,
how verdicts are reached (the unit, the training runs behind each verdict, the
interval, the test, the comparison families and their adjustment, the
smallest attainable p), and how each arm's job differs from the baseline's.

Grids: rows are the evaluation prompts, columns the arms (first training seed),
every tile of one grid from the same evaluation seed, so columns differ only
in the weights. Plots: loss and placeholder norm per step, read from
ai-toolkit's step log (``loss_log.db``, written by its UI logger, which every
arm's job turns on); they need matplotlib (the ``eval`` extra), and without it
the report says they were not made.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..aitk.facts import STEP_LOG
from ..aitk.step_log import read_step_log
from ..errors import ExperimentError
from ..fileio import write_text_atomic
from .arms import ArmJob, build_arm_jobs, job_differences
from .captions import EVAL_TEMPLATES
from .design import ARM_METRICS, CLASS_DINO, PRIMARY, TOKEN_NECESSITY_DEFINITION
from .evaluate import BASE_RUN, CLASS, SUBJECT
from .layout import JOBS_FOLDER, LOG_FILE, METRICS_FILE, REPORT_FILE
from .spec import BASELINE, ExperimentSpec
from .stats import EXACT_MAX_N, HOLM, smallest_p

TILE = 256
LABEL_WIDTH = 240
HEADER = 28
LOSS_KEY = "loss/loss"


def write_report(spec: ExperimentSpec, jobs: Sequence[ArmJob] | None = None) -> Path:
    """Write ``report.md``, the grids and the plots into the output folder; return the report's path.

    Example::

        write_report(load_spec("experiment.yaml"))  # -> PosixPath('.../experiments/my_subject/report.md')
    """
    jobs = list(jobs) if jobs is not None else build_arm_jobs(spec)
    metrics_path = spec.output_dir / METRICS_FILE
    if not metrics_path.is_file():
        raise ExperimentError(f"{metrics_path} is missing; run `zero-prior evaluate {spec.path}` first")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    grids = make_grids(spec, jobs, metrics)
    plots, plot_notes = make_plots(spec, jobs)
    return write_text_atomic(spec.output_dir / REPORT_FILE, render(spec, jobs, metrics, grids, plots, plot_notes))


def make_grids(spec: ExperimentSpec, jobs: Sequence[ArmJob], metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Per evaluation seed: a subject grid (prompts x arms) and a class-prompt grid (prompts x base + arms)."""
    first = [job for job in jobs if job.training_seed == spec.training_seeds[0]]
    index = {(r["run"], r["kind"], r["template"], r["seed"]): r["file"] for r in metrics["images"]}
    templates = [EVAL_TEMPLATES[t] for t in range(spec.evaluation.prompts)]
    grids = []
    for seed in spec.evaluation.seeds:
        for kind, columns in ((SUBJECT, [(job.arm, job.name) for job in first]),
                              (CLASS, [("base (no adapter)", BASE_RUN)] + [(job.arm, job.name) for job in first])):
            rows = [[spec.output_dir / index[(run, kind, template, seed)] for _, run in columns]
                    for template in templates]
            labels = [template.format(subject="…") for template in templates]
            name = f"grid_{kind}_seed{seed}.png"
            _grid(rows, labels, [label for label, _ in columns], spec.output_dir / name)
            what = "subject prompts (each arm's own subject words)" if kind == SUBJECT else \
                f"class prompts ('{spec.subject.class_phrase}', no token)"
            grids.append((f"{what}, evaluation seed {seed}", name))
    return grids


def make_plots(spec: ExperimentSpec, jobs: Sequence[ArmJob]) -> tuple[list[tuple[str, str]], list[str]]:
    """Loss and placeholder-norm curves per job from ``loss_log.db``; notes say what could not be plotted and why."""
    curves, notes = {}, []
    for job in jobs:
        database = job.save_root(spec.runs_dir) / STEP_LOG
        if not database.is_file():
            notes.append(f"{job.name}: no {STEP_LOG} in {database.parent} (ai-toolkit writes it only with "
                         "logging.use_ui_logger and without use_wandb)")
            continue
        curves[job.name] = read_step_log(database)
        if job.placeholder_token is not None and job.lora_path(spec.runs_dir).is_file():
            _add_initial_norms(curves[job.name], job.lora_path(spec.runs_dir))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], notes + ["plots not made: matplotlib is not installed; pip install 'zero-prior[eval]'"]
    plots = []
    for title, file, pick, scale in (("training loss", "loss.png", lambda key: key == LOSS_KEY, "linear"),
                                     ("placeholder vector norm", "placeholder_norm.png",
                                      lambda key: key.startswith("placeholder/") and key.endswith("/norm"), "log")):
        figure, axes = plt.subplots(figsize=(7, 4))
        axes.set_yscale(scale)  # the norm starts near 1e-4 (zero_prior) and grows by orders of magnitude
        drawn = 0
        for job in jobs:
            picked = {key: points for key, points in sorted(curves.get(job.name, {}).items()) if pick(key) and points}
            for key, points in picked.items():
                steps, values = zip(*points)
                label = f"{job.arm} seed {job.training_seed}" + (f" {key}" if len(picked) > 1 else "")
                axes.plot(steps, values, marker="." if len(points) < 30 else None, label=label)
                drawn += 1
        if drawn:
            axes.set(title=title, xlabel="step", ylabel=title)
            axes.legend(fontsize="small")
            figure.tight_layout()
            figure.savefig(spec.output_dir / file, dpi=100)
            plots.append((title, file))
        else:
            notes.append(f"{title}: no logged values in any job's {STEP_LOG} (logged every logging.log_every steps, "
                         "from the first step after the start)")
        plt.close(figure)
    return plots, notes


def _add_initial_norms(curves: dict[str, list[tuple[int, float]]], lora: Path) -> None:
    """Step 0 of the norm curves from the LoRA's metadata: ai-toolkit logs nothing before the first step."""
    from ..weights.format import read_zero_prior

    record = read_zero_prior(lora)
    for stored in record.placeholders if record is not None else []:
        for index, norm in enumerate(stored.initial_norms):
            key = f"placeholder/{stored.token}" + (f"/{index}" if stored.num_vectors > 1 else "") + "/norm"
            if key in curves and curves[key][0][0] > 0:
                curves[key].insert(0, (0, float(norm)))


def render(spec: ExperimentSpec, jobs: Sequence[ArmJob], metrics: dict[str, Any], grids: list[tuple[str, str]],
           plots: list[tuple[str, str]], plot_notes: list[str]) -> str:
    """The Markdown report."""
    ev = metrics["evaluation"]
    n_prompts = ev["prompts"]
    identities = metrics.get("metric_models", {})
    random = [key.upper() if key != "lpips" else "LPIPS backbone" for key, identity in identities.items()
              if identity.get("random")]
    lines = [f"# zero-prior experiment: {spec.name}", ""]
    if random:
        lines += [f"**Random metric models ({', '.join(random)}): every score of theirs below is NOT meaningful; "
                  "this run checks the machinery only.**", ""]
    lines += [
        f"Base model `{metrics['models']['base']}`; arms {', '.join(spec.arms)}; training seeds "
        f"{', '.join(map(str, spec.training_seeds))}; {n_prompts} held-out prompts x evaluation seeds "
        f"{', '.join(map(str, ev['seeds']))} (the same seeds in every arm); {ev['steps']} sampling steps at "
        f"{ev['width']}x{ev['height']}, true CFG {ev['true_cfg_scale']}, LoRA scale {ev['lora_scale']}, "
        f"device {ev['device_used']}.",
        "",
        "Every number below was computed from images generated with the arms' trained weights (loaded with "
        "`load_zero_prior`); all values are in `metrics.json`, how they were made in `experiment_log.json`.",
        "",
        "## What was measured",
        "",
        "| metric | definition | higher is |",
        "|---|---|---|",
    ]
    measured = {metric for table in metrics["summary"].values() for metric in table}
    for metric, (higher, definition) in ARM_METRICS.items():
        if metric in measured:
            direction = {True: "better", False: "worse (more leak)", None: "neither (a direction only)"}[higher]
            lines.append(f"| {metric} | {definition} | {direction} |")
    if "class_dino" in measured:
        lines.append(f"| class_dino | {CLASS_DINO} | worse for an arm than for the base model (identity bleed) |")
    if any("missing" not in test for test in metrics["token_necessity"].values()):
        lines.append(f"| token necessity | {TOKEN_NECESSITY_DEFINITION} | better (the token carries the subject) |")
    lines += ["", f"Protocol `{metrics['evaluation']['protocol']}`: CLIP `{metrics['models']['clip']}`, DINO "
              f"`{metrics['models']['dino']}`, LPIPS `{metrics['models']['lpips']}` (revisions and weight sha256 in "
              f"`metrics.json` under `metric_models`); references: {len(metrics['references'])} training images."]
    lines += ["", "### Not measured", ""]
    missing = [f"- {metric}: {reason}" for metric, reason in sorted(metrics["missing"].items())]
    lines += missing or ["- nothing: every metric was computed"]
    lines += [f"- {note}" for note in plot_notes]
    lines += _design(metrics)
    lines += _summary_table(metrics)
    lines += _comparison_tables(metrics)
    lines += _settings(spec, jobs)
    lines += ["", "## Images", ""]
    lines += [f"**{title}**\n\n![{title}]({file})\n" for title, file in grids]
    lines += ["## Training curves", ""]
    lines += [f"![{title}]({file})\n" for title, file in plots] or ["No plots (see *Not measured*)."]
    lines += ["", f"Files: `{METRICS_FILE}`, `{LOG_FILE}`, `{JOBS_FOLDER}/` (the arms' ai-toolkit jobs), `logs/`, "
              "`images/`.", ""]
    return "\n".join(lines)


def _summary_table(metrics: dict[str, Any]) -> list[str]:
    confidence = f"{metrics['evaluation']['confidence']:.0%}"
    arms = [arm for arm in metrics["arms"] if arm in metrics["summary"]]
    names = sorted({metric for arm in arms for metric in metrics["summary"][arm]},
                   key=lambda m: (list(ARM_METRICS).index(m) if m in ARM_METRICS else len(ARM_METRICS), m))
    unit = metrics["design"]["unit"]
    lines = ["", f"## Per arm (mean over {unit}s, {confidence} Student t interval of the mean over {unit}s)", "",
             "| metric | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for metric in names:
        cells = []
        for arm in arms:
            value = metrics["summary"][arm].get(metric)
            cells.append(f"{value['mean']:.4g} [{value['ci_low']:.4g}, {value['ci_high']:.4g}]" if value else "—")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    base = metrics["summary"].get(BASE_RUN, {}).get("class_dino")
    if base:
        lines += ["", f"Base model without adapter, class prompts: class_dino {base['mean']:.4g} "
                  f"[{base['ci_low']:.4g}, {base['ci_high']:.4g}]."]
    return lines


def _design(metrics: dict[str, Any]) -> list[str]:
    """How verdicts are reached: the unit, the training runs behind them, the interval, the test, the families."""
    design, ev = metrics["design"], metrics["evaluation"]
    unit, n, runs = design["unit"], design["n_units"], design["n_training_runs"]
    lines = ["", "## How verdicts are reached", ""]
    if runs == 1:
        lines.append(f"**One training run per arm.** Every verdict below rests on a single trained LoRA per arm: "
                     f"the {n} prompts are the unit, so a verdict says how these two trained results differ, not "
                     "whether the method is better; train several `training_seeds` for a claim about the method.")
    else:
        lines.append(f"**{runs} training runs per arm.** The unit is the training run: per training seed, the mean "
                     "over prompts of each arm's values, paired by seed.")
    minimum = smallest_p(n, ev["permutation_resamples"])
    lines += ["", f"- unit of replication: {unit}, n = {n}; training runs behind each verdict: {runs}",
              f"- interval: {design['interval_method']} ({ev['confidence']:.0%}, n - 1 = {n - 1} degrees of freedom)",
              f"- test for the verdict: paired permutation (sign-flip) test, "
              f"{'exact' if n <= EXACT_MAX_N else 'Monte Carlo'}; smallest attainable p {minimum:.4g}; "
              "Wilcoxon signed-rank (exact distribution, zeros dropped, ties mid-ranked) shown alongside",
              f"- multiple comparisons: {HOLM} within each family; a direction is claimed only when the interval "
              f"excludes 0 and the adjusted p < {design['alpha']}"]
    for family, content in design["families"].items():
        m = len(content["comparisons"])
        what = ("the comparisons the experiment is for (zero_prior vs baseline on DINO and CLIP-T)"
                if family == PRIMARY else "every other comparison")
        reach = f"smallest attainable adjusted p {min(1.0, m * minimum):.4g}" if m else "empty"
        lines.append(f"- {family} family ({m}, {content['adjustment']}): {what}; {reach}")
    return lines


def _comparison_tables(metrics: dict[str, Any]) -> list[str]:
    header = ["| treatment | control | metric | mean difference | CI | permutation p | family | adjusted p | "
              "Wilcoxon p | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines = ["", f"## Each arm against {BASELINE} (paired by {metrics['design']['unit']})", ""]
    if metrics["comparisons"]:
        lines += header + [_comparison_row(c) for c in metrics["comparisons"]]
    else:
        lines.append("No comparison: only the baseline was evaluated, or its metrics are missing.")
    lines += ["", "## Identity bleed (prior leak): class prompts (no token), arm vs. the base model", "",
              f"class_dino: {CLASS_DINO}. Higher with the adapter than without it means the subject leaks into the "
              "class (verdict 'worse').", ""]
    leaks = [metrics["prior_leak"][arm] for arm in metrics["arms"] if arm in metrics["prior_leak"]]
    if leaks:
        lines += header + [_comparison_row(c) for c in leaks]
    else:
        lines.append(f"Not measured: {metrics['missing'].get('prior_leak', 'DINO was not measured')}")
    lines += ["", "## Token necessity: DINO with the arm's token vs. the class phrase, same arm and seeds", "",
              f"Token necessity: {TOKEN_NECESSITY_DEFINITION}.", ""]
    necessity = metrics["token_necessity"]
    tests = [necessity[arm] for arm in metrics["arms"] if "missing" not in necessity[arm]]
    if tests:
        lines += header + [_comparison_row(c) for c in tests] + [""]
    lines += [f"- {arm}: {necessity[arm]['missing']}" for arm in metrics["arms"] if "missing" in necessity[arm]]
    return lines


def _comparison_row(c: dict[str, Any]) -> str:
    tests = {t["name"]: t for t in c["tests"]}

    def p(name: str) -> str:
        test = tests.get(name, {})
        return f"{test['p_value']:.4g}" if test.get("p_value") is not None else f"— ({test.get('missing', 'not run')})"

    return (f"| {c['treatment']} | {c['control']} | {c['metric']} | {c['mean_difference']:.4g} | "
            f"[{c['ci_low']:.4g}, {c['ci_high']:.4g}] | {p('permutation')} | {c['family']} | {c['adjusted_p']:.4g} | "
            f"{p('wilcoxon')} | {c['verdict']['label']} |")


def _settings(spec: ExperimentSpec, jobs: Sequence[ArmJob]) -> list[str]:
    """How each arm's job differs from the baseline's (same training seed)."""
    lines = ["", "## The arms' settings", "",
             f"Every job is the base job ({spec.base_job_source}) with the same name, folder, seed and logger "
             f"settings applied; the baseline's job is `{JOBS_FOLDER}/` + its name. Differences from the "
             "baseline:", ""]
    for seed in spec.training_seeds:
        baseline = next(job for job in jobs if job.arm == BASELINE and job.training_seed == seed)
        for job in jobs:
            if job.training_seed != seed or job is baseline:
                continue
            differences = job_differences(baseline.job, job.job)
            changes = {key: pair for key, pair in differences.items() if key != "config.name"}
            lines.append(f"- **{job.arm}** (seed {seed}): " + "; ".join(
                f"`{key}` {pair[0]!r} -> {pair[1]!r}" for key, pair in changes.items()))
    return lines


def _grid(rows: list[list[Path]], row_labels: list[str], column_labels: list[str], path: Path) -> None:
    """Tiles of ``TILE`` px with a header row of column labels and a column of wrapped row labels."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    canvas = Image.new("RGB", (LABEL_WIDTH + TILE * len(column_labels), HEADER + TILE * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for column, label in enumerate(column_labels):
        draw.text((LABEL_WIDTH + column * TILE + 6, 8), label, fill="black", font=font)
    for row, (files, label) in enumerate(zip(rows, row_labels)):
        top = HEADER + row * TILE
        draw.multiline_text((6, top + 8), "\n".join(textwrap.wrap(label, 34)), fill="black", font=font)
        for column, file in enumerate(files):
            with Image.open(file) as image:
                resample = Image.Resampling.NEAREST if image.width < TILE else Image.Resampling.LANCZOS
                canvas.paste(image.convert("RGB").resize((TILE, TILE), resample), (LABEL_WIDTH + column * TILE, top))
    canvas.save(path)
