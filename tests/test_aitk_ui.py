"""A zero-prior job run as ai-toolkit's web UI runs it, without the UI: the job row, the Loss Graph, the Plugin tab.

The UI's worker (``ui/cron/actions/startJob.ts``) writes
``<training_folder>/<name>/.job_config.json`` with ``sqlite_db_path`` and runs
``run.py`` on it with ``AITK_JOB_ID`` and ``IS_AI_TOOLKIT_UI=1``; the job page
then reads the ``Job`` row, ``loss_log.db`` and ``plugin.html``, and its
buttons set ``stop`` / ``save_now`` / ``sample_now`` in the row. Here the
database is built from the checkout's own ``schema.prisma`` and a thread
plays the user's part. One ``run.py -r`` holds three jobs sharing one job id
(each job its own database file, as each UI start gets a fresh row):
a refused config, a job that is saved, sampled and stopped from the row, and
the same job started again, which resumes from that save and completes.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aitk_cases import TOKEN, set_key
from aitk_jobs import JOB, Run, job_config, run_jobs
from aitk_ui_db import add_started_job, create_database, new_job_id, read_job, set_flag

from zero_prior.aitk.launch import stage_ai_toolkit
from zero_prior.aitk.step_log import read_step_log
from zero_prior.testbed import make_subject_dataset
from zero_prior.weights.format import METADATA_KEY, read_header

STEPS = 12
ASK_AT_STEP = 2  # the "user" presses Save now and Sample now once the row shows this step
QWEN_TOKEN_ID = 151665


def ui_job(process: dict) -> None:
    """What every job the UI creates or imports carries (``ui/src/app/jobs/new/page.tsx``)."""
    process["logging"] = {"log_every": 1, "use_ui_logger": True}
    process["performance_log_every"] = 10
    process["train"]["steps"] = STEPS
    process["save"]["save_every"] = 1000  # only Save now saves before the end
    process["sample"]["sample_every"] = 1000  # only Sample now samples before the end


@dataclass
class User:
    """A thread in the test playing the job page: watches the row, presses Save now + Sample now, then Stop."""

    database: Path
    job_id: str
    save_root: Path
    seen: list[tuple[str, str]] = field(default_factory=list)  # (status, info) as they changed
    pressed: dict[str, int] = field(default_factory=dict)  # button -> the row's step when pressed
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._watch, daemon=True)
        thread.start()
        return thread

    def _watch(self) -> None:
        while not self.done.is_set():
            row = read_job(self.database, self.job_id)
            if not self.seen or self.seen[-1] != (row["status"], row["info"]):
                self.seen.append((row["status"], row["info"]))
            if row["status"] != "running":
                return
            if "save" not in self.pressed and row["step"] >= ASK_AT_STEP:
                set_flag(self.database, self.job_id, "save_now")
                set_flag(self.database, self.job_id, "sample_now")
                self.pressed["save"] = row["step"]
            elif "save" in self.pressed and "stop" not in self.pressed and not row["save_now"] \
                    and not row["sample_now"] and row["info"] == "Training" and _images(self.save_root):
                set_flag(self.database, self.job_id, "stop")  # the route also sends SIGINT; the flag alone is tested
                self.pressed["stop"] = row["step"]
            time.sleep(0.02)


@dataclass
class UiRuns:
    output: str
    save_root: Path
    job_id: str
    databases: dict[str, Path]
    user: User

    def row(self, name: str) -> dict[str, Any]:
        return read_job(self.databases[name], self.job_id)


@pytest.fixture(scope="module")
def ui_runs(ai_toolkit_checkout: Path, tmp_path_factory: pytest.TempPathFactory, tiny_pipeline_dir: Path) -> UiRuns:
    work = tmp_path_factory.mktemp("ui")
    root = stage_ai_toolkit(ai_toolkit_checkout, work / "staged")
    dataset = make_subject_dataset(work / "subject", num_images=4, size=64, seed=0)[0].parent
    job_id = new_job_id()
    refuse = set_key("train", "cache_text_embeddings", value=True)
    changes = {"refused": refuse, "stopped": None, "started_again": None}
    databases, paths = {}, []
    for name, change in changes.items():
        folder = work / ("refused" if name == "refused" else "training")

        def apply(process: dict, change: Any = change) -> None:
            ui_job(process)
            if change is not None:
                change(process)

        config = job_config(tiny_pipeline_dir, dataset, folder, apply)
        databases[name] = create_database(ai_toolkit_checkout, work / f"{name}.db")
        add_started_job(databases[name], job_id, JOB, config)
        config["config"]["process"][0]["sqlite_db_path"] = str(databases[name])
        # startJob.ts writes <training_folder>/<name>/.job_config.json; the second start would overwrite the
        # first one's, which run.py has read by then, so it gets a file of its own here.
        path = work / f"{name}.job_config.json" if name != "stopped" else folder / JOB / ".job_config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        paths.append(path)
    save_root = work / "training" / JOB
    user = User(databases["stopped"], job_id, save_root)
    thread = user.start()
    try:
        output = run_jobs(root, paths, recover=True, env={"AITK_JOB_ID": job_id, "IS_AI_TOOLKIT_UI": "1"})
    finally:
        user.done.set()
        thread.join()
    return UiRuns(output, save_root, job_id, databases, user)


def _images(save_root: Path) -> list[Path]:
    return sorted((save_root / "samples").glob("*.jpg")) if (save_root / "samples").is_dir() else []


def test_a_refused_setting_ends_the_job_with_its_name_in_the_row(ui_runs: UiRuns) -> None:
    row = ui_runs.row("refused")
    assert row["status"] == "error"
    assert row["info"].startswith("config.process[0].train.cache_text_embeddings: True cannot be used"), row["info"]
    assert not (ui_runs.save_root.parent.parent / "refused" / JOB / "config.yaml").exists()


def test_save_now_sample_now_and_stop_from_the_row(ui_runs: UiRuns) -> None:
    user, row = ui_runs.user, ui_runs.row("stopped")
    assert ("running", "Training") in user.seen, user.seen
    assert set(user.pressed) == {"save", "stop"}, (user.pressed, user.seen, ui_runs.output[-3000:])
    assert (row["status"], row["info"]) == ("stopped", "Job stopped")
    saved = int(re.search(r"Saving at step (\d+)", ui_runs.output).group(1))
    assert f"Sampling at step {saved}" in ui_runs.output
    assert ASK_AT_STEP <= saved < STEPS - 1 and row["step"] == saved  # the row falls back to the last save
    assert Run("", ui_runs.save_root).step(saved).exists()
    assert any(f"__{saved:09d}_" in image.name for image in _images(ui_runs.save_root))


def test_started_again_it_resumes_the_saved_vector_and_completes(ui_runs: UiRuns) -> None:
    row, run = ui_runs.row("started_again"), Run("", ui_runs.save_root)
    assert (row["status"], row["info"]) == ("completed", "Training completed")
    assert row["step"] == STEPS
    assert re.fullmatch(r"\d+\.\d\d (iter/sec|sec/iter)", row["speed_string"]), row["speed_string"]
    saved = ui_runs.row("stopped")["step"]
    stored = json.loads(read_header(run.step(saved))[METADATA_KEY])["placeholders"][0]["vectors"]["sha256"]
    assert (f"restored placeholder '{TOKEN}' from {run.step(saved).name} (step {saved}), vector sha256 {stored}"
            in ui_runs.output)
    assert run.final.exists()


def test_the_loss_graph_gets_the_placeholder_metrics(ui_runs: UiRuns) -> None:
    database = ui_runs.save_root / "loss_log.db"
    with closing(sqlite3.connect(database)) as connection:  # the series the Loss Graph lists
        keys = [key for (key,) in connection.execute("SELECT key FROM metric_keys ORDER BY key")]
    assert [key for key in keys if key.startswith("placeholder/")] == \
        [f"placeholder/{TOKEN}/{metric}" for metric in ("cosine_to_initial", "grad_norm", "norm")]  # no text
    curves = read_step_log(database)
    for metric in ("norm", "grad_norm", "cosine_to_initial"):
        steps = [step for step, _ in curves[f"placeholder/{TOKEN}/{metric}"]]
        assert steps[-1] == STEPS - 1 and len(steps) >= STEPS - 3, (metric, steps)
    assert all(value > 0 for _, value in curves[f"placeholder/{TOKEN}/grad_norm"])


def test_the_plugin_tab_page_shows_the_token_health(ui_runs: UiRuns) -> None:
    page = (ui_runs.save_root / "plugin.html").read_text(encoding="utf-8")
    assert html.escape(TOKEN) in page and TOKEN not in page  # escaped everywhere
    assert str(QWEN_TOKEN_ID) in page and "zero_prior" in page
    assert f"<tr><th>last save</th><td>step {STEPS}</td></tr>" in page
    assert f"unchanged at step {STEPS}" in page  # verify_text_encoder is on in tiny_cpu.yaml
    assert "<polyline" in page and "<script" not in page and "http" not in page  # nothing from the network
