"""Where every file of an experiment lives, and its log (``experiment_log.json``).

An experiment's output folder holds ``jobs/`` (one ai-toolkit job per arm),
``logs/`` (their output), ``runs/`` (ai-toolkit's training folder),
``images/`` (what the evaluation generated), ``metrics.json``, ``report.md``
and ``experiment_log.json``, which records every command, the versions, the
seeds and the sha256 of every input and output, and is rewritten atomically
after each step so a failure leaves a log that says how far it got.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..aitk.datasets import find_images
from ..errors import ExperimentError
from ..fileio import write_text_atomic
from .arms import PROCESS
from .spec import ExperimentSpec

LOG_FILE = "experiment_log.json"
JOBS_FOLDER = "jobs"
LOGS_FOLDER = "logs"
IMAGES_FOLDER = "images"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"


def subject_folders(spec: ExperimentSpec) -> list[Path]:
    """The subject's image folders (non-regularisation datasets of the base job); they must exist."""
    folders = []
    for index, dataset in enumerate(spec.base_job["config"]["process"][0]["datasets"]):
        if dataset.get("is_reg"):
            continue
        folder = Path(str(dataset.get("folder_path", "")))
        if not folder.is_dir():
            raise ExperimentError(f"{PROCESS}.datasets[{index}].folder_path {str(folder)!r} is not a folder; "
                                  "point it at the subject's images")
        folders.append(folder.resolve())
    return folders


def training_images(spec: ExperimentSpec) -> list[Path]:
    """Every subject image the arms train on: the references of CLIP-I, DINO and prior leak."""
    return [image for folder in subject_folders(spec) for image in find_images(folder)]


def read_log(output_dir: Path) -> dict[str, Any]:
    """The experiment log so far, or an empty one (``zero-prior evaluate`` on runs made elsewhere)."""
    path = output_dir / LOG_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_log(output_dir: Path, log: Mapping[str, Any]) -> Path:
    """Rewrite ``experiment_log.json`` atomically (a crash never leaves half a file)."""
    return write_text_atomic(output_dir / LOG_FILE, json.dumps(log, indent=2, sort_keys=True) + "\n")


def relative(path: Path, root: Path) -> str:
    """A path inside the output folder relative to it; anything else by its absolute path."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)
