"""Faults: a kill, a full disk, a failure half-way. Whatever happens, a destination holds an old or a new whole
result, never a part, and nothing is left behind that the next run cannot clean up.

The kill tests run the writer in a child process and SIGKILL it at spread-out
moments; every surviving state is then checked.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import tinytrain
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file

from zero_prior.aitk.checkpoints import ConfigSnapshot, atomic_torch_save, optimizer_state_unreadable
from zero_prior.errors import ExportError, FormatError
from zero_prior.fileio import atomic_file, atomic_folder, remove_stale_temps
from zero_prior.weights import loader as loader_module
from zero_prior.weights.export import export_weights
from zero_prior.weights.format import read_zero_prior
from zero_prior.weights.loader import load_zero_prior
from zero_prior.weights.package import META_JSON, ZIP_LORA_MEMBER, open_weights

KILLS = 12


def _dead_pid() -> int:
    """The id of a process that has ended (a temporary name with it is stale)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _kill_loop(script: str, check, tmp_path: Path) -> int:
    """Run ``script`` (a loop of writes) and SIGKILL it KILLS times at spread-out moments; ``check()`` after each."""
    survived = 0
    for attempt in range(KILLS):
        child = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"  # imports done, the writes begin
        time.sleep(0.02 + 0.05 * attempt)
        child.send_signal(signal.SIGKILL)
        child.wait()
        check()
        survived += 1
    return survived


@pytest.mark.slow  # each killed child imports torch and diffusers
@pytest.mark.long
def test_an_overwriting_export_killed_at_any_moment_leaves_the_old_or_the_new_export(trained, tmp_path):
    destination = tmp_path / "out"
    export_weights(trained.path, destination, "comfyui")
    script = textwrap.dedent(f"""
        from zero_prior.weights.export import export_weights
        print("ready", flush=True)
        while True:
            export_weights({str(trained.path)!r}, {str(destination)!r}, "comfyui", overwrite=True)
    """)

    def check() -> None:
        files = sorted(p.relative_to(destination).as_posix() for p in destination.rglob("*") if p.is_file())
        assert files == ["README.txt", "embeddings/bg2.safetensors", "embeddings/zwx.safetensors",
                         "loras/subject.safetensors", "meta.json"]
        json.loads((destination / META_JSON).read_text())
        assert read_zero_prior(destination / "loras/subject.safetensors") is not None

    assert _kill_loop(script, check, tmp_path) == KILLS
    # What a kill left next to it (hidden temporaries of a dead process) goes with the next export.
    export_weights(trained.path, destination, "comfyui", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.slow  # each killed child imports torch
@pytest.mark.long
def test_a_lora_save_killed_at_any_moment_leaves_a_whole_file(trained, tmp_path):
    target = tmp_path / "lora.safetensors"
    script = textwrap.dedent(f"""
        import torch
        from safetensors.torch import load_file
        from zero_prior.weights.format import read_zero_prior, save_lora_file
        state, record = load_file({str(trained.path)!r}), read_zero_prior({str(trained.path)!r})
        big = {{**state, **{{f"pad.{{i}}.lora_A.weight": torch.zeros(256, 1024) for i in range(8)}}}}
        print("ready", flush=True)
        while True:
            save_lora_file({str(target)!r}, big, {{"name": "x"}}, record=record)
    """)

    def check() -> None:
        if target.exists():  # the first save may not have finished before the first kill
            assert read_zero_prior(target) is not None and len(load_file(str(target))) > 8

    assert _kill_loop(script, check, tmp_path) == KILLS
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert all(f".{os.getpid()}." not in name for name in leftovers)
    with atomic_file(target) as tmp_name:  # the next write of this file removes the dead writers' temporaries
        Path(tmp_name).write_bytes(target.read_bytes())
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]


def test_stale_temporaries_of_dead_processes_go_and_live_ones_stay(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    for name in (f".a.safetensors.{dead}.x1.tmp", f".a.safetensors.{alive}.x2.tmp", f".b.safetensors.{dead}.x3.tmp",
                 "a.safetensors", ".hidden"):
        (tmp_path / name).write_text("x")
    (tmp_path / f".folder.{dead}.x4.tmp").mkdir()
    removed = remove_stale_temps(tmp_path, "a.safetensors")
    assert [p.name for p in removed] == [f".a.safetensors.{dead}.x1.tmp"]
    assert remove_stale_temps(tmp_path)[0].name in {f".b.safetensors.{dead}.x3.tmp", f".folder.{dead}.x4.tmp"}
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [f".a.safetensors.{alive}.x2.tmp", ".hidden", "a.safetensors"]


def test_a_failed_write_leaves_the_old_file_and_no_new_folders(tmp_path):
    target = tmp_path / "kept.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp_name:
        Path(tmp_name).write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["kept.txt"]
    with pytest.raises(KeyboardInterrupt), atomic_folder(tmp_path / "new" / "deep" / "out") as staging:
        (staging / "a").write_text("x")
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]  # new/ and new/deep/ went too


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_an_export_that_cannot_write_leaves_nothing_and_says_so(trained, tmp_path, monkeypatch, code):
    import zero_prior.weights.export as export

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(export, "save_file", fail)
    with pytest.raises(ExportError, match=rf"cannot export to .*/new/out: .*{os.strerror(code)}; "):
        export_weights(trained.path, tmp_path / "new" / "out", "comfyui")
    assert list(tmp_path.iterdir()) == []


def test_an_optimizer_save_that_fails_half_way_keeps_the_last_one(tmp_path):
    path = tmp_path / "optimizer.pt"
    torch.save({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("crash in the middle of the save")

    with pytest.raises(RuntimeError), atomic_torch_save(path):
        torch.save({"big": torch.zeros(1000), "bad": Unpicklable()}, path)
    assert torch.load(path) == {"step": 1} and [p.name for p in tmp_path.iterdir()] == ["optimizer.pt"]
    other = tmp_path / "other.pt"
    with atomic_torch_save(path):
        torch.save({"x": 1}, other)  # any other torch.save is untouched
    assert torch.load(other) == {"x": 1}


def test_a_cut_off_optimizer_state_is_named(tmp_path):
    path = tmp_path / "optimizer.pt"
    assert optimizer_state_unreadable(path) is None  # absent: nothing to say
    torch.save({"state": {0: torch.zeros(100)}}, path)
    assert optimizer_state_unreadable(path) is None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "cut off or damaged" in optimizer_state_unreadable(path)
    path.write_bytes(b"")
    assert optimizer_state_unreadable(path) == "it is empty"


def test_config_snapshot_puts_config_yaml_back(tmp_path):
    root = tmp_path / "job"
    root.mkdir()
    (root / "config.yaml").write_text("mine: true\n")
    snapshot = ConfigSnapshot(root)
    (root / "config.yaml").write_text("overwritten: true\n")
    snapshot.restore()
    assert (root / "config.yaml").read_text() == "mine: true\n"
    fresh = ConfigSnapshot(tmp_path / "new_job")
    (tmp_path / "new_job").mkdir()
    (tmp_path / "new_job" / "config.yaml").write_text("written by ai-toolkit\n")
    fresh.restore()
    assert not (tmp_path / "new_job").exists()


def _untouched(pipe, weight: torch.Tensor) -> bool:
    return (len(pipe.tokenizer) == 151665 and not pipe.get_list_adapters()
            and not any(isinstance(m, BaseTunerLayer) for m in pipe.transformer.modules())
            and torch.equal(pipe.text_encoder.get_input_embeddings().weight, weight)
            and type(pipe.tokenizer).__name__ == "Qwen2Tokenizer")


@pytest.mark.parametrize("step", ["write_rows", "install_expansion", "load_lora_weights"])
def test_a_load_that_fails_inside_its_fence_is_rolled_back(trained, tiny_pipeline_dir, monkeypatch, step):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    weight = pipe.text_encoder.get_input_embeddings().weight.detach().clone()

    def fail(*args, **kwargs):
        raise RuntimeError(f"{step} failed")

    if step == "load_lora_weights":
        original = pipe.load_lora_weights

        def half_then_fail(*args, **kwargs):
            original(*args, **kwargs)  # the adapter is in, then something breaks
            raise RuntimeError(f"{step} failed")

        monkeypatch.setattr(pipe, "load_lora_weights", half_then_fail)
    else:
        monkeypatch.setattr(loader_module, step, fail)
    with pytest.raises(RuntimeError, match=f"{step} failed"):
        load_zero_prior(pipe, trained.path)
    assert _untouched(pipe, weight)


def test_a_full_disk_while_extracting_a_package_leaves_no_temporary(trained, tmp_path, monkeypatch):
    import zero_prior.weights.package as package

    archive = export_weights(trained.path, tmp_path / "zip", "zip").output
    created = []
    real = package.tempfile.TemporaryDirectory

    def tracked(*args, **kwargs):
        folder = real(*args, **kwargs)
        created.append(Path(folder.name))
        return folder

    class Full:
        def __init__(self, real_open):
            self.real_open = real_open

        def __call__(self, path, mode="r", *args, **kwargs):
            if "w" in mode and str(path).endswith(".safetensors"):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return self.real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(package.tempfile, "TemporaryDirectory", tracked)
    monkeypatch.setattr("builtins.open", Full(open))
    with pytest.raises(OSError, match="No space left on device"), open_weights(archive):
        pass
    assert created and not any(folder.exists() for folder in created)


def test_a_zip_whose_lora_member_lies_about_its_size_is_refused(trained, tmp_path):
    archive = tmp_path / "weights.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.write(trained.path, ZIP_LORA_MEMBER)
    data = bytearray(archive.read_bytes())
    # The central directory's uncompressed size of the member (offset 24 in its record) claims fewer bytes.
    central = data.rfind(b"PK\x01\x02")
    real = int.from_bytes(data[central + 24:central + 28], "little")
    data[central + 24:central + 28] = (real // 2).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="not a readable zip archive"), open_weights(archive):
        pass
