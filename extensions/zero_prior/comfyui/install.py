"""Put the custom node into a ComfyUI checkout (and take it out again).

ComfyUI imports every package in ``custom_nodes/``, so installing is linking
(or copying) this package to ``COMFYUI/custom_nodes/zero_prior``
(``plugin_folder``, the same step as for ai-toolkit). Idempotent; anything
at that place that zero-prior did not put there is refused; no ComfyUI file
is modified.
"""

from __future__ import annotations

from pathlib import Path

from ..plugin_folder import PLUGIN_NAME, InstallReport, check_free, place, take_out
from .checkout import TESTED_COMMIT, check_comfyui


def node_target(comfyui: Path) -> Path:
    """Where the custom node goes in a checkout."""
    return comfyui / "custom_nodes" / PLUGIN_NAME


def install(comfyui: str | Path, copy: bool = False) -> InstallReport:
    """Link (default) or copy the package into ``comfyui/custom_nodes/zero_prior``; restart ComfyUI afterwards."""
    root = Path(comfyui).expanduser().resolve()
    report = InstallReport("ComfyUI", root, check_comfyui(root), TESTED_COMMIT, "the node")
    target = node_target(root)
    check_free(target)
    report.actions.append(place(target, copy))
    report.actions.append('restart ComfyUI; the node is "Load zero-prior LoRA" (loaders)')
    return report


def uninstall(comfyui: str | Path) -> InstallReport:
    """Remove the custom node, if (and only if) zero-prior put it there."""
    root = Path(comfyui).expanduser().resolve()
    report = InstallReport("ComfyUI", root, check_comfyui(root), TESTED_COMMIT, "the node")
    report.actions.append(take_out(node_target(root)) or "nothing to remove")
    return report
