"""The Plugin tab page (``zero_prior.aitk.plugin_page``) and the UI row on a refusal (``zero_prior.aitk.ui_job``).

The page is checked in the run the UI's way in ``test_aitk_ui.py``; here are
the promises a short run does not reach: escaping of every text from the run,
the size bound of a long run, the pivot and a changed encoder, and that
outside the UI a refusal writes nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from zero_prior.aitk.plugin_page import MAX_CURVE_POINTS, MAX_NEAREST_ROWS, TokenHealth, render_page, write_plugin_page
from zero_prior.aitk.ui_job import JOB_ID_ENV, record_refusal


def _health(steps: int, token: str = "<zwx>") -> TokenHealth:
    health = TokenHealth(token, [151665], "zero_prior", verify_text_encoder=True)
    for step in range(steps):
        health.add_log_step(step, [0.001 * (step + 1)], ["' person'", f"'<b>{step // 3}'"])
    return health


def test_every_text_from_the_run_is_escaped_and_nothing_is_fetched() -> None:
    page = render_page([_health(4, token='<script>alert("x")</script>')])
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "<b>" not in page and "&lt;b&gt;0" in page
    assert "http" not in page and "<link" not in page and "<img" not in page


def test_repeated_neighbours_share_a_row_and_a_long_run_stays_small() -> None:
    short = render_page([_health(6)])
    assert "<td>0&ndash;2</td>" in short and "<td>3&ndash;5</td>" in short
    long_run = _health(20000)
    page = render_page([long_run])
    points = page.split('points="')[1].split('"')[0].split()
    assert len(points) <= MAX_CURVE_POINTS + 1 and points[-1].startswith("570.0,")  # the last step is kept
    assert page.count("&ndash;") == MAX_NEAREST_ROWS and f"{-(-20000 // 3) - MAX_NEAREST_ROWS} earlier rows" in page
    assert len(page) < 40_000


def test_the_pivot_the_last_save_and_a_changed_encoder_are_shown() -> None:
    health = _health(3)
    assert "not checked yet" in render_page([health])
    health.pivot_step, health.last_save_step, health.text_encoder_unchanged = 2, 3, (3, False)
    page = render_page([health])
    assert "at step 2: the vector is frozen" in page and "<td>step 3</td>" in page and "CHANGED at step 3" in page


def test_the_page_is_replaced_whole(tmp_path: Path) -> None:
    write_plugin_page(tmp_path, [_health(2)])
    path = write_plugin_page(tmp_path, [_health(5)])
    assert path == tmp_path / "plugin.html" and "norm now</th><td>0.005 (step 4)" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plugin.html"]


def test_a_refusal_outside_the_ui_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    database = tmp_path / "aitk_db.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE Job (id TEXT, status TEXT, info TEXT)")  # only the columns written
        connection.execute("INSERT INTO Job VALUES ('job', 'running', 'Starting job...')")
    monkeypatch.delenv(JOB_ID_ENV, raising=False)
    assert not record_refusal({"sqlite_db_path": str(database)}, "refused")
    monkeypatch.setenv(JOB_ID_ENV, "job")
    assert not record_refusal({"sqlite_db_path": str(tmp_path / "missing.db")}, "refused")
    assert not (tmp_path / "missing.db").exists()
    assert record_refusal({"sqlite_db_path": str(database)}, "refused: fix it")
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT status, info FROM Job").fetchall() == [("error", "refused: fix it")]


def test_a_database_that_refuses_the_write_does_not_hide_the_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture) -> None:
    database = tmp_path / "aitk_db.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE Other (id TEXT)")  # no Job table: the UPDATE fails
    monkeypatch.setenv(JOB_ID_ENV, "job")
    assert not record_refusal({"sqlite_db_path": str(database)}, "train.steps: must be a number")
    err = capsys.readouterr().err
    assert "could not mark UI job job as failed" in err and "the job was refused: train.steps: must be a number" in err
