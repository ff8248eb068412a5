"""ai-toolkit's web UI database, as far as a training job sees it: the ``Job`` table of ``ui/prisma/schema.prisma``.

The table is built from the checkout's own schema file at test time (never a
copied schema), with the column types, defaults and NOT NULLs Prisma gives
SQLite, so a schema change in ai-toolkit shows up here. Rows are created and
started the way ``ui/src/app/api/jobs/route.ts`` and
``ui/cron/actions/startJob.ts`` do it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

SCHEMA = Path("ui") / "prisma" / "schema.prisma"
# Prisma's SQLite column types (a type not listed fails the test: the schema changed in a way to look at).
COLUMN_TYPES = {"String": "TEXT", "Int": "INTEGER", "Boolean": "BOOLEAN", "DateTime": "DATETIME"}
FIELD = re.compile(r"^(\w+)\s+(\w+)(\?)?\s*(.*)$")
DEFAULT = re.compile(r"@default\((.*?)\)(?:\s|$)")


def job_table_sql(ai_toolkit: Path) -> str:
    """``CREATE TABLE "Job"`` from the ``model Job`` block of the checkout's ``schema.prisma``."""
    text = (ai_toolkit / SCHEMA).read_text(encoding="utf-8")
    block = re.search(r"^model Job \{(.*?)^\}", text, re.S | re.M)
    assert block is not None, f"no 'model Job' in {ai_toolkit / SCHEMA}"
    columns = []
    for raw in block.group(1).splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line or line.startswith("@@"):
            continue
        match = FIELD.match(line)
        assert match is not None, f"unreadable field in {SCHEMA}: {raw!r}"
        name, kind, optional, attributes = match.groups()
        assert kind in COLUMN_TYPES, f"{SCHEMA}: Job.{name} has type {kind}, unknown to this test"
        column = f'"{name}" {COLUMN_TYPES[kind]}' + ("" if optional else " NOT NULL")
        if "@id" in attributes:
            column += " PRIMARY KEY"
        if "@unique" in attributes:
            column += " UNIQUE"
        default = DEFAULT.search(attributes)
        if default is not None and default.group(1) not in ("uuid()", "cuid()"):  # made by the client
            value = default.group(1)
            column += " DEFAULT " + ("CURRENT_TIMESTAMP" if value == "now()" else value.replace('"', "'"))
        columns.append(column)
    return 'CREATE TABLE "Job" (\n  ' + ",\n  ".join(columns) + "\n)"


def create_database(ai_toolkit: Path, path: Path) -> Path:
    """A new SQLite file holding the UI's ``Job`` table."""
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute(job_table_sql(ai_toolkit))
    return path


def new_job_id() -> str:
    """A job id as Prisma makes it (``@default(uuid())``)."""
    return str(uuid.uuid4())


def add_started_job(database: Path, job_id: str, name: str, job_config: dict[str, Any]) -> None:
    """Insert a job as the New Job page saves it and mark it started as ``startJob`` does."""
    with closing(sqlite3.connect(database)) as connection, connection:
        connection.execute(
            "INSERT INTO Job (id, name, gpu_ids, job_config, updated_at, queue_position) VALUES (?, ?, ?, ?, "
            "CURRENT_TIMESTAMP, 1000)", (job_id, name, "0", json.dumps(job_config)))
        connection.execute("UPDATE Job SET status = 'running', stop = false, return_to_queue = false, "
                           "info = 'Starting job...' WHERE id = ?", (job_id,))


def read_job(database: Path, job_id: str) -> dict[str, Any]:
    """The job's row as a dict (a fresh connection each time, as the UI reads it)."""
    with closing(sqlite3.connect(database, timeout=30.0)) as connection:
        connection.row_factory = sqlite3.Row
        row = connection.execute("SELECT * FROM Job WHERE id = ?", (job_id,)).fetchone()
    assert row is not None, f"job {job_id} is gone from {database}"
    return dict(row)


def set_flag(database: Path, job_id: str, flag: str) -> None:
    """What the job page's buttons do to the row: ``stop``, ``save_now`` or ``sample_now`` = true."""
    assert flag in ("stop", "save_now", "sample_now")
    with closing(sqlite3.connect(database, timeout=30.0)) as connection, connection:
        connection.execute(f"UPDATE Job SET {flag} = true WHERE id = ?", (job_id,))
