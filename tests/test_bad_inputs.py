"""Bad input, as a new user gives it: every case is a clear error that names the key or file and says the fix,
raised before anything is written or changed.

Four groups: files given to ``load_zero_prior`` (the pipeline is checked to be
exactly as it was), weights packages, the command line (one line on stderr,
exit code 1, nothing written), and settings read before ai-toolkit starts.
The config rules of ``settings``, ``placeholder:`` and ``EXPERIMENT.yaml`` have
their own tables (``aitk_cases.REFUSALS``, ``test_config.py``, ``test_experiment.py``).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lora_files
import pytest
import tinytrain
import torch
from aitk_cases import tiny_process
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import save_file

from zero_prior.aitk.preflight import check_datasets, check_token
from zero_prior.aitk.settings import read_settings
from zero_prior.cli import main
from zero_prior.errors import (
    ConfigError,
    FormatError,
    PipelineError,
    PlaceholderError,
    ZeroPriorError,
)
from zero_prior.weights.format import METADATA_KEY
from zero_prior.weights.loader import load_zero_prior
from zero_prior.weights.package import META_JSON, ZIP_LORA_MEMBER, open_weights

DAMAGED = "use the file the training wrote, or download it again"
OTHER_MODEL = "load it into the pipeline it was trained for"


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _edit(change: Callable[[dict], Any]) -> Callable[[Path, Path], Path]:
    return lambda source, tmp: lora_files.rewrite(source, tmp / "edited.safetensors", change)


def _first(change: Callable[[dict], Any]) -> Callable[[dict], Any]:
    return lambda data: change(data["placeholders"][0])


def _vector(values: torch.Tensor) -> Callable[[dict], Any]:
    return _first(lambda item: lora_files.set_vectors(item, values.expand(item["num_vectors"], -1).clone()))


def _tensors(change) -> Callable[[Path, Path], Path]:
    return lambda source, tmp: lora_files.with_tensors(source, tmp / "tensors.safetensors", change)


def _pickle(source: Path, tmp: Path) -> Path:
    buffer = io.BytesIO()
    torch.save({"a": torch.zeros(2)}, buffer)
    return _bytes(tmp / "pickled.safetensors", buffer.getvalue())


A_KEY = "diffusion_model.transformer_blocks.0.attn.to_q.lora_A.weight"
B_KEY = "diffusion_model.transformer_blocks.0.attn.to_q.lora_B.weight"

# (id, make the bad input from the trained file, load_zero_prior kwargs, error class, message regex, fix)
LOADER_CASES: list[tuple[str, Callable[[Path, Path], Any], dict, type, str, str]] = [
    ("truncated", lambda s, t: _bytes(t / "cut.safetensors", s.read_bytes()[: s.stat().st_size // 2]), {},
     FormatError, "cut.safetensors: not a readable .safetensors file", DAMAGED),
    ("empty_file", lambda s, t: _bytes(t / "empty.safetensors", b""), {}, FormatError,
     "empty.safetensors: not a readable .safetensors file", DAMAGED),
    ("pickle_file", _pickle, {}, FormatError, "pickled.safetensors: not a readable .safetensors file",
     "a .ckpt/.pt file is not a LoRA .safetensors"),
    ("random_bytes", lambda s, t: _bytes(t / "noise.safetensors", os.urandom(4096)), {}, FormatError,
     "noise.safetensors: not a readable .safetensors file", DAMAGED),
    ("metadata_not_json", lambda s, t: _header_edit(s, t, "{"), {}, FormatError,
     "metadata is not valid JSON", DAMAGED),
    ("metadata_other_record", lambda s, t: _header_edit(s, t, json.dumps({"format": "other"})), {}, FormatError,
     "metadata is not a zero-prior record", "remove that metadata key to load it as a plain LoRA"),
    ("checksum_edited", _edit(_first(lambda i: i["vectors"].update(sha256="0" * 64))), {}, FormatError,
     "checksum mismatch", DAMAGED),
    ("base64_broken", _edit(_first(lambda i: i["vectors"].update(base64="!!" + i["vectors"]["base64"]))), {},
     FormatError, "the stored vector is not valid base64", DAMAGED),
    ("vector_dtype", _edit(_first(lambda i: i["vectors"].update(dtype="float16"))), {}, FormatError,
     "vectors must be float32 of shape", DAMAGED),
    ("vector_shape", _edit(_first(lambda i: i["vectors"].update(shape=[1, 32]))), {}, FormatError,
     r"vector shape \[1, 32\] does not match hidden size 64", DAMAGED),
    ("hidden_size", _edit(lambda d: [d.update(hidden_size=32)] + [lora_files.set_vectors(i, torch.zeros(
        i["num_vectors"], 32)) for i in d["placeholders"]]), {}, FormatError,
     "placeholder vectors have hidden size 32 but this pipeline's text encoder has 64",
     "load it into the model it was trained for"),
    ("future_version", _edit(lambda d: d.update(format_version=9)), {}, FormatError,
     "format version 9 is not supported by this release", "upgrade zero-prior"),
    ("no_placeholders_field", _edit(lambda d: d.pop("placeholders")), {}, FormatError,
     "field 'placeholders' is missing", DAMAGED),
    ("entry_count", _edit(_first(lambda i: i.update(token_strings=["<zwx>", "<zwx_1>"]))), {}, FormatError,
     "1 vectors but 2 token entries", DAMAGED),
    ("entries_renamed", _edit(lambda d: d["placeholders"][1].update(token_strings=["<bg2>", "<other>"])), {},
     FormatError, r"lists entries \['<bg2>', '<other>'\], expected", DAMAGED),
    ("lstrip_true", _edit(_first(lambda i: i.update(lstrip=True))), {}, FormatError,
     "was registered with lstrip True", "retrain it with placeholder.lstrip: false"),
    ("nan_vector", _edit(_vector(torch.full((1, 64), float("nan")))), {}, FormatError,
     "the stored vector has NaN or infinite values", "retrain with a lower placeholder.lr"),
    ("inf_vector", _edit(_vector(torch.full((1, 64), float("inf")))), {}, FormatError,
     "the stored vector has NaN or infinite values", "use an earlier checkpoint"),
    ("no_stored_vector", _edit(_first(lambda i: i["vectors"].pop("base64"))), {}, FormatError,
     "has no stored vector", "use the LoRA file zero_prior_trainer saved"),
    ("lora_rank_mismatch", _tensors(lambda k, v: v[:2] if k == A_KEY else v), {}, FormatError,
     r"'transformer_blocks.0.attn.to_q' has lora_A \[2, 64\] and lora_B \[64, 4\]", OTHER_MODEL),
    ("lora_in_features", _tensors(lambda k, v: torch.zeros(v.shape[0], 65) if k == A_KEY else v), {}, FormatError,
     "but the layer takes 64 inputs", OTHER_MODEL),
    ("lora_module_missing", lambda s, t: lora_files.with_tensors(
        s, t / "moved.safetensors", lambda k, v: None if k in (A_KEY, B_KEY) else v,
        {A_KEY.replace("blocks.0", "blocks.99"): torch.zeros(4, 64), B_KEY.replace("blocks.0", "blocks.99"):
         torch.zeros(64, 4)}), {}, FormatError,
     "'transformer_blocks.99.attn.to_q' targets a module this pipeline's transformer does not have", OTHER_MODEL),
    ("lora_half_pair", _tensors(lambda k, v: None if k == B_KEY else v), {}, FormatError,
     "has no lora_B weight", DAMAGED),
    ("lora_complex", _tensors(lambda k, v: v.to(torch.complex64) if k == B_KEY else v), {}, FormatError,
     f"tensor '{B_KEY}' is C64, but a LoRA's tensors are floating point", DAMAGED),
    ("lora_integer", _tensors(lambda k, v: v.to(torch.int8) if k == A_KEY else v), {}, FormatError,
     f"tensor '{A_KEY}' is I8, but a LoRA's tensors are floating point", DAMAGED),
    ("non_lora_tensor", lambda s, t: lora_files.with_tensors(s, t / "extra.safetensors", lambda k, v: v,
                                                            {"vectors.weight": torch.zeros(2, 64)}), {}, FormatError,
     "extra.safetensors: diffusers cannot read it as a QwenImagePipeline LoRA",
     "pass a LoRA trained for this model"),
    ("no_tensors", lambda s, t: _header_only(s, t), {}, FormatError, "holds no LoRA tensors",
     "pass the LoRA file the training wrote"),
    ("token_scale_nan", lambda s, t: s, {"token_scale": float("nan")}, PlaceholderError,
     "token_scale must be a finite number, got nan", "1.0 is the trained vector"),
    ("lora_scale_inf", lambda s, t: s, {"lora_scale": float("inf")}, PlaceholderError,
     "lora_scale must be a finite number, got inf", "1.0 is the LoRA as trained"),
    ("lora_scale_text", lambda s, t: s, {"lora_scale": "1"}, PlaceholderError,
     "lora_scale must be a finite number, got '1'", "1.0 is the LoRA as trained"),
    ("missing_path", lambda s, t: t / "nowhere.safetensors", {}, FormatError,
     "nowhere.safetensors: no such file or folder", "pass a LoRA .safetensors, a weights.zip or an exported folder"),
    ("folder_without_lora", lambda s, t: (t / "empty_folder").mkdir() or t / "empty_folder", {}, FormatError,
     "empty_folder: a weights package must hold exactly one .safetensors LoRA file, found none",
     "create it with `zero-prior export FILE --format zip`"),
]


def _header_edit(source: Path, tmp: Path, text: str) -> Path:
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        header = dict(handle.metadata())
    header[METADATA_KEY] = text
    save_file(tensors, str(tmp / "header.safetensors"), metadata=header)
    return tmp / "header.safetensors"


def _header_only(source: Path, tmp: Path) -> Path:
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as handle:
        header = dict(handle.metadata())
    save_file({}, str(tmp / "bare.safetensors"), metadata=header)
    return tmp / "bare.safetensors"


def _pipeline_state(pipe) -> tuple:
    return (pipe.tokenizer.get_added_vocab(), type(pipe.tokenizer).__name__, sorted(pipe.get_list_adapters()),
            any(isinstance(m, BaseTunerLayer) for m in pipe.transformer.modules()),
            pipe.text_encoder.get_input_embeddings().weight.detach().clone())


def _same_state(a: tuple, b: tuple) -> bool:
    return a[:4] == b[:4] and torch.equal(a[4], b[4])


@pytest.mark.parametrize("make, kwargs, error, message, fix", [c[1:] for c in LOADER_CASES],
                         ids=[c[0] for c in LOADER_CASES])
def test_a_bad_file_is_refused_with_the_fix_and_the_pipeline_unchanged(
    trained, tiny_pipeline_dir, tmp_path, make, kwargs, error, message, fix
):
    bad = make(trained.path, tmp_path)
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    before = _pipeline_state(pipe)
    with pytest.raises(error, match=message) as raised:
        load_zero_prior(pipe, bad, **kwargs)
    assert fix in str(raised.value)
    assert _same_state(_pipeline_state(pipe), before)


def test_a_pipeline_of_no_supported_family_is_refused(trained):
    with pytest.raises(PipelineError, match="object is not a pipeline zero-prior supports; use one of "
                                            "QwenImagePipeline"):
        load_zero_prior(object(), trained.path)


def test_an_adapter_name_already_taken_is_refused(trained, tiny_pipeline_dir, tmp_path):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(pipe, trained.path, adapter_name="mine")
    other = lora_files.with_lora_scaled(trained.path, tmp_path / "other.safetensors", 3.0)
    before = _pipeline_state(pipe)
    with pytest.raises(PlaceholderError, match="already has an adapter named 'mine'; pass another adapter_name"):
        load_zero_prior(pipe, other, adapter_name="mine")
    assert _same_state(_pipeline_state(pipe), before)


# --- weights packages -----------------------------------------------------------------------------


def _zip(target: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(target, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


PACKAGE_CASES: list[tuple[str, Callable[[Path, Path], Path], dict, str, str]] = [
    ("meta_json_too_large", lambda s, t: _zip(t / "w.zip", {ZIP_LORA_MEMBER: s.read_bytes(),
                                                            META_JSON: b" " * (5 * 2**20)}), {},
     r"\(meta.json\) is 5242880 bytes, more than the 4194304 bytes allowed", "use the package zero-prior wrote"),
    ("lora_over_the_limit", lambda s, t: _zip(t / "w.zip", {ZIP_LORA_MEMBER: s.read_bytes()}),
     {"max_lora_bytes": 1000}, r"lora_weights.safetensors\) is \d+ bytes, more than the 1000 bytes allowed",
     "raise max_lora_bytes"),
    ("ratio_bomb", lambda s, t: _zip(t / "w.zip", {ZIP_LORA_MEMBER: b"\0" * (20 * 2**20)}), {},
     r"inflates \d+ times its stored size", "re-create it with `zero-prior export FILE --format zip`"),
    ("meta_json_not_object", lambda s, t: _zip(t / "w.zip", {ZIP_LORA_MEMBER: s.read_bytes(), META_JSON: b"[1, 2]"}),
     {}, r"\(meta.json\): must be a JSON object, got list", "re-create the package with `zero-prior export`"),
    ("meta_json_not_json", lambda s, t: _zip(t / "w.zip", {ZIP_LORA_MEMBER: s.read_bytes(), META_JSON: b"{oops"}),
     {}, r"\(meta.json\): not valid JSON", "re-create the package with `zero-prior export`"),
    ("not_a_zip", lambda s, t: _bytes(t / "w.zip", b"PK not really"), {}, "w.zip: not a readable zip archive",
     "pass a weights.zip written by `zero-prior export --format zip`"),
    ("only_macos_metadata", lambda s, t: _zip(t / "w.zip", {"__MACOSX/._lora.safetensors": b"x"}), {},
     "must hold exactly one .safetensors LoRA file, found none", "create it with `zero-prior export FILE"),
    ("folder_meta_json_too_large", lambda s, t: _folder(t, s, b" " * (5 * 2**20)), {},
     r"meta.json is 5242880 bytes, more than the 4194304 bytes allowed", "use the package zero-prior wrote"),
]


def _folder(tmp: Path, lora: Path, meta: bytes) -> Path:
    folder = tmp / "package"
    folder.mkdir()
    (folder / "lora.safetensors").write_bytes(lora.read_bytes())
    (folder / META_JSON).write_bytes(meta)
    return folder


@pytest.mark.parametrize("make, kwargs, message, fix", [c[1:] for c in PACKAGE_CASES],
                         ids=[c[0] for c in PACKAGE_CASES])
def test_a_bad_package_is_refused_before_anything_is_extracted(trained, tmp_path, make, kwargs, message, fix):
    bad = make(trained.path, tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(FormatError, match=message) as raised, open_weights(bad, **kwargs):
        pass
    assert fix in str(raised.value)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --- the command line: one line with the path and the fix, exit code 1, nothing written ---------------


def _os_error(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


CLI_CASES: list[tuple[str, Callable[[Path, Path, Path], list[str]], str, str]] = [
    ("export_to_a_file", lambda lora, model, t: ["export", str(lora), "--to", str(_bytes(t / "a.txt", b"x")),
                                                 "--format", "zip"], "a.txt is a file, not a folder",
     "choose a folder for --to"),
    ("export_under_a_file", lambda lora, model, t: ["export", str(lora), "--to",
                                                    str(_bytes(t / "a.txt", b"x") / "out"), "--format", "comfyui"],
     "a.txt is a file, so .*a.txt/out cannot be created under it", "choose another --to"),
    ("export_broken_source", lambda lora, model, t: ["export", str(_bytes(t / "cut.safetensors", b"12345678")),
                                                     "--to", str(t / "out"), "--format", "zip"],
     "cut.safetensors: not a readable .safetensors file", DAMAGED),
    ("export_integer_lora", lambda lora, model, t: ["export", str(lora_files.with_tensors(
        lora, t / "int8.safetensors", lambda k, v: v.to(torch.int8) if k == A_KEY else v)), "--to", str(t / "out"),
        "--format", "diffusers"], f"int8.safetensors: tensor '{A_KEY}' is I8, but a LoRA's tensors are floating point",
     DAMAGED),
    ("merge_complex_lora", lambda lora, model, t: ["merge", str(lora), str(lora_files.with_tensors(
        lora, t / "c64.safetensors", lambda k, v: v.to(torch.complex64) if k == B_KEY else v)), "-o",
        str(t / "merged.safetensors")], f"c64.safetensors: tensor '{B_KEY}' is C64", DAMAGED),
    ("inspect_a_folder", lambda lora, model, t: ["inspect", str(t)], "a folder",
     "pass the LoRA .safetensors file a training wrote"),
    ("inspect_truncated", lambda lora, model, t: ["inspect", str(_bytes(t / "cut.safetensors",
                                                                        lora.read_bytes()[:100]))],
     "cut.safetensors: not a readable .safetensors file", DAMAGED),
    ("generate_model_missing", lambda lora, model, t: ["generate", "--model", str(t / "no_model"), "--prompt", "x",
                                                       "--out", str(t / "o.png")], "no_model: no such folder",
     "pass a pipeline folder (with model_index.json) or a hub name"),
    ("generate_model_not_a_pipeline", lambda lora, model, t: ["generate", "--model", str(model / "vae"), "--prompt",
                                                              "x", "--out", str(t / "o.png")],
     "not a diffusers pipeline folder", "pass a pipeline folder"),
    ("generate_lora_missing", lambda lora, model, t: ["generate", "--model", str(model), "--lora",
                                                      str(t / "none.safetensors"), "--prompt", "x", "--out",
                                                      str(t / "o.png")], "none.safetensors: no such file or folder",
     "pass a LoRA .safetensors"),
    ("captions_missing_dataset", lambda lora, model, t: ["captions", str(t / "no_images")], "no_images: not a folder",
     "pass the folder that holds the training images"),
    ("experiment_missing_spec", lambda lora, model, t: ["experiment", str(t / "none.yaml"), "--dry-run"],
     "none.yaml: no such experiment file", "pass the EXPERIMENT.yaml to run"),
    ("tiny_model_into_a_used_folder", lambda lora, model, t: ["tiny-model", "--out", str(_bytes(
        (t / "used").mkdir() or t / "used" / "keep.txt", b"x").parent)], "used is not empty",
     "choose a new folder"),
    ("install_into_no_checkout", lambda lora, model, t: ["install", "--ai-toolkit", str(t)],
     "is not an ai-toolkit checkout", "pass the folder that holds ai-toolkit's run.py"),
]


@pytest.mark.parametrize("args, message, fix", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_a_bad_command_is_one_line_with_the_fix(trained, tiny_pipeline_dir, tmp_path, capsys, args, message, fix):
    argv = args(trained.path, tiny_pipeline_dir, tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"zero-prior {argv[0]}: error: ")
    assert re.search(message, err) and fix in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("code, fix", [(errno.ENOSPC, "free some disk space"), (errno.EACCES, "choose a place you may "
                                                                                            "write to")])
def test_an_export_that_cannot_write_is_one_line(trained, tmp_path, capsys, monkeypatch, code, fix):
    import zero_prior.weights.export as export

    monkeypatch.setattr(export.zipfile, "ZipFile", _os_error(code))
    assert main(["export", str(trained.path), "--to", str(tmp_path / "out"), "--format", "zip"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot export to" in err and fix in err
    assert list(tmp_path.iterdir()) == []


def test_any_os_error_of_a_command_is_one_line(tmp_path, capsys, monkeypatch):
    import zero_prior.cli.inspect as inspect

    def fail(path, include_vectors=False):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(inspect, "describe", fail)
    assert main(["inspect", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"zero-prior inspect: error: {tmp_path / 'x.safetensors'}: Permission denied; choose a place you "
                   "may write to, or fix its permissions")


# --- settings checked before ai-toolkit loads a model or writes a file ---------------------------------


def _process(tmp_path: Path, change: Callable[[dict], Any], model: str = "/unused", dataset: str = "/unused") -> dict:
    process = tiny_process(tmp_path, model=model, dataset=dataset)
    change(process)
    return process


SETTING_CASES: list[tuple[str, Callable[[dict], Any], str]] = [
    ("steps_not_a_number", lambda p: (p["train"].update(steps="four"), p["placeholder"].update(stop_step=0.5)),
     "config.process[0].train.steps must be a number, got 'four'"),
    ("placeholder_lr_text", lambda p: p["placeholder"].update(lr="fast"),
     "config.process[0].placeholder.lr must be a number, got 'fast'"),
    ("train_lr_text", lambda p: p["train"].update(lr="fast"),
     "config.process[0].train.lr must be a number, got 'fast'"),
    ("embedding_lr_text", lambda p: p["train"].update(embedding_lr="1e-3x"),
     "config.process[0].train.embedding_lr must be a number, got '1e-3x'"),
    ("network_not_a_mapping", lambda p: p.update(network="lora"),
     "config.process[0].network must be a mapping of settings, got str"),
    ("model_not_a_mapping", lambda p: p.update(model=["qwen"]),
     "config.process[0].model must be a mapping of settings, got list"),
]


@pytest.mark.parametrize("change, message", [c[1:] for c in SETTING_CASES], ids=[c[0] for c in SETTING_CASES])
def test_a_bad_setting_names_its_key(tmp_path, change, message):
    with pytest.raises(ConfigError) as raised:
        read_settings(_process(tmp_path, change), 0)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("folder, message", [
    ("missing", "does not exist; point it at the folder of training images"),
    ("empty", "holds no images ai-toolkit trains on (.png, .jpg, .jpeg, .webp); add the training images"),
    ("captions_only", "holds no images ai-toolkit trains on"),
    ("hidden_images_only", "holds no images ai-toolkit trains on"),
])
def test_a_dataset_folder_without_images_is_refused_first(tmp_path, folder, message):
    path = tmp_path / folder
    if folder != "missing":
        path.mkdir()
    if folder == "captions_only":
        (path / "001.txt").write_text("a photo of [trigger]")
    if folder == "hidden_images_only":
        (path / ".thumbs").mkdir()
        (path / ".thumbs" / "001.png").write_bytes(b"x")
        (path / ".001.png").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"config.process\[0\].datasets\[0\].folder_path .*" + re.escape(message)):
        check_datasets(tiny_process(tmp_path, dataset=str(path)), "config.process[0]")


@pytest.mark.parametrize("token, message", [
    ("hello", "placeholder token 'hello' already exists in the tokenizer vocabulary (id 14990)"),
    ("a-", "placeholder token 'a-' does not stay one token inside the Qwen-Image prompt template"),
    ("<|im_end|>", "placeholder token '<|im_end|>' already exists in the tokenizer vocabulary (id 151645)"),
    ("-", "placeholder token '-' already exists in the tokenizer vocabulary (id 12)"),
])
def test_a_taken_or_splitting_token_is_refused_before_the_model_loads(tmp_path, tiny_pipeline_dir, token, message):
    process = _process(tmp_path, lambda p: p["placeholder"].update(token=token), model=str(tiny_pipeline_dir))
    process.pop("trigger_word", None)
    settings = read_settings(process, 0)
    with pytest.raises(PlaceholderError) as raised:
        check_token(process, settings)
    assert str(raised.value).startswith(message) and "choose" in str(raised.value)


def test_a_tokenizer_not_on_disk_is_checked_later(tmp_path):
    process = _process(tmp_path, lambda p: p["model"].update(name_or_path="nobody/no-such-model"))
    note = check_token(process, read_settings(process, 0))
    assert note.startswith("zero-prior: the tokenizer of 'nobody/no-such-model' is not on disk yet")


def test_every_case_here_is_a_zero_prior_error() -> None:
    """The tables above use the package's own exception family only (the CLI turns those into one line)."""
    classes = {case[3] for case in LOADER_CASES} | {FormatError, ConfigError, PlaceholderError, PipelineError}
    assert all(issubclass(cls, ZeroPriorError) for cls in classes)
