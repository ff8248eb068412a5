"""ai-toolkit's web UI job row, for the one case ai-toolkit's code cannot write: a refusal before the trainer exists.

The UI (``ui/cron/actions/startJob.ts``) runs ``run.py`` with
``process[0].sqlite_db_path`` set and ``AITK_JOB_ID`` in the environment;
ai-toolkit's ``DiffusionTrainer`` (our trainer's base) then keeps the ``Job``
row of ``ui/prisma/schema.prisma`` up to date and turns an error into
``status: error`` with the message in ``info``. The config checks run before
that base is constructed (nothing may be written before them), so a refused
config would otherwise reach the UI only as "Job process terminated with exit
code 1". ``record_refusal`` writes the row the way the base would.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Mapping
from contextlib import closing
from typing import Any

JOB_ID_ENV = "AITK_JOB_ID"
DB_PATH_KEY = "sqlite_db_path"
DEFAULT_DB_PATH = "./aitk_db.db"  # DiffusionTrainer's default, relative to run.py's folder


def ui_job_row(process: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(database, job id)`` when ``process`` runs as a UI job, by the base's rule: the file exists, the id is set."""
    job_id = os.environ.get(JOB_ID_ENV)
    database = process.get(DB_PATH_KEY, DEFAULT_DB_PATH)
    if job_id is None or not os.path.exists(database):
        return None
    return database, job_id.strip()


def record_refusal(process: Mapping[str, Any], message: str) -> bool:
    """Mark the UI job of ``process`` as ``error`` with ``message``; False (nothing written) outside the UI
    or when the database refuses the write (said on stderr, so the refusal is not hidden behind it).

    Example::

        record_refusal(config, "train.train_placeholder_token is required")
    """
    row = ui_job_row(process)
    if row is None:
        return False
    database, job_id = row
    try:
        with closing(sqlite3.connect(database, timeout=30.0)) as connection, connection:
            connection.execute("UPDATE Job SET status = ?, info = ? WHERE id = ?", ("error", message, job_id))
    except sqlite3.Error as error:  # the refusal itself must still reach the log, not a database traceback
        print(f"zero-prior: could not mark UI job {job_id} as failed in {database} ({error}); the job was refused: "
              f"{message}", file=sys.stderr)
        return False
    return True
