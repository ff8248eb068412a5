"""The file format: metadata round trip, strict verification, atomic LoRA-only writes."""

import base64
import json
import os

import pytest
import torch
from safetensors import safe_open

from zero_prior.errors import FormatError
from zero_prior.weights.format import (
    FORMAT_VERSION,
    METADATA_KEY,
    StoredPlaceholder,
    ZeroPriorRecord,
    decode_record,
    encode_record,
    read_zero_prior,
    save_lora_file,
)

HIDDEN = 8


def _meta(num_vectors=2):
    vectors = torch.randn(num_vectors, HIDDEN, generator=torch.Generator().manual_seed(0))
    strings = ["<zwx>"] + [f"<zwx_{i}>" for i in range(1, num_vectors)]
    record = StoredPlaceholder(
        token="<zwx>", token_strings=strings, token_ids=list(range(151665, 151665 + num_vectors)),
        init="zero_prior", init_std=1e-5, init_seed=42, init_word=None,
        vectors=vectors, initial_norms=[6e-4] * num_vectors,
    )
    return ZeroPriorRecord([record], hidden_size=HIDDEN, tokenizer_length=151665,
                             base_model="Qwen/Qwen-Image", training_step=10, library_version="0.1.0")


def _lora():
    return {
        "diffusion_model.transformer_blocks.0.attn.to_q.lora_A.weight": torch.randn(4, HIDDEN),
        "diffusion_model.transformer_blocks.0.attn.to_q.lora_B.weight": torch.randn(HIDDEN, 4),
    }


def test_metadata_round_trip_is_bit_exact():
    meta = _meta()
    back = decode_record(encode_record(meta))
    [record] = back.placeholders
    assert torch.equal(record.vectors, meta.placeholders[0].vectors)
    assert record.token_ids == [151665, 151666] and record.token_strings == ["<zwx>", "<zwx_1>"]
    assert (back.hidden_size, back.tokenizer_length, back.training_step, back.base_model) == (
        HIDDEN, 151665, 10, "Qwen/Qwen-Image")


def test_file_holds_only_lora_tensors_and_the_metadata(tmp_path):
    path = save_lora_file(tmp_path / "out.safetensors", _lora(), {"name": "job"}, _meta())
    with safe_open(str(path), framework="pt") as handle:
        assert sorted(handle.keys()) == sorted(_lora())
        header = handle.metadata()
    assert header["name"] == "job"
    data = json.loads(header[METADATA_KEY])
    assert data["format_version"] == FORMAT_VERSION and data["placeholders"][0]["num_vectors"] == 2
    assert torch.equal(read_zero_prior(path).placeholders[0].vectors, _meta().placeholders[0].vectors)


def test_plain_lora_has_no_record(tmp_path):
    path = save_lora_file(tmp_path / "plain.safetensors", _lora())
    assert read_zero_prior(path) is None


def test_extra_tensors_are_refused_before_writing(tmp_path):
    state = {**_lora(), "emb_params.<zwx>": torch.zeros(1, HIDDEN)}
    with pytest.raises(FormatError, match="1 tensor\\(s\\) are not LoRA weights \\(first: 'emb_params.<zwx>'\\)"):
        save_lora_file(tmp_path / "out.safetensors", state, record=_meta())
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = save_lora_file(tmp_path / "out.safetensors", _lora(), record=_meta())
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        save_lora_file(path, _lora(), record=_meta(num_vectors=1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]


def _tampered(change):
    data = json.loads(encode_record(_meta()))
    change(data)
    return json.dumps(data)


def test_checksum_mismatch():
    def flip(data):
        raw = bytearray(base64.b64decode(data["placeholders"][0]["vectors"]["base64"]))
        raw[0] ^= 1
        data["placeholders"][0]["vectors"]["base64"] = base64.b64encode(bytes(raw)).decode()

    with pytest.raises(FormatError, match="placeholder '<zwx>': checksum mismatch"):
        decode_record(_tampered(flip), source="f.safetensors")


def test_future_version_is_refused():
    with pytest.raises(FormatError, match="format version 99 is not supported by this release"):
        decode_record(_tampered(lambda d: d.update(format_version=99)))


def test_missing_vector_is_refused():
    with pytest.raises(FormatError, match="has no stored vector"):
        decode_record(_tampered(lambda d: d["placeholders"][0]["vectors"].pop("base64")))


def test_hidden_size_mismatch_inside_file_is_refused():
    with pytest.raises(FormatError, match="does not match hidden size 16"):
        decode_record(_tampered(lambda d: d.update(hidden_size=16)))


def test_not_json_and_not_ours():
    with pytest.raises(FormatError, match="is not valid JSON"):
        decode_record("{")
    with pytest.raises(FormatError, match="is not a zero-prior record"):
        decode_record(json.dumps({"format": "other"}))


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(FormatError, match="not a readable .safetensors file"):
        read_zero_prior(bad)
    with pytest.raises(FormatError, match="no such file"):
        read_zero_prior(tmp_path / "missing.safetensors")
