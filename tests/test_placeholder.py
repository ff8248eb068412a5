"""The trainable splice: init, gradient path, and the proof that only the placeholder trains."""

import pytest
import tinytrain
import torch

from zero_prior.placeholder.config import PlaceholderConfig
from zero_prior.placeholder.prepare import add_placeholders
from zero_prior.placeholder.starts import initial_vectors
from zero_prior.placeholder.telemetry import placeholder_stats


def _encoder_state(pipe):
    return {name: tensor.detach().clone() for name, tensor in pipe.text_encoder.state_dict().items()}


@pytest.mark.slow  # full-width rows: about 1.3 s
def test_zero_prior_init_is_seeded_and_leaves_global_rng_alone(qwen_tokenizer):
    weight = torch.zeros(152064, 3584)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = initial_vectors(PlaceholderConfig(), weight, qwen_tokenizer, 151665)
    assert torch.equal(torch.rand(3), expected_next)
    assert torch.equal(first, initial_vectors(PlaceholderConfig(), weight, qwen_tokenizer, 151665))
    assert first.dtype == torch.float32 and first.shape == (1, 3584)
    assert 5e-4 < first.norm().item() < 7e-4  # about 1e-5 * sqrt(3584) = 6e-4
    assert not torch.equal(first, initial_vectors(PlaceholderConfig(seed=1), weight, qwen_tokenizer, 151665))


def test_word_and_vocab_stats_inits(qwen_tokenizer):
    weight = torch.randn(152064, 16, generator=torch.Generator().manual_seed(0))
    word_config = PlaceholderConfig(init="word", init_word="person", num_vectors=2)
    word = initial_vectors(word_config, weight, qwen_tokenizer, 151665)
    ids = qwen_tokenizer(" person", add_special_tokens=False)["input_ids"]
    assert torch.allclose(word, weight[ids].mean(0).expand(2, 16))
    stats = initial_vectors(PlaceholderConfig(init="vocab_stats", num_vectors=64), weight, qwen_tokenizer, 151665)
    assert 0.8 < stats.std().item() < 1.2


def test_splice_reaches_encode_prompt_and_only_the_vector_gets_grad(tiny_pipeline_dir):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    [zwx] = add_placeholders(pipe.text_encoder, pipe.tokenizer, [PlaceholderConfig()])
    assert not any(p.requires_grad for p in pipe.text_encoder.parameters())
    embeds, _ = pipe.encode_prompt("a photo of <zwx>", device="cpu")
    embeds.sum().backward()
    assert zwx.vectors.grad is not None and zwx.vectors.grad.norm() > 0
    assert all(p.grad is None for p in pipe.text_encoder.parameters())
    # the hook really is what the encoder sees at the placeholder position
    ids = pipe.tokenizer("a photo of <zwx>")["input_ids"]
    hidden = pipe.text_encoder.get_input_embeddings()(torch.tensor([ids]))
    assert torch.equal(hidden[0, ids.index(151665)], zwx.vectors[0].detach())
    zwx.detach()
    assert not torch.equal(pipe.text_encoder.get_input_embeddings()(torch.tensor([ids]))[0, -1], zwx.vectors[0])


def test_bf16_encoder_with_gradient_checkpointing(tiny_pipeline_dir):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir, dtype=torch.bfloat16)
    [zwx] = add_placeholders(pipe.text_encoder, pipe.tokenizer, [PlaceholderConfig()])
    pipe.text_encoder.gradient_checkpointing_enable()
    pipe.text_encoder.train()  # checkpointing is only active in train mode
    embeds, _ = pipe.encode_prompt("<zwx> in natural lighting", device="cpu")
    assert embeds.dtype == torch.bfloat16
    embeds.float().pow(2).sum().backward()
    assert zwx.vectors.dtype == torch.float32 and zwx.vectors.grad.norm() > 0
    assert all(p.grad is None for p in pipe.text_encoder.parameters())


def test_isolation_after_20_adamw_steps(tiny_pipeline_dir, capsys):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    before = _encoder_state(pipe)
    configs = [PlaceholderConfig()]
    [zwx], optimizer = tinytrain.train(pipe, configs, steps=20)
    after = _encoder_state(pipe)
    assert after.keys() == before.keys()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed == []  # every encoder tensor, every other row and lm_head: bit-identical
    assert optimizer.param_groups[0]["weight_decay"] == 0.01  # the LoRA group did decay
    assert not torch.equal(zwx.vectors.detach(), zwx.initial)
    assert all(p.grad is None for p in pipe.text_encoder.parameters())  # no gradient exists for any other row
    # Diagnostic pass: what the embedding matrix would receive if it were trainable. The prompt's
    # other rows would get gradient (so isolation is needed); the placeholder's own row gets none,
    # because its output is replaced by the spliced vector.
    weight = pipe.text_encoder.get_input_embeddings().weight
    weight.requires_grad_(True)
    zwx.vectors.grad = None
    tinytrain.flow_loss(pipe, tinytrain.PROMPT, torch.Generator().manual_seed(1)).backward()
    weight.requires_grad_(False)
    target = zwx.vectors.grad.norm().item()
    rows = weight.grad.norm(dim=1)
    assert target > 0 and rows[151665].item() == 0.0 and rows.count_nonzero().item() > 0
    with capsys.disabled():
        print(f"\nisolation: target token gradient norm {target:.4g} / other rows 0 (no text-encoder tensor "
              f"requires grad; {len(before)} tensors bit-identical after 20 AdamW steps); an unisolated matrix "
              f"would have received gradient norm {rows.norm():.4g} on {rows.count_nonzero().item()} other rows; "
              f"vector norm {zwx.initial.norm():.3g} -> {zwx.vectors.norm():.3g}")


def test_telemetry(tiny_pipeline_dir):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    [zwx] = add_placeholders(pipe.text_encoder, pipe.tokenizer, [PlaceholderConfig(init="word", init_word="cat")])
    weight = pipe.text_encoder.get_input_embeddings().weight
    stats = placeholder_stats(zwx, weight, pipe.tokenizer, tokenizer_length=151665, top_k=3)
    assert stats["cosine_to_initial"][0] > 0.9999 and stats["grad_norm"] is None
    token, score = stats["nearest_tokens"][0][0]
    assert token == " cat" and score > 0.9999
    assert abs(stats["norm"][0] - zwx.initial.norm().item()) < 1e-6


def test_module_sha256_sees_any_change_in_any_dtype():
    from zero_prior.placeholder.telemetry import module_sha256

    module = torch.nn.Linear(4, 3).to(torch.bfloat16)
    module.register_buffer("scale", torch.tensor(0.5))  # 0-dim, like a quantized weight's scale
    before = module_sha256(module)
    assert module_sha256(module) == before
    with torch.no_grad():
        module.weight[1, 2] += 1
    assert module_sha256(module) != before
