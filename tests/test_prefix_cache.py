"""PrefixCache equals diffusers' encode_prompt (embeddings and placeholder gradients) and invalidates correctly."""

from __future__ import annotations

import pytest
import tinytrain
import torch

from zero_prior.placeholder.config import PlaceholderConfig
from zero_prior.placeholder.prepare import add_placeholders
from zero_prior.placeholder.vocabulary import expand_prompt
from zero_prior.training.prefix_cache import PrefixCache

TOLERANCE = 1e-5
CONFIGS = [PlaceholderConfig(), PlaceholderConfig(token="<bg3>", num_vectors=3)]


@pytest.fixture
def setup(tiny_pipeline_dir):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    placeholders = add_placeholders(pipe.text_encoder, pipe.tokenizer, CONFIGS)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # well away from zero so every gradient path is visible
        for p in placeholders:
            p.vectors.copy_(torch.randn(p.vectors.shape, generator=generator))
    return pipe, placeholders


def _expand(prompts, placeholders):
    return [expand_prompt(p, [x.registered for x in placeholders]) for p in prompts]


def _loss_and_grads(encode, prompts, placeholders):
    for p in placeholders:
        p.vectors.grad = None
    embeds, mask = encode(prompts)
    weights = torch.randn(embeds.shape, generator=torch.Generator().manual_seed(1))
    (embeds * weights).sum().backward()
    return embeds.detach(), mask, [p.vectors.grad.clone() for p in placeholders]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize(
    "prompts",
    [
        ["<zwx> standing in a field"],
        ["a photo of <zwx>, smiling"],
        ["a photo of <zwx>"],
        ["a photo of <bg3> with <zwx> in front"],
        ["a photo of <zwx>, smiling in the warm evening light", "<bg3> at night"],
        ["a landscape with no placeholder at all", "<zwx>"],
    ],
    ids=["start", "middle", "end", "multi_vector", "batch_two_lengths", "batch_without_token"],
)
def test_encode_matches_pipeline(setup, prompts):
    pipe, placeholders = setup
    prompts = _expand(prompts, placeholders)
    cache = PrefixCache.from_pipeline(pipe, placeholders)
    ref_embeds, ref_mask, ref_grads = _loss_and_grads(lambda p: pipe.encode_prompt(p, device="cpu"), prompts,
                                                      placeholders)
    for _ in range(2):  # a miss, then a hit
        embeds, mask, grads = _loss_and_grads(cache.encode, prompts, placeholders)
        assert embeds.shape == ref_embeds.shape
        assert (mask is None) == (ref_mask is None)
        if mask is not None:
            assert torch.equal(mask, ref_mask)
        assert _relative(embeds, ref_embeds) <= TOLERANCE
        for grad, ref in zip(grads, ref_grads):
            if ref.norm() == 0:  # that placeholder is not in these prompts
                assert grad.norm() == 0
            else:
                assert _relative(grad, ref) <= TOLERANCE
    # One miss per distinct prefix; every other lookup (repeats and the second attempt) hits,
    # except prompts without a placeholder: encoded each time, never stored.
    without = sum(not any(p.registered.token in prompt for p in placeholders) for prompt in prompts)
    assert cache.stats.misses == len(cache) and cache.stats.uncached == 2 * without
    assert cache.stats.hits == 2 * (len(prompts) - without) - len(cache)


def test_gradient_is_nonzero_and_prefix_is_reused(setup):
    pipe, placeholders = setup
    cache = PrefixCache.from_pipeline(pipe, placeholders)
    _, _, grads = _loss_and_grads(cache.encode, ["a photo of <zwx>"], placeholders)
    assert grads[0].norm() > 0
    cache.encode(["a photo of <zwx>"])
    assert (cache.stats.hits, cache.stats.misses, len(cache)) == (1, 1, 1)


def test_captions_with_one_prefix_share_an_entry(setup):
    pipe, placeholders = setup
    cache = PrefixCache.from_pipeline(pipe, placeholders)
    cache.encode(["<zwx> in a field"])
    embeds, _ = cache.encode(["<zwx> on a beach, at dusk"])
    assert (cache.stats.misses, cache.stats.hits, len(cache)) == (1, 1, 1)
    ref, _ = pipe.encode_prompt(["<zwx> on a beach, at dusk"], device="cpu")
    assert _relative(embeds.detach(), ref.detach()) <= TOLERANCE


def test_weight_change_invalidates(setup):
    pipe, placeholders = setup
    cache = PrefixCache.from_pipeline(pipe, placeholders)
    prompt = ["a photo of <zwx>, smiling"]
    cache.encode(prompt)
    with torch.no_grad():
        pipe.text_encoder.model.language_model.layers[0].mlp.up_proj.weight.mul_(1.5)
    embeds, _ = cache.encode(prompt)
    assert cache.stats.invalidations == 1 and cache.stats.misses == 2
    ref, _ = pipe.encode_prompt(prompt, device="cpu")
    assert _relative(embeds.detach(), ref.detach()) <= TOLERANCE


def test_replaced_weights_invalidate(setup):
    """A tensor or module put in place of an encoder's own (no in-place write) is seen too."""
    pipe, placeholders = setup
    cache = PrefixCache.from_pipeline(pipe, placeholders)
    prompt = ["a photo of <zwx>, smiling"]
    cache.encode(prompt)
    mlp = pipe.text_encoder.model.language_model.layers[0].mlp
    mlp.up_proj._parameters["weight"] = torch.nn.Parameter(mlp.up_proj.weight.detach() * 1.5)  # no registration
    cache.encode(prompt)
    replacement = torch.nn.Linear(mlp.down_proj.in_features, mlp.down_proj.out_features, bias=False)
    mlp.down_proj = replacement  # a new submodule: its tensors are found by a new walk
    cache.encode(prompt)
    with torch.no_grad():
        replacement.weight.mul_(0.5)  # and an in-place write to the new module's weight is seen
    embeds, _ = cache.encode(prompt)
    assert cache.stats.invalidations == 3 and cache.stats.misses == 4
    ref, _ = pipe.encode_prompt(prompt, device="cpu")
    assert _relative(embeds.detach(), ref.detach()) <= TOLERANCE


def test_data_writes_need_digest(setup):
    pipe, placeholders = setup
    weight = pipe.text_encoder.model.language_model.layers[0].mlp.up_proj.weight
    prompt = ["a photo of <zwx>, smiling"]
    version_cache = PrefixCache.from_pipeline(pipe, placeholders)
    digest_cache = PrefixCache.from_pipeline(pipe, placeholders, fingerprint="digest")
    version_cache.encode(prompt)
    digest_cache.encode(prompt)
    weight.data.mul_(1.5)  # .data has its own version counter: invisible to "version"
    version_cache.encode(prompt)
    embeds, _ = digest_cache.encode(prompt)
    assert version_cache.stats.invalidations == 0
    assert digest_cache.stats.invalidations == 1
    ref, _ = pipe.encode_prompt(prompt, device="cpu")
    assert _relative(embeds.detach(), ref.detach()) <= TOLERANCE


def test_manual_fingerprint_and_caption_change(setup):
    pipe, placeholders = setup
    cache = PrefixCache.from_pipeline(pipe, placeholders, fingerprint="manual")
    cache.encode(["a photo of <zwx>"])
    cache.encode(["a drawing of <zwx>"])
    assert (cache.stats.misses, len(cache)) == (2, 2)
    cache.invalidate()
    assert len(cache) == 0 and cache.stats.invalidations == 1


def test_lru_bound(setup):
    pipe, placeholders = setup
    cache = PrefixCache.from_pipeline(pipe, placeholders, max_entries=2)
    for word in ("red", "green", "blue"):
        cache.encode([f"a {word} <zwx>"])
    assert len(cache) == 2


def test_byte_bound_keeps_the_newest_entry(setup):
    pipe, placeholders = setup
    cache = PrefixCache.from_pipeline(pipe, placeholders, max_bytes=1)
    for word in ("red", "green"):
        embeds, _ = cache.encode([f"a {word} <zwx>"])
    assert len(cache) == 1 and cache.nbytes > 1
    ref, _ = pipe.encode_prompt(["a green <zwx>"], device="cpu")
    assert _relative(embeds.detach(), ref.detach()) <= TOLERANCE


def test_prompts_without_the_token_are_not_stored(setup):
    pipe, placeholders = setup
    cache = PrefixCache.from_pipeline(pipe, placeholders)
    embeds, _ = cache.encode(["a photo of a dog in a field"])
    assert len(cache) == 0 and cache.nbytes == 0 and cache.stats.uncached == 1
    ref, _ = pipe.encode_prompt(["a photo of a dog in a field"], device="cpu")
    assert _relative(embeds.detach(), ref.detach()) <= TOLERANCE


def test_bad_arguments(setup):
    pipe, placeholders = setup
    with pytest.raises(ValueError, match="fingerprint must be one of version, digest, manual, got 'sha'"):
        PrefixCache.from_pipeline(pipe, placeholders, fingerprint="sha")
    with pytest.raises(Exception, match="needs at least one placeholder id"):
        PrefixCache(pipe.text_encoder, pipe.tokenizer, [])
