"""export + loading packages back: every format round-trips the placeholder exactly; bad packages fail clearly."""

import json
import zipfile

import pytest
import tinytrain
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AddedToken

from zero_prior.cli import main
from zero_prior.errors import FormatError, PlaceholderError
from zero_prior.weights.export import DIFFUSERS_METADATA_KEY, ExportError, export_weights
from zero_prior.weights.format import METADATA_KEY, read_zero_prior, save_lora_file, vector_sha256
from zero_prior.weights.loader import load_zero_prior
from zero_prior.weights.package import META_JSON, ZIP_LORA_MEMBER, describe_weights

PROMPT = tinytrain.TWO_TOKEN_PROMPT
# The keys existing zero-prior Cog clients read from meta.json.
CLIENT_KEYS = {"base_model", "train_placeholder_token", "placeholder_token", "placeholder_token_id",
               "placeholder_init_std", "vocab_size", "rank", "training_steps", "learning_rate", "batch_size",
               "resolutions", "version"}
BASE_VOCAB = 151665


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    path = trained.path
    root = tmp_path_factory.mktemp("exports")
    return {fmt: export_weights(path, root / fmt, fmt) for fmt in ("zip", "comfyui", "diffusers")}


_image = tinytrain.image


def _embeds(pipe) -> torch.Tensor:
    with torch.no_grad():
        return pipe.encode_prompt(PROMPT, device="cpu")[0]


@pytest.mark.parametrize("fmt", ["zip", "diffusers"])
def test_round_trip_through_load_zero_prior(fmt, trained, exports, tiny_pipeline_dir):
    train_embeds, image = trained.embeds, trained.image
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    result = load_zero_prior(pipe, exports[fmt].output)
    assert [p.token_ids for p in result.tokens] == [(151665,), (151666, 151667)]
    assert (_embeds(pipe) - train_embeds).abs().max().item() <= 1e-6
    tinytrain.assert_same_image(_image(pipe), image)


def test_comfyui_files_rebuild_the_training_embeddings_and_image(trained, exports, tiny_pipeline_dir):
    """What a consumer of the ComfyUI files does: plain LoRA load, tokens added, rows from qwen25_7b."""
    path, train_embeds, image = trained.path, trained.embeds, trained.image
    folder = exports["comfyui"].output
    assert (folder / "loras/subject.safetensors").read_bytes() == path.read_bytes()
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    pipe.load_lora_weights(str(folder / "loras"), weight_name="subject.safetensors")
    weight = pipe.text_encoder.get_input_embeddings().weight
    for name, entries in (("zwx", ["<zwx>"]), ("bg2", ["<bg2>", "<bg2_1>"])):
        tensors = load_file(str(folder / f"embeddings/{name}.safetensors"))
        assert list(tensors) == ["qwen25_7b"] and tensors["qwen25_7b"].dtype == torch.float32
        assert list(tensors["qwen25_7b"].shape) == [len(entries), 64]
        pipe.tokenizer.add_tokens([AddedToken(e, normalized=False, special=False) for e in entries])
        with torch.no_grad():
            weight[pipe.tokenizer.convert_tokens_to_ids(entries)] = tensors["qwen25_7b"]
    expanded = PROMPT.replace("<bg2>", "<bg2><bg2_1>")  # a multi-vector embedding spans consecutive entries
    with torch.no_grad():
        embeds = pipe.encode_prompt(expanded, device="cpu")[0]
    assert (embeds - train_embeds).abs().max().item() <= 1e-6
    tinytrain.assert_same_image(_image(pipe, expanded), image)
    readme = (folder / "README.txt").read_text()
    assert '"Load zero-prior LoRA"' in readme and "zero-prior install --comfyui" in readme
    assert "as trained (<zwx>, <bg2>)" in readme and "without embedding: syntax" in readme


def test_zip_layout_and_meta_json(trained, exports):
    path = trained.path
    with zipfile.ZipFile(exports["zip"].output) as archive:
        assert sorted(archive.namelist()) == [ZIP_LORA_MEMBER, META_JSON]
        assert archive.read(ZIP_LORA_MEMBER) == path.read_bytes()  # unchanged: vector in its metadata
        meta = json.loads(archive.read(META_JSON))
    assert CLIENT_KEYS <= set(meta)
    record = read_zero_prior(path)
    assert meta["placeholder_token"] == "<zwx>" and meta["placeholder_token_id"] == 151665
    assert meta["train_placeholder_token"] is True and meta["placeholder_init_std"] == 1e-5
    assert meta["vocab_size"] == BASE_VOCAB + 3 and meta["rank"] == tinytrain.LORA_RANK
    assert meta["training_steps"] == 3 and meta["base_model"] == "tiny"
    assert meta["vector_sha256"] == vector_sha256(record.placeholders[0].vectors)
    expected = [vector_sha256(p.vectors) for p in record.placeholders]
    assert [p["vector_sha256"] for p in meta["placeholders"]] == expected
    # tinytrain's header has no ai-toolkit training metadata: these are unknown, not guessed
    assert meta["learning_rate"] is None and meta["batch_size"] is None and meta["resolutions"] is None


def test_meta_json_takes_training_values_from_the_ai_toolkit_header(trained, tmp_path):
    path = trained.path
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        header = dict(handle.metadata())
    # as ai-toolkit writes a config's meta: block and its training_info (JSON-encoded values)
    header.update(learning_rate="0.0001", batch_size="2", resolutions="[512, 768]",
                  training_info='{"step": 3, "epoch": 1}')
    save_file(tensors, str(tmp_path / "aitk.safetensors"), metadata=header)
    meta = describe_weights(tmp_path / "aitk.safetensors")
    assert (meta["learning_rate"], meta["batch_size"], meta["resolutions"]) == (1e-4, 2, [512, 768])


def test_diffusers_folder_is_native_and_exact_in_stock_diffusers(trained, exports, tiny_pipeline_dir):
    folder = exports["diffusers"].output
    with safe_open(str(folder / "pytorch_lora_weights.safetensors"), framework="pt") as handle:
        keys, header = list(handle.keys()), handle.metadata()
    assert keys and all(k.startswith("transformer.") for k in keys)
    adapter = json.loads(header["lora_adapter_metadata"])
    assert adapter["transformer.r"] == adapter["transformer.lora_alpha"] == tinytrain.LORA_RANK
    assert METADATA_KEY in header
    # stock diffusers, no zero-prior code: same transformer output (offline, diffusers wants weight_name)
    ours = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(ours, trained.path)
    stock = tinytrain.load_pipe(tiny_pipeline_dir)
    stock.load_lora_weights(str(folder), weight_name="pytorch_lora_weights.safetensors")
    hidden = torch.linspace(-1, 1, 16 * stock.transformer.config.in_channels).reshape(1, 16, -1)
    text = torch.linspace(-1, 1, 5 * 64).reshape(1, 5, 64)
    outputs = [pipe.transformer(hidden_states=hidden, timestep=torch.tensor([0.5]), encoder_hidden_states=text,
                                img_shapes=[[(1, 4, 4)]], return_dict=False)[0] for pipe in (ours, stock)]
    assert torch.equal(outputs[0], outputs[1])


def test_a_diffusers_file_is_applied_with_its_own_adapter_metadata(trained, exports, tiny_pipeline_dir, tmp_path):
    """lora_adapter_metadata (here alpha = 2 x rank) sets the strength exactly as stock diffusers applies it."""
    source = exports["diffusers"].output / "pytorch_lora_weights.safetensors"
    with safe_open(str(source), framework="pt") as handle:
        tensors, header = {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata())
    adapter = json.loads(header["lora_adapter_metadata"])
    adapter["transformer.lora_alpha"] = 2 * adapter["transformer.r"]
    header["lora_adapter_metadata"] = json.dumps(adapter)
    folder = tmp_path / "alpha"
    folder.mkdir()
    save_file(tensors, str(folder / "pytorch_lora_weights.safetensors"), metadata=header)
    outputs = []
    for load in (lambda p: load_zero_prior(p, folder), lambda p: load_zero_prior(p, exports["diffusers"].output),
                 lambda p: p.load_lora_weights(str(folder), weight_name="pytorch_lora_weights.safetensors")):
        pipe = tinytrain.load_pipe(tiny_pipeline_dir)
        load(pipe)
        with torch.no_grad():
            outputs.append(tinytrain.transformer_output(pipe, trained.embeds))
    ours, alpha_is_rank, stock = outputs
    assert torch.equal(ours, stock) and not torch.allclose(ours, alpha_is_rank, atol=1e-4)


def test_token_scale_zero_is_a_zero_row_and_one_the_trained_vector(trained, tiny_pipeline_dir):
    path, train_embeds = trained.path, trained.embeds
    scaled = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(scaled, path, token_scale=0.0)
    reference = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(reference, path)
    with torch.no_grad():
        reference.text_encoder.get_input_embeddings().weight[151665:151668] = 0.0
    assert torch.equal(_embeds(scaled), _embeds(reference))
    assert (_embeds(scaled) - train_embeds).abs().max().item() > 1e-3
    half = tinytrain.load_pipe(tiny_pipeline_dir)
    result = load_zero_prior(half, path, token_scale=0.5)
    rows = half.text_encoder.get_input_embeddings().weight[151665:151668].detach()
    expected = torch.cat([p.vectors for p in read_zero_prior(path).placeholders]) * 0.5
    assert torch.equal(rows, expected)
    assert "vector x 0.5" in result.summary()
    # reusing the loaded token at another strength would silently keep the first one: refused
    with pytest.raises(PlaceholderError, match="different vector \\(or another token_scale than 1.0\\)"):
        load_zero_prior(half, path, adapter_name="again")
    with pytest.raises(PlaceholderError, match="token_scale must be a finite number"):
        load_zero_prior(half, path, token_scale=float("nan"))


def _zip(target, members):
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def _rewritten(source, target, change):
    """A copy of a LoRA file with its zero-prior JSON edited (``change`` returns None to drop it)."""
    tensors = load_file(str(source))
    with safe_open(str(source), framework="pt") as handle:
        header = dict(handle.metadata())
    data = change(json.loads(header.pop(METADATA_KEY)))
    if data is not None:
        header[METADATA_KEY] = json.dumps(data)
    save_file(tensors, str(target), metadata=header)
    return target.read_bytes()


def _future(data):
    data["format_version"] = 2
    return data


def _no_vector(data):
    del data["placeholders"][0]["vectors"]["base64"]
    return data


def test_bad_packages_fail_clearly_and_change_nothing(trained, exports, tiny_pipeline_dir, tmp_path):
    path = trained.path
    lora = path.read_bytes()
    with zipfile.ZipFile(exports["zip"].output) as archive:
        meta = json.loads(archive.read(META_JSON))
    cases = {
        "two.zip": ({ZIP_LORA_MEMBER: lora, "extra/other.safetensors": lora, META_JSON: json.dumps(meta)},
                    "must hold exactly one .safetensors LoRA file, found 2 "
                    r"\(lora/lora_weights.safetensors, extra/other.safetensors\)"),
        "disagree.zip": ({ZIP_LORA_MEMBER: lora, META_JSON: json.dumps({**meta, "placeholder_token_id": 151666})},
                         r"disagrees with .*: placeholder_token_id is 151666 in meta.json but 151665 in the LoRA "
                         "file. The package mixes files from different runs"),
        "stripped.zip": ({ZIP_LORA_MEMBER: _rewritten(path, tmp_path / "plain.safetensors", lambda d: None),
                          META_JSON: json.dumps(meta)},
                         "names placeholder '<zwx>' but .* carries no placeholder vector"),
        "novector.zip": ({ZIP_LORA_MEMBER: _rewritten(path, tmp_path / "nv.safetensors", _no_vector)},
                         r"lora/lora_weights.safetensors\): placeholder '<zwx>' has no stored vector"),
        "future.zip": ({ZIP_LORA_MEMBER: _rewritten(path, tmp_path / "future.safetensors", _future)},
                       "format version 2 is not supported by this release"),
        "future_meta.zip": ({ZIP_LORA_MEMBER: lora, META_JSON: json.dumps({**meta, "version": "2.0"})},
                            "meta.json version '2.0' is not supported by this release"),
    }
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    for name, (members, message) in cases.items():
        with pytest.raises(FormatError, match=message):
            load_zero_prior(pipe, _zip(tmp_path / name, members))
        assert len(pipe.tokenizer) == BASE_VOCAB and not pipe.get_list_adapters(), name
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder/a.safetensors").write_bytes(lora)
    (tmp_path / "folder/b.safetensors").write_bytes(lora)
    with pytest.raises(FormatError, match="found 2 \\(a.safetensors, b.safetensors\\)"):
        load_zero_prior(pipe, tmp_path / "folder")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(FormatError, match="not a readable zip archive"):
        load_zero_prior(pipe, tmp_path / "broken.zip")
    # exporting checks the source the same way
    with pytest.raises(FormatError, match="found 2"):
        export_weights(tmp_path / "two.zip", tmp_path / "out", "zip")
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused_unless_overwrite(trained, tmp_path):
    path = trained.path
    first = export_weights(path, tmp_path / "z", "zip")
    with pytest.raises(ExportError, match="weights.zip already exists; pass --overwrite"):
        export_weights(path, tmp_path / "z", "zip")
    assert export_weights(path, tmp_path / "z", "zip", overwrite=True).output == first.output
    export_weights(path, tmp_path / "d", "diffusers")
    with pytest.raises(ExportError, match="already exists and is not empty; pass --overwrite"):
        export_weights(path, tmp_path / "d", "diffusers")
    export_weights(path, tmp_path / "d", "diffusers", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["meta.json", "pytorch_lora_weights.safetensors"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="was not written by zero-prior export"):
        export_weights(path, tmp_path / "mine", "comfyui", overwrite=True)
    assert (tmp_path / "mine/notes.txt").read_text() == "keep me"
    with pytest.raises(ExportError, match="unknown export format 'onnx'; choose one of zip, comfyui, diffusers"):
        export_weights(path, tmp_path / "o", "onnx")


def test_interrupted_export_leaves_nothing(trained, tmp_path, monkeypatch):
    import zero_prior.weights.export as export

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "save_file", fail)
    with pytest.raises(ExportError, match="cannot export to .*/c: .*disk full; check the path and try again"):
        export_weights(trained.path, tmp_path / "c", "comfyui")
    assert list(tmp_path.iterdir()) == []  # no folder, no staging leftovers


def test_cli_export_and_its_error_line(trained, tmp_path, capsys):
    assert main(["export", str(trained.path), "--to", str(tmp_path), "--format", "zip"]) == 0
    assert "placeholder: <zwx> ids [151665], <bg2> ids [151666, 151667]" in capsys.readouterr().out
    assert main(["export", str(trained.path), "--to", str(tmp_path), "--format", "zip"]) == 1
    assert "zero-prior export: error:" in capsys.readouterr().err


def test_plain_lora_exports_as_a_baseline(trained, tmp_path, tiny_pipeline_dir):
    plain = save_lora_file(tmp_path / "baseline.safetensors", load_file(str(trained.path)))
    result = export_weights(plain, tmp_path / "zip", "zip")
    assert "no placeholder (a baseline run)" in result.notes[0]
    with zipfile.ZipFile(result.output) as archive:
        meta = json.loads(archive.read(META_JSON))
    assert meta["train_placeholder_token"] is False and meta["placeholder_token"] is None
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    assert load_zero_prior(pipe, result.output).tokens == [] and len(pipe.tokenizer) == BASE_VOCAB


def test_a_comfyui_export_of_a_family_the_node_does_not_cover_does_not_point_to_the_node(trained, tmp_path):
    from dataclasses import replace

    record = replace(read_zero_prior(trained.path), family="zimage")
    zimage = save_lora_file(tmp_path / "zimage.safetensors", load_file(trained.path), record=record)
    result = export_weights(zimage, tmp_path / "out", "comfyui")
    assert not any("Load zero-prior LoRA" in note for note in result.notes)
    readme = (tmp_path / "out" / "README.txt").read_text()
    assert "trained for Z-Image" in readme and "Generate with diffusers" in readme


def test_the_diffusers_export_counts_as_the_file_and_another_alpha_is_refused(trained, exports, tiny_pipeline_dir,
                                                                              tmp_path):
    # The export records alpha == rank in lora_adapter_metadata, as the training file implies: the same LoRA.
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(pipe, trained.path, adapter_name="file")
    assert load_zero_prior(pipe, exports["diffusers"].output).unchanged
    # The same tensors with metadata that doubles alpha would be those tensors applied twice: refused.
    [exported] = list(exports["diffusers"].output.glob("*.safetensors"))
    with safe_open(str(exported), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        header = dict(handle.metadata())
    adapter = json.loads(header[DIFFUSERS_METADATA_KEY])
    adapter["transformer.lora_alpha"] = 2 * adapter["transformer.lora_alpha"]
    doubled = tmp_path / "doubled.safetensors"
    save_file(tensors, str(doubled), metadata=header | {DIFFUSERS_METADATA_KEY: json.dumps(adapter)})
    with pytest.raises(PlaceholderError, match="holds the LoRA tensors of adapter 'file', but its adapter metadata "
                                               "gives them another alpha"):
        load_zero_prior(pipe, doubled)
    assert pipe.get_list_adapters() == {"transformer": ["file"]}
