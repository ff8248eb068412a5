"""One JSON of every GPU figure with PASS/FAIL against issue 16's goals, from the files ``gpu.sh`` wrote.

Goals (step time over the baseline's, cached embeddings): the zero-prior step
at most 1.10x at 512 px and 1.05x at 1024 px, after the pivot 1.00x (judged
with ``PIVOT_TOLERANCE`` for timing noise, stated in the JSON), and the 24 GB
recipe fits. The zero-prior arm judged is the one the family trains with:
``zero_prior`` (prefix cache) for Qwen-Image, ``zero_prior_full_encode`` for
Z-Image and FLUX.2 [klein], whose prefix cache is refused. Each check carries the physical floor
of ``flops.py`` for the same family and resolution. Figures from the CPU
(``gpu.sh --size tiny``) are not judged. Exit status 1 when any check fails
or a file is missing.

    python benchmarks/gpu_summary.py DIR   # DIR/gpu_step.json, gpu_zimage.json, gpu_flux2_klein.json,
                                           # gpu_24gb.json -> DIR/gpu.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from flops import FAMILIES

STEP_GOALS = {512: 1.10, 1024: 1.05}
PIVOT_TOLERANCE = 0.02
# (file, family, the zero-prior arm that family trains with)
STEP_FILES = (("gpu_step.json", "qwen_image", "zero_prior"), ("gpu_zimage.json", "zimage", "zero_prior_full_encode"),
              ("gpu_flux2_klein.json", "flux2_klein", "zero_prior_full_encode"))


def step_checks(data: dict[str, Any], family: str, arm: str) -> list[dict[str, Any]]:
    """One check per (resolution, judged arm) of a gpu_step.py / gpu_zimage.py / gpu_flux2_klein.py result file."""
    checks = []
    for row in data["results"]:
        resolution = row["resolution"]
        floor = FAMILIES[family].floor(resolution, cached=arm == "zero_prior")
        for name, goal in ((arm, STEP_GOALS.get(resolution)), ("zero_prior_pivot", 1.0 + PIVOT_TOLERANCE)):
            ratio = row["step_ratios"][name]
            checks.append({"family": family, "resolution": resolution, "arm": name, "step_ratio": round(ratio, 4),
                           "peak_ratio": round(row["peak_ratios"][name], 4), "goal": goal,
                           "floor": round(floor, 4) if name == arm else 1.0,
                           "verdict": "not judged" if goal is None or data["device"] == "cpu" else
                           "PASS" if ratio <= goal else "FAIL"})
    return checks


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    summary: dict[str, Any] = {"goals": {"step_ratio": STEP_GOALS, "pivot": 1.0, "pivot_tolerance": PIVOT_TOLERANCE,
                                         "gpu_24gb": "fits in 24 GiB"}, "checks": [], "missing": []}
    for name, family, arm in STEP_FILES:
        path = folder / name
        if not path.exists():
            summary["missing"].append(name)
            continue
        data = json.loads(path.read_text())
        summary.setdefault("device", data["device"])
        summary[family] = data
        summary["checks"].extend(step_checks(data, family, arm))
    memory = folder / "gpu_24gb.json"
    if memory.exists():
        summary["gpu_24gb"] = json.loads(memory.read_text())
        summary["checks"].append({"family": "qwen_image", "check": "24 GB recipe",
                                  "verdict": summary["gpu_24gb"]["verdict"]})
    else:
        summary["missing"].append("gpu_24gb.json")
    verdicts = [check["verdict"] for check in summary["checks"]]
    summary["verdict"] = ("FAIL" if "FAIL" in verdicts or summary["missing"] else
                          "PASS" if "PASS" in verdicts and summary.get("device", "cpu") != "cpu" else "not judged")
    (folder / "gpu.json").write_text(json.dumps(summary, indent=2))
    for check in summary["checks"]:
        print(json.dumps(check))
    print(f"missing: {summary['missing']}" if summary["missing"] else "", f"verdict: {summary['verdict']}")
    sys.exit(1 if summary["verdict"] == "FAIL" else 0)


if __name__ == "__main__":
    main()
