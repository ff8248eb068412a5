"""Reading ai-toolkit's per-step database (``loss_log.db``, written by its ``UILogger``).

Its ``metrics`` table has one row per (step, key) with ``value_real`` for
numbers and ``value_text`` for anything else (toolkit/logging_aitk.py).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import ExperimentError


def read_step_log(database: Path) -> dict[str, list[tuple[int, float]]]:
    """``key -> [(step, value)]`` of every numeric value in an ai-toolkit ``loss_log.db`` (opened read-only)."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT key, step, value_real FROM metrics WHERE value_real IS NOT NULL ORDER BY key, step").fetchall()
    except sqlite3.DatabaseError as error:
        raise ExperimentError(
            f"{database} is not a readable ai-toolkit step log ({error}); delete it or rerun the arm"
        ) from None
    finally:
        connection.close()
    curves: dict[str, list[tuple[int, float]]] = {}
    for key, step, value in rows:
        curves.setdefault(key, []).append((int(step), float(value)))
    return curves
