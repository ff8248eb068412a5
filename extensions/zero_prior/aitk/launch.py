"""Run ai-toolkit's own ``run.py`` with this extension, without installing it into the checkout.

Tests, the demo, the experiment, the Cog trainer and the benchmarks must
exercise the real ``python run.py`` while leaving the user's ai-toolkit
checkout exactly as it is. ai-toolkit finds extensions under
``TOOLKIT_ROOT/extensions``, and ``TOOLKIT_ROOT`` comes from the *unresolved*
absolute path of ``toolkit/paths.py``. So a staging folder holding a symlink to
every top-level entry of the checkout, a copy of ``run.py`` (a symlinked
script would put the real checkout first on ``sys.path``) and its own
``extensions/`` (the checkout's extensions plus a link to this package) is a
complete ai-toolkit root that sees the extension. ``run_ai_toolkit`` is the one
way this package starts ``run.py``; ``run_jobs`` is the whole sequence (stage,
write the job files, run, stop with the log's tail on failure). Nothing here
imports ai-toolkit.
"""

from __future__ import annotations

import codecs
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import AiToolkitError
from ..yaml_reader import fill_fields
from .checkout import EXTENSION_NAME, package_dir

# The staged extension that gives ai-toolkit's FLUX.2 loader the tiny test bed's sizes.
TESTBED_EXTENSION = "zero_prior_testbed"
# The file in a tiny model folder that names those sizes (testbed/flux2_bfl.py writes it).
TESTBED_SIZES_FILE = "aitk_sizes.json"
# Output kept in memory for the tail when it is not captured whole.
TAIL_BYTES = 64 * 1024


def stage_ai_toolkit(ai_toolkit: Path, folder: Path, extensions: Mapping[str, Path] | None = None) -> Path:
    """Build the staged ai-toolkit root described above inside ``folder`` and return it.

    ``extensions`` adds more extension folders by name (the tests' probe).
    The test bed's FLUX.2 sizes (``aitk/runtime/testbed_sizes``) are always
    staged, so the tiny FLUX.2 [klein] trains wherever zero-prior starts
    ``run.py``; they change nothing for any other model folder.
    Delete ``folder`` to undo; the checkout is never written to.
    """
    root = Path(folder) / "ai-toolkit"
    root.mkdir(parents=True)
    for entry in sorted(ai_toolkit.iterdir()):
        if entry.name not in ("extensions", "run.py"):
            (root / entry.name).symlink_to(entry)
    shutil.copyfile(ai_toolkit / "run.py", root / "run.py")
    staged = root / "extensions"
    staged.mkdir()
    for entry in sorted((ai_toolkit / "extensions").iterdir()):
        if entry.name != EXTENSION_NAME:  # an installed copy or link is replaced by this package
            (staged / entry.name).symlink_to(entry)
    testbed = {TESTBED_EXTENSION: package_dir() / "aitk" / "runtime" / "testbed_sizes"}
    for name, source in {EXTENSION_NAME: package_dir(), **testbed, **(extensions or {})}.items():
        (staged / name).symlink_to(source, target_is_directory=True)
    return root


def load_config_template(path: str | os.PathLike[str], values: Mapping[str, str]) -> dict[str, Any]:
    """Read a YAML config whose ``${NAME}`` fields (paths) are filled from ``values``.

    Example::

        load_config_template("config_examples/tiny_cpu.yaml", {"MODEL_PATH": "/m", ...})
    """
    return yaml.safe_load(fill_fields(Path(path).read_text(encoding="utf-8"), values, str(path)))


def write_config(config: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``config`` as a YAML file ``run.py`` can read, and return its path."""
    path = Path(path)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


def run_ai_toolkit(
    root: Path,
    configs: Sequence[str | os.PathLike[str]],
    recover: bool = False,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    launcher: Sequence[str] = (),
    log_path: Path | None = None,
    echo: bool = False,
    capture: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``python [LAUNCHER...] run.py [-r] CONFIG...`` in ``root`` with this interpreter.

    Its output (stdout and stderr, interleaved as written) is copied as it
    comes to ``log_path`` and, with ``echo``, to the console; progress-bar
    redraws pass through at once. The result's ``stdout`` holds all of it
    (``capture``) or only its last ``TAIL_BYTES`` (for runs of hours).
    ``recover`` (ai-toolkit's ``-r``) lets later configs run after one fails,
    so several short jobs can share one start-up (about 20 s of imports).
    ``launcher`` starts ``run.py`` through a module, e.g.
    ``["-m", "torch.distributed.run", "--nproc_per_node", "2"]`` for two ranks.
    Past ``timeout`` seconds the process is killed and ``TimeoutExpired`` raised.
    """
    command = [sys.executable, *launcher, "run.py", *(["-r"] if recover else []), *(str(c) for c in configs)]
    process = subprocess.Popen(command, cwd=root, env={**os.environ, **(env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    timer = threading.Timer(timeout, process.kill) if timeout is not None else None
    if timer is not None:
        timer.start()
    kept = bytearray()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    log_file = None
    try:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = open(log_path, "wb")
            log_file.write(f"$ {' '.join(command)}\n".encode())
        # Chunks, not lines: tqdm redraws with carriage returns, which a line reader would hold back.
        while chunk := os.read(process.stdout.fileno(), 65536):
            kept += chunk
            if not capture and len(kept) > TAIL_BYTES:
                del kept[:-TAIL_BYTES]
            if log_file is not None:
                log_file.write(chunk)
            if echo:
                sys.stdout.write(decoder.decode(chunk))
                sys.stdout.flush()
        returncode = process.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if log_file is not None:
            log_file.close()
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    if timer is not None and timer.finished.is_set() and returncode < 0:
        raise subprocess.TimeoutExpired(command, timeout, output=bytes(kept).decode("utf-8", errors="replace"))
    return subprocess.CompletedProcess(command, returncode, bytes(kept).decode("utf-8", errors="replace"), "")


def run_jobs(
    checkout: Path,
    configs: Sequence[Mapping[str, Any]],
    log_path: Path | None = None,
    echo: bool = False,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Stage ``checkout``, write each job config and run them all in one ``run.py``; stop on failure.

    A failed run raises ``AiToolkitError`` with the exit code, the log's path
    (when kept) and its last lines.
    """
    with tempfile.TemporaryDirectory(prefix="zero_prior_aitk_") as tmp:
        root = stage_ai_toolkit(checkout, Path(tmp))
        paths = [write_config(config, Path(tmp) / f"job{index}.yaml") for index, config in enumerate(configs)]
        completed = run_ai_toolkit(root, paths, env=env, log_path=log_path, echo=echo)
    if completed.returncode != 0:
        where = f"; full log: {log_path}" if log_path is not None else ""
        raise AiToolkitError(f"ai-toolkit failed (exit {completed.returncode}){where}; last lines:\n"
                             + log_tail(completed.stdout))
    return completed


def log_tail(text: str, lines: int = 15) -> str:
    """The last non-empty lines of a log (progress-bar redraws split into their own lines).

    >>> log_tail("a\\rb\\n\\nc\\n", lines=2)
    'b\\nc'
    """
    return "\n".join([line for line in text.replace("\r", "\n").splitlines() if line.strip()][-lines:])
