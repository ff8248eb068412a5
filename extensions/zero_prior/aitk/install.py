"""Put the extension into an ai-toolkit checkout (and take it out again).

ai-toolkit discovers extensions by importing every package under its
``extensions/`` folder, so installing is: link (or copy) this package folder
to ``AITK/extensions/zero_prior`` and drop the example configs into
``AITK/config/``. Every step is idempotent, refuses to overwrite anything it
did not write, and ``uninstall`` removes exactly what ``install`` added.
No ai-toolkit file is modified: the extension works by subclassing only.
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

from zero_prior.config_examples import example_path  # package data, mapped by setup.py

from ..errors import InstallError
from ..plugin_folder import InstallReport, check_free, place, take_out
from .checkout import EXTENSION_NAME, TESTED_COMMIT, check_ai_toolkit

CONFIG_FILES = ("zero_prior.yaml", "zero_prior_baseline.yaml", "zero_prior_24gb.yaml", "zero_prior_zimage.yaml")


def install(ai_toolkit: str | Path, copy: bool = False) -> InstallReport:
    """Link (default) or copy the extension into ``ai_toolkit`` and add the example configs."""
    root = Path(ai_toolkit).expanduser().resolve()
    report = InstallReport("ai-toolkit", root, check_ai_toolkit(root), TESTED_COMMIT, "zero-prior")
    target = root / "extensions" / EXTENSION_NAME
    configs = [(example_path(name), root / "config" / name) for name in CONFIG_FILES]
    for source, dest in configs:  # check everything before writing anything
        if dest.exists() and not filecmp.cmp(source, dest, shallow=False):
            raise InstallError(f"{dest} exists and differs from zero-prior's example; move it away first")
    check_free(target)
    report.actions.append(place(target, copy))
    for source, dest in configs:
        if dest.exists():
            report.actions.append(f"already present: {dest}")
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
            report.actions.append(f"wrote {dest}")
    return report


def uninstall(ai_toolkit: str | Path) -> InstallReport:
    """Remove the extension and the example configs, if (and only if) zero-prior put them there."""
    root = Path(ai_toolkit).expanduser().resolve()
    report = InstallReport("ai-toolkit", root, check_ai_toolkit(root), TESTED_COMMIT, "zero-prior")
    target = root / "extensions" / EXTENSION_NAME
    done = take_out(target)
    if done is not None:
        report.actions.append(done)
    for name in CONFIG_FILES:
        dest = root / "config" / name
        if dest.exists() and filecmp.cmp(example_path(name), dest, shallow=False):
            dest.unlink()
            report.actions.append(f"removed {dest}")
        elif dest.exists():
            report.actions.append(f"left {dest}: edited since install")
    if not report.actions:
        report.actions.append("nothing to remove")
    return report
