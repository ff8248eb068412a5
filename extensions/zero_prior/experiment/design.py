"""The analysis plan, fixed before any image exists: metrics, comparison families, the unit of replication.

Declared here once and used by ``--dry-run`` (what verdicts the design can
reach), by the evaluation (which family each comparison is adjusted in) and
by the report (what each family means):

- *primary* family: DINO and CLIP-T, ``zero_prior`` vs. ``baseline``, the two
  comparisons the experiment exists for; Holm-adjusted together.
- *secondary* family: every other comparison (the other metrics and arms,
  prior leak, token necessity, the direction-only image statistics);
  Holm-adjusted together.
- unit: the prompt with one training seed (the verdict is about one trained
  LoRA per arm), the training run with several (per-seed means over prompts).
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import BASELINE, ExperimentSpec
from .stats import HOLM, PROMPT_UNIT, RUN_UNIT, smallest_p

PRIMARY, SECONDARY = "primary", "secondary"
VS_BASELINE, PRIOR_LEAK, TOKEN_NECESSITY = "vs baseline", "prior leak", "token necessity"
PRIMARY_COMPARISONS = (("zero_prior", "dino"), ("zero_prior", "clip_t"))

# metric -> (higher is better; None: a direction only, no better/worse), definition for the report.
ARM_METRICS: dict[str, tuple[bool | None, str]] = {
    "clip_t": (True, "CLIP cosine of the subject image to its prompt with the class phrase in the subject slot"),
    "clip_i": (True, "mean CLIP cosine of the subject image to the training images"),
    "dino": (True, "mean DINO CLS cosine of the subject image to the training images (subject fidelity; "
             "the DINO model named below, ViT-S/16 under the dreambooth protocol)"),
    "diversity": (True, "mean pairwise LPIPS between a prompt's subject images over the evaluation seeds"),
    "prior_leak": (False, "class_dino with the arm's adapter minus class_dino of the base model without adapter"),
    "brightness": (None, "mean Rec. 601 luma in [0, 1] of the subject image"),
    "rms_contrast": (None, "standard deviation of the luma of the subject image"),
    "sharpness": (None, "variance of the Laplacian of the luma of the subject image"),
}
CLASS_DINO = ("mean DINO CLS cosine to the training images of images generated from the class prompt (class "
              "phrase, no token): the identity bleed into the class")
TOKEN_NECESSITY_DEFINITION = ("dino of the arm's subject images (its token) minus its class_dino (the class phrase "
                              "in the same template, same weights and seeds): how much of the subject the token "
                              "itself carries")


@dataclass(frozen=True)
class Planned:
    """One comparison the analysis will make: which kind, which arm, which metric, in which family."""

    kind: str  # VS_BASELINE, PRIOR_LEAK or TOKEN_NECESSITY
    arm: str
    metric: str

    @property
    def family(self) -> str:
        return PRIMARY if self.kind == VS_BASELINE and (self.arm, self.metric) in PRIMARY_COMPARISONS else SECONDARY


def planned_comparisons(spec: ExperimentSpec) -> list[Planned]:
    """Every comparison the evaluation makes when every metric is measured."""
    others = [arm for arm in spec.arms if arm != BASELINE]
    plan = [Planned(VS_BASELINE, arm, metric) for arm in others for metric in ARM_METRICS]
    plan += [Planned(PRIOR_LEAK, arm, "class_dino") for arm in spec.arms]
    plan += [Planned(TOKEN_NECESSITY, arm, "dino") for arm in others]
    return plan


def analysis_unit(spec: ExperimentSpec) -> tuple[str, int]:
    """The unit of replication and how many there are."""
    if len(spec.training_seeds) > 1:
        return RUN_UNIT, len(spec.training_seeds)
    return PROMPT_UNIT, spec.evaluation.prompts


def design_lines(spec: ExperimentSpec) -> list[str]:
    """What verdicts this design can reach: per family its size and the smallest attainable adjusted p."""
    unit, n = analysis_unit(spec)
    ev = spec.evaluation
    runs = len(spec.training_seeds)
    raw = smallest_p(n, ev.permutation_resamples)
    lines = [f"unit of replication: {unit} (n = {n}); {runs} training run(s) per arm"
             + ("; verdicts are about this one trained LoRA per arm, not about the method" if runs == 1 else ""),
             f"smallest attainable permutation p with n = {n}: {raw:.4g}"]
    plan = planned_comparisons(spec)
    for family in (PRIMARY, SECONDARY):
        m = sum(1 for planned in plan if planned.family == family)
        if not m:
            lines.append(f"{family} family: empty (needs the zero_prior arm)" if family == PRIMARY else
                         f"{family} family: empty")
            continue
        best = min(1.0, m * raw)
        more = "add prompts (or permutation_resamples above 16 prompts)" if unit == PROMPT_UNIT else \
            "train more seeds (each doubles the exact test's reach)"
        reach = "a verdict is possible" if best < ev.alpha else f"NO verdict is possible: {more}"
        lines.append(f"{family} family: {m} comparison(s), {HOLM}; smallest attainable adjusted p {best:.4g} "
                     f"vs alpha {ev.alpha}: {reach}")
    return lines
