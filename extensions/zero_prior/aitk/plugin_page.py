"""The token's health as ai-toolkit's web UI shows it: ``<training_folder>/<name>/plugin.html`` (the Plugin tab).

The UI serves that file as it is into a sandboxed iframe, so the page is one
self-contained document: no script, no network, inline CSS and an inline SVG
norm curve; every text from the run (the token, vocabulary pieces) is escaped.
The trainer feeds a ``TokenHealth`` at each log step, pivot and save and
rewrites the page atomically, so the UI never reads half a file.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..fileio import write_text_atomic

PLUGIN_FILE = "plugin.html"  # the name the UI's /api/jobs/<id>/plugin route reads
MAX_CURVE_POINTS = 400  # a long run keeps its page small: the curve is thinned, the nearest-token table cut
MAX_NEAREST_ROWS = 40


@dataclass
class NearestRow:
    """Consecutive log steps whose nearest vocabulary tokens were the same."""

    first_step: int
    last_step: int
    tokens: list[str]


@dataclass
class TokenHealth:
    """What the page shows for one placeholder during the current run."""

    token: str
    token_ids: list[int]
    init: str
    verify_text_encoder: bool
    norms: list[tuple[int, list[float]]] = field(default_factory=list)  # (step, norm per vector)
    nearest: list[NearestRow] = field(default_factory=list)  # the first vector's neighbours
    pivot_step: int | None = None
    last_save_step: int | None = None
    text_encoder_unchanged: tuple[int, bool] | None = None  # (step checked, sha256 equal to the start)

    def add_log_step(self, step: int, norms: list[float], nearest: list[str]) -> None:
        """Record one log step (a repeated step, e.g. the pivot's, replaces the earlier entry)."""
        if self.norms and self.norms[-1][0] == step:
            self.norms.pop()
        self.norms.append((step, norms))
        last = self.nearest[-1] if self.nearest else None
        if last is not None and last.tokens == nearest:
            last.last_step = step
        else:
            self.nearest.append(NearestRow(step, step, nearest))


def write_plugin_page(save_root: str | os.PathLike[str], health: list[TokenHealth]) -> Path:
    """Rewrite ``save_root/plugin.html`` atomically from ``health``; return its path.

    Example::

        write_plugin_page("output/my_job", [TokenHealth("<zwx>", [151665], "zero_prior", False)])
    """
    return write_text_atomic(Path(save_root) / PLUGIN_FILE, render_page(health))


def render_page(health: list[TokenHealth]) -> str:
    """The whole HTML document."""
    body = "\n".join(_section(item) for item in health)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>zero-prior</title><style>"
        "body{font:14px sans-serif;color:#ddd;background:#111;margin:1em}"
        "table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #333}"
        "code{color:#9cf}svg{background:#1b1b1b}"
        f"</style></head><body>\n{body}\n</body></html>\n"
    )


def _section(item: TokenHealth) -> str:
    esc = html.escape
    last = item.norms[-1] if item.norms else None
    facts = [
        ("token", f"<code>{esc(item.token)}</code>"),
        ("token ids", esc(", ".join(str(i) for i in item.token_ids))),
        ("init", esc(item.init)),
        ("norm now", "not logged yet" if last is None
         else f"{', '.join(f'{n:.4g}' for n in last[1])} (step {last[0]})"),
        ("pivot", "not set or not reached" if item.pivot_step is None
         else f"at step {item.pivot_step}: the vector is frozen, the text encoder unloaded"),
        ("last save", "none in this run" if item.last_save_step is None else f"step {item.last_save_step}"),
    ]
    if item.verify_text_encoder:
        check = item.text_encoder_unchanged
        facts.append(("text encoder", "not checked yet (at the first save)" if check is None else
                      f"{'unchanged' if check[1] else 'CHANGED'} at step {check[0]} (sha256 against the start)"))
    rows = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in facts)
    return (f"<h2>zero-prior placeholder <code>{esc(item.token)}</code></h2>\n<table>{rows}</table>\n"
            f"<h3>norm</h3>\n{_curve(item.norms)}\n<h3>nearest vocabulary tokens</h3>\n{_nearest(item.nearest)}")


def _curve(norms: list[tuple[int, list[float]]], width: int = 600, height: int = 160) -> str:
    """An inline SVG of the first vector's norm by step (thinned to ``MAX_CURVE_POINTS``)."""
    if len(norms) < 2:
        return "<p>after two log steps</p>"
    stride = -(-len(norms) // MAX_CURVE_POINTS)
    points = [(step, values[0]) for step, values in norms[::stride]]
    if points[-1][0] != norms[-1][0]:
        points.append((norms[-1][0], norms[-1][1][0]))
    (x0, x1), top = (points[0][0], points[-1][0]), max(value for _, value in points) or 1.0
    pad = 30
    path = " ".join(
        f"{pad + (width - 2 * pad) * (step - x0) / max(x1 - x0, 1):.1f},"
        f"{height - pad - (height - 2 * pad) * value / top:.1f}" for step, value in points
    )
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<polyline fill="none" stroke="#6cf" stroke-width="2" points="{path}"/>'
            f'<text x="{pad}" y="{pad - 8}" fill="#aaa" font-size="12">max {top:.4g}</text>'
            f'<text x="{pad}" y="{height - 8}" fill="#aaa" font-size="12">step {x0}</text>'
            f'<text x="{width - pad}" y="{height - 8}" fill="#aaa" font-size="12" text-anchor="end">step {x1}</text>'
            "</svg>")


def _nearest(rows: list[NearestRow]) -> str:
    if not rows:
        return "<p>not logged yet</p>"
    shown = rows[-MAX_NEAREST_ROWS:]
    cut = f"<p>{len(rows) - len(shown)} earlier rows left out</p>" if len(shown) < len(rows) else ""
    body = "".join(
        f"<tr><td>{row.first_step}" + (f"&ndash;{row.last_step}" if row.last_step != row.first_step else "")
        + f"</td><td>{html.escape(', '.join(row.tokens))}</td></tr>" for row in shown
    )
    return f"{cut}<table><tr><th>steps</th><th>closest first</th></tr>{body}</table>"
