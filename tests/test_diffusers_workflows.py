"""What a diffusers user does after ``load_zero_prior``: strengths, other pipelines, fusing, saving, unloading.

The tiny pipeline takes the same diffusers code paths as the real one. The
shared ``trained`` file has ``<zwx>`` (one vector) and ``<bg2>`` (two
vectors); ``cat_lora`` is a second file with one single-vector token.
"""

from __future__ import annotations

import math

import lora_files
import pytest
import tinytrain
import torch
from diffusers import QwenImageImg2ImgPipeline, QwenImagePipeline
from peft.tuners.tuners_utils import BaseTunerLayer

from zero_prior.errors import PlaceholderError
from zero_prior.placeholder.config import PlaceholderConfig
from zero_prior.weights.applied import saved_records, set_saved_records
from zero_prior.weights.loader import load_zero_prior, unload_zero_prior
from zero_prior.weights.lora_check import lora_digest, read_lora

PROMPT = tinytrain.TWO_TOKEN_PROMPT
BASE_VOCAB = 151665


@pytest.fixture(scope="module")
def cat_lora(tiny_pipeline_dir, tmp_path_factory):
    """A one-token file (``<cat9>``), trained 2 steps."""
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    configs = [PlaceholderConfig(token="<cat9>", seed=7)]
    placeholders, _ = tinytrain.train(pipe, configs, steps=2, lr=0.05, prompt="a photo of <cat9>")
    return tinytrain.save(pipe, placeholders, configs, tmp_path_factory.mktemp("cat") / "cat.safetensors")


def _embeds(pipe, prompt: str = PROMPT) -> torch.Tensor:
    with torch.no_grad():
        return pipe.encode_prompt(prompt, device="cpu")[0]


def _scalings(pipe, adapter: str) -> list[float]:
    return [m.scaling[adapter] for m in pipe.transformer.modules()
            if isinstance(m, BaseTunerLayer) and adapter in getattr(m, "scaling", {})]


def _snapshot(pipe) -> tuple:
    tokenizer = pipe.tokenizer
    return (dict(tokenizer.get_vocab()), {i: str(t) for i, t in tokenizer.added_tokens_decoder.items()},
            len(tokenizer), pipe.text_encoder.get_input_embeddings().weight.detach().clone())


def _assert_same(pipe, before) -> None:
    vocab, added, length, weight = before
    assert pipe.tokenizer.get_vocab() == vocab and len(pipe.tokenizer) == length
    assert {i: str(t) for i, t in pipe.tokenizer.added_tokens_decoder.items()} == added
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight, weight)


def test_a_second_load_keeps_the_strength_the_user_set(trained, tiny_pipeline_dir, tmp_path):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(pipe, trained.path, adapter_name="a")
    pipe.set_adapters(["a"], [0.3])
    before = _scalings(pipe, "a")
    other = lora_files.with_lora_scaled(trained.path, tmp_path / "other.safetensors", 2.0)
    load_zero_prior(pipe, other, adapter_name="b", lora_scale=0.7)
    assert _scalings(pipe, "a") == before  # diffusers' set_adapters would have reset "a" to 1.0
    assert pipe.get_active_adapters() == ["a", "b"]
    rank = tinytrain.LORA_RANK
    assert all(math.isclose(s, 0.7 * rank / rank) for s in _scalings(pipe, "b"))


def test_multi_vector_expansion_reaches_every_pipeline_over_the_tokenizer(trained, tiny_pipeline_dir):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(pipe, trained.path)
    expected = trained.embeds
    img2img = QwenImageImg2ImgPipeline.from_pipe(pipe)
    rebuilt = QwenImagePipeline(**pipe.components)
    for embeds in (_embeds(pipe), _embeds(img2img), _embeds(rebuilt),
                   QwenImagePipeline.encode_prompt(rebuilt, PROMPT, device="cpu")[0].detach()):
        assert embeds.shape == expected.shape and (embeds - expected).abs().max().item() <= 1e-6
    ids = pipe.tokenizer("<bg2>").input_ids
    assert ids == [151666, 151667]  # one string, both entries


def test_saving_a_pipeline_with_multi_vector_expansion_is_refused_until_unloaded(trained, tiny_pipeline_dir,
                                                                              tmp_path):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(pipe, trained.path)
    with pytest.raises(PlaceholderError, match=r"expands the multi-vector placeholders \['<bg2>'\] at run time"):
        pipe.tokenizer.save_pretrained(tmp_path / "tokenizer")
    assert not (tmp_path / "tokenizer").exists()
    unload_zero_prior(pipe)
    pipe.tokenizer.save_pretrained(tmp_path / "tokenizer")  # a plain tokenizer again
    assert (tmp_path / "tokenizer" / "tokenizer_config.json").is_file()


def test_unload_restores_tokenizer_and_rows_bit_exactly(trained, cat_lora, tiny_pipeline_dir):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    before = _snapshot(pipe)
    load_zero_prior(pipe, trained.path, adapter_name="two")
    load_zero_prior(pipe, cat_lora, adapter_name="cat")
    cat_embeds, bg2_embeds = _embeds(pipe, "a photo of <cat9>"), _embeds(pipe, "a photo of <bg2>")
    assert pipe.tokenizer.convert_tokens_to_ids(["<bg2>", "<bg2_1>", "<cat9>"]) == [151666, 151667, 151668]
    # Removing the first token moves the later ones to the ids a load without it gives; they keep working.
    removed = unload_zero_prior(pipe, "<zwx>")
    assert removed.tokens == ["<zwx>"] and removed.adapters == ["two"]  # the LoRA trained with <zwx> goes too
    assert pipe.tokenizer.convert_tokens_to_ids(["<bg2>", "<bg2_1>", "<cat9>"]) == [151665, 151666, 151667]
    assert torch.equal(_embeds(pipe, "a photo of <cat9>"), cat_embeds)
    assert torch.equal(_embeds(pipe, "a photo of <bg2>"), bg2_embeds)
    assert "<zwx>" not in pipe.tokenizer.get_vocab() and pipe.get_list_adapters() == {"transformer": ["cat"]}
    assert unload_zero_prior(pipe).adapters == ["cat"]
    _assert_same(pipe, before)
    assert not pipe.get_list_adapters() and type(pipe.tokenizer).__name__ == "Qwen2Tokenizer"
    assert not any(isinstance(m, BaseTunerLayer) for m in pipe.transformer.modules())  # no LoRA layers left
    with pytest.raises(PlaceholderError, match=r"'<zwx>' was not registered by load_zero_prior"):
        unload_zero_prior(pipe, "<zwx>")


def test_unload_lora_weights_keeps_the_token_and_the_file_loads_again(trained, tiny_pipeline_dir):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(pipe, trained.path)
    with_lora = _embeds(pipe)
    pipe.unload_lora_weights()  # diffusers removes the LoRA layers only
    assert not pipe.get_list_adapters() and "<zwx>" in pipe.tokenizer.get_vocab()
    assert torch.equal(_embeds(pipe), with_lora)  # the token and its row stay
    again = load_zero_prior(pipe, trained.path)
    assert again.reused == ["<zwx>", "<bg2>"] and not again.unchanged and pipe.get_list_adapters()


def test_delete_adapters_then_load_again(trained, tiny_pipeline_dir):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    result = load_zero_prior(pipe, trained.path)
    pipe.delete_adapters(result.adapter_name)
    assert load_zero_prior(pipe, trained.path).reused == ["<zwx>", "<bg2>"]


def test_fuse_and_unfuse_keep_the_output(trained, tiny_pipeline_dir):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(pipe, trained.path)
    with torch.no_grad():
        loaded = tinytrain.transformer_output(pipe, trained.embeds)
        pipe.fuse_lora()
        fused = tinytrain.transformer_output(pipe, trained.embeds)
        pipe.unfuse_lora()
        unfused = tinytrain.transformer_output(pipe, trained.embeds)
    assert torch.allclose(fused, loaded, atol=1e-5) and torch.allclose(unfused, loaded, atol=1e-6)
    assert (loaded - trained.output).abs().max().item() <= 1e-5


def test_a_record_written_before_the_sampled_digest_still_refuses_the_fused_lora(cat_lora, tiny_pipeline_dir):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(pipe, cat_lora)
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # the LoRA is in the weights now
    # The record as loads before the sampled digest wrote it (and a pipeline saved then keeps): the sha256 of
    # every element, and no "lora_samples" key.
    [record] = saved_records(pipe.text_encoder)
    lora, _ = read_lora(pipe, cat_lora, "cat")
    old = {key: value for key, value in record.items() if key != "lora_samples"}
    set_saved_records(pipe.text_encoder, [old | {"lora_sha256": lora_digest(lora, None)}])
    with pytest.raises(PlaceholderError, match=r"already applied to this pipeline and its weights have changed since"):
        load_zero_prior(pipe, cat_lora)
    assert not pipe.get_list_adapters()


@pytest.mark.slow  # a save_pretrained and a reload: about 3 s
def test_a_fused_and_saved_pipeline_refuses_the_same_file_again(cat_lora, tiny_pipeline_dir, tmp_path):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(pipe, cat_lora)
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # the LoRA is in the weights now
    pipe.save_pretrained(tmp_path / "fused")
    saved = QwenImagePipeline.from_pretrained(tmp_path / "fused")
    assert "<cat9>" in saved.tokenizer.get_vocab()  # the token and its row were saved
    with pytest.raises(PlaceholderError, match=r"already applied to this pipeline and its weights have changed since"):
        load_zero_prior(saved, cat_lora)
    assert not saved.get_list_adapters()
