"""load_zero_prior: the training-time embedding comes back exactly, the LoRA at its strength."""


import lora_files
import pytest
import tinytrain
import torch
from safetensors import safe_open

from zero_prior.errors import FormatError, PlaceholderError
from zero_prior.weights.format import save_lora_file
from zero_prior.weights.loader import load_zero_prior, unload_zero_prior
from zero_prior.weights.lora_check import DIGEST_SAMPLES, lora_digest, read_lora

PROMPT = tinytrain.TWO_TOKEN_PROMPT
_transformer_output = tinytrain.transformer_output


def test_round_trip_embeddings_and_lora_strength(trained, tiny_pipeline_dir):
    path, train_embeds, train_output = trained.path, trained.embeds, trained.output
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    result = load_zero_prior(pipe, path)
    assert [p.token for p in result.tokens] == ["<zwx>", "<bg2>"]
    assert [p.token_ids for p in result.tokens] == [(151665,), (151666, 151667)]
    assert pipe.text_encoder.get_input_embeddings().num_embeddings == 152064  # never shrunk
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(PROMPT, device="cpu")  # multi-vector expansion installed
        output = _transformer_output(pipe, embeds)
    assert (embeds - train_embeds).abs().max().item() <= 1e-6
    assert (output - train_output).abs().max().item() <= 1e-5
    assert "placeholder '<zwx>': ids [151665] (registered)" in result.summary()


def test_lora_scale_zero_is_the_base_transformer(trained, tiny_pipeline_dir):
    path, train_embeds, train_output = trained.path, trained.embeds, trained.output
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    with torch.no_grad():
        base = _transformer_output(pipe, train_embeds)
    load_zero_prior(pipe, path, lora_scale=0.0)
    with torch.no_grad():
        assert torch.allclose(_transformer_output(pipe, train_embeds), base, atol=1e-6)
    assert not torch.allclose(base, train_output, atol=1e-4)


def test_stock_diffusers_loader_accepts_the_file(trained, tiny_pipeline_dir):
    path = trained.path
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    # folder + weight_name: diffusers 0.39 refuses a bare file path when HF_HUB_OFFLINE=1
    pipe.load_lora_weights(str(path.parent), weight_name=path.name)
    assert pipe.get_list_adapters()["transformer"]


def test_loading_twice_reuses_the_same_vector_and_refuses_a_different_one(trained, tiny_pipeline_dir, tmp_path):
    path = trained.path
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(pipe, path, adapter_name="first")
    # The same file again at the same strength changes nothing; at another strength it is refused.
    same = load_zero_prior(pipe, path, adapter_name="again")
    assert same.unchanged and same.adapter_name == "first" and "nothing changed" in same.summary()
    assert pipe.get_list_adapters() == {"transformer": ["first"]} and len(pipe.tokenizer) == 151668
    with pytest.raises(PlaceholderError, match=r"already loaded as adapter 'first' .* would apply the LoRA twice"):
        load_zero_prior(pipe, path, adapter_name="again", lora_scale=0.5)
    # Another LoRA trained with the same vector reuses the token, next to the first LoRA.
    other_lora = lora_files.with_lora_scaled(path, tmp_path / "other_lora.safetensors", 2.0)
    again = load_zero_prior(pipe, other_lora, adapter_name="second", lora_scale=0.5)
    assert again.reused == ["<zwx>", "<bg2>"] and len(pipe.tokenizer) == 151668
    # the first file's LoRA is not switched off behind its still-registered token
    assert pipe.get_active_adapters() == ["first", "second"]
    assert "adapters ['first'] stay active (at their strengths) alongside 'second'" in again.summary()
    other = lora_files.rewrite(path, tmp_path / "other.safetensors", lambda d: lora_files.scale_vectors(d, 2.0))
    with pytest.raises(PlaceholderError, match="'<zwx>' is already registered in this pipeline with a different "
                                               "vector"):
        load_zero_prior(pipe, other, adapter_name="third")


def test_a_lora_that_differs_only_between_the_sampled_elements_loads_as_the_new_lora_it_is(
    trained, tiny_pipeline_dir, tmp_path
):
    # The digest hashes DIGEST_SAMPLES elements of each tensor: a file that differs from the loaded one only
    # elsewhere has the same digest, and the live adapter's own tensors must tell them apart.
    path = trained.path
    with safe_open(str(path), framework="pt") as handle:
        [target, *_] = sorted(key for key in handle.keys() if "lora_B" in key or "lora_up" in key)
        assert handle.get_slice(target).get_shape()[0] * handle.get_slice(target).get_shape()[1] >= 4 * DIGEST_SAMPLES

    def nudge(key: str, tensor: torch.Tensor) -> torch.Tensor:
        if key != target:
            return tensor
        changed = tensor.clone()
        changed.view(-1)[1] += 0.5  # the samples are elements 0, step, 2 * step...: element 1 is not one of them
        return changed

    near = lora_files.with_tensors(path, tmp_path / "near.safetensors", nudge)
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    [loaded, _], [nudged, _] = read_lora(pipe, path, "a"), read_lora(pipe, near, "b")
    assert lora_digest(loaded) == lora_digest(nudged) and lora_digest(loaded, None) != lora_digest(nudged, None)
    load_zero_prior(pipe, path, adapter_name="first")
    second = load_zero_prior(pipe, near, adapter_name="second")
    assert not second.unchanged and second.reused == ["<zwx>", "<bg2>"]
    assert pipe.get_list_adapters() == {"transformer": ["first", "second"]}
    # and the file that is loaded still counts as loaded
    assert load_zero_prior(pipe, path, adapter_name="third").unchanged


def test_a_refusal_after_the_embedding_grew_puts_back_its_rows(trained, tiny_pipeline_dir, tmp_path):
    # A file whose first new token registers (growing the embedding past the tokens an earlier file keeps) and
    # whose second is refused in the template: the refusal must take the grown rows out again too.
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer))
    load_zero_prior(pipe, trained.path, adapter_name="first")  # grows the embedding (by a block of rows)
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer))  # no spare rows: the next new entry grows it
    rows = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    vocabulary = dict(pipe.tokenizer.get_vocab())

    def rename(data: dict) -> None:
        data["placeholders"][0].update(token="<new>", token_strings=["<new>"])
        data["placeholders"][1].update(token="a-", token_strings=["a-", "a-_1"])  # refused inside the template

    other = lora_files.rewrite(trained.path, tmp_path / "other.safetensors", rename)
    with pytest.raises(PlaceholderError, match="'a-' does not stay one token inside the Qwen-Image prompt template"):
        load_zero_prior(pipe, other, adapter_name="second")
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight, rows)
    assert pipe.tokenizer.get_vocab() == vocabulary and pipe.get_list_adapters() == {"transformer": ["first"]}
    # and unloading the first file still gives back the embedding it began with
    unload_zero_prior(pipe)
    assert pipe.text_encoder.get_input_embeddings().num_embeddings == len(pipe.tokenizer) == 151665


def test_plain_lora_loads_with_a_notice(trained, tiny_pipeline_dir, tmp_path):
    path = trained.path
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    plain = save_lora_file(tmp_path / "baseline.safetensors", tensors)
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    result = load_zero_prior(pipe, plain)
    assert result.tokens == [] and len(pipe.tokenizer) == 151665
    assert "no zero-prior metadata: loaded as a plain LoRA" in result.notices[0]


def test_hidden_size_mismatch_changes_nothing(trained, tiny_pipeline_dir, tmp_path):
    path = trained.path

    def widen(data):
        data["hidden_size"] = 32
        for item in data["placeholders"]:
            vectors = torch.zeros(item["num_vectors"], 32)
            lora_files.set_vectors(item, vectors)

    bad = lora_files.rewrite(path, tmp_path / "wide.safetensors", widen)
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    with pytest.raises(FormatError, match="placeholder vectors have hidden size 32 but this pipeline's text encoder "
                                          "has 64"):
        load_zero_prior(pipe, bad)
    assert len(pipe.tokenizer) == 151665 and not pipe.get_list_adapters()


def test_corrupt_vector_changes_nothing(trained, tiny_pipeline_dir, tmp_path):
    path = trained.path

    def corrupt(data):
        item = data["placeholders"][0]["vectors"]
        item["base64"] = ("A" if item["base64"][0] != "A" else "B") + item["base64"][1:]

    bad = lora_files.rewrite(path, tmp_path / "corrupt.safetensors", corrupt)
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    with pytest.raises(FormatError, match="checksum mismatch"):
        load_zero_prior(pipe, bad)
    assert len(pipe.tokenizer) == 151665 and not pipe.get_list_adapters()


def test_future_format_version(trained, tiny_pipeline_dir, tmp_path):
    path = trained.path
    bad = lora_files.rewrite(path, tmp_path / "future.safetensors", lambda d: d.update(format_version=2))
    with pytest.raises(FormatError, match="format version 2 is not supported by this release"):
        load_zero_prior(tinytrain.load_pipe(tiny_pipeline_dir), bad)
