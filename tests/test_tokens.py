"""Registering placeholders in the real Qwen2.5-VL tokenizer (built from the real BPE ranks)."""

import pytest
import tinytrain
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from zero_prior.errors import ConfigError, PlaceholderError
from zero_prior.models.qwen_image import PROMPT_TEMPLATE, PROMPT_TEMPLATE_START_IDX, QWEN_IMAGE
from zero_prior.models.qwen_image_edit_plus import QWEN_IMAGE_EDIT_PLUS
from zero_prior.placeholder.config import PlaceholderConfig
from zero_prior.placeholder.splice import ensure_embedding_rows
from zero_prior.placeholder.vocabulary import (
    TOKEN_CONTEXTS,
    check_placeholders,
    expand_prompt,
    light_copy,
    register_placeholders,
)


def test_default_token_gets_the_first_spare_id(qwen_tokenizer):
    [zwx] = register_placeholders(qwen_tokenizer, [PlaceholderConfig()])
    assert zwx.token_ids == (151665,) and len(qwen_tokenizer) == 151666
    ids = qwen_tokenizer(QWEN_IMAGE.wrap_prompt("a photo of <zwx>'s dog"))["input_ids"]
    assert ids.count(151665) == 1


@pytest.mark.parametrize("context", TOKEN_CONTEXTS)
def test_token_is_one_id_in_every_context(qwen_tokenizer, context):
    [zwx] = register_placeholders(qwen_tokenizer, [PlaceholderConfig()])
    prompt = context.format(t="<zwx>")
    ids = qwen_tokenizer(QWEN_IMAGE.wrap_prompt(prompt))["input_ids"]
    assert ids.count(151665) == context.count("{t}")
    assert qwen_tokenizer.decode(ids[PROMPT_TEMPLATE_START_IDX:]).startswith(prompt)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (PlaceholderConfig(token="person"), "placeholder token 'person' already exists in the tokenizer vocabulary "
                                            "(id 8987)"),
        (PlaceholderConfig(token="<|im_end|>"), "placeholder token '<|im_end|>' already exists in the tokenizer "
                                                "vocabulary (id 151645)"),
    ],
)
def test_refused_tokens_leave_the_tokenizer_unchanged(qwen_tokenizer, config, message):
    before = qwen_tokenizer.get_vocab()
    with pytest.raises(PlaceholderError) as error:
        register_placeholders(qwen_tokenizer, [config])
    assert str(error.value).startswith(message)
    assert qwen_tokenizer.get_vocab() == before and len(qwen_tokenizer) == 151665


def test_lstrip_is_refused_by_the_config_and_by_the_template_check(qwen_tokenizer):
    with pytest.raises(ConfigError, match=r"placeholder.lstrip: true is not supported \(the token would absorb"):
        PlaceholderConfig(lstrip=True)
    # The template check is why: an lstrip token swallows the newline before a prompt-initial token.
    unchecked = PlaceholderConfig()
    object.__setattr__(unchecked, "lstrip", True)
    with pytest.raises(PlaceholderError, match="changes the Qwen-Image template's 34-token prefix in the prompt "
                                               "'<zwx>'"):
        check_placeholders(qwen_tokenizer, [unchecked])
    assert len(qwen_tokenizer) == 151665


def test_template_matches_the_installed_diffusers_pipeline(tiny_pipeline_dir):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    assert pipe.prompt_template_encode == PROMPT_TEMPLATE
    assert pipe.prompt_template_encode_start_idx == PROMPT_TEMPLATE_START_IDX == 34


def test_a_second_refused_placeholder_adds_neither(qwen_tokenizer):
    with pytest.raises(PlaceholderError, match="'person'"):
        register_placeholders(qwen_tokenizer, [PlaceholderConfig(), PlaceholderConfig(token="person")])
    assert "<zwx>" not in qwen_tokenizer.get_vocab()


def test_duplicate_placeholders_are_refused(qwen_tokenizer):
    with pytest.raises(PlaceholderError, match="must be distinct"):
        check_placeholders(qwen_tokenizer, [PlaceholderConfig(), PlaceholderConfig()])


def test_multi_vector_and_several_placeholders(qwen_tokenizer):
    zwx, dog = register_placeholders(
        qwen_tokenizer, [PlaceholderConfig(num_vectors=3), PlaceholderConfig(token="<dog7>", num_vectors=2)]
    )
    assert zwx.token_ids == (151665, 151666, 151667) and dog.token_ids == (151668, 151669)
    prompt = expand_prompt("<zwx> and <dog7> play", [zwx, dog])
    assert prompt == "<zwx><zwx_1><zwx_2> and <dog7><dog7_1> play"
    assert expand_prompt(prompt, [zwx, dog]) == prompt  # expanding twice changes nothing
    ids = qwen_tokenizer(QWEN_IMAGE.wrap_prompt(prompt))["input_ids"]
    assert [i for i in ids if i >= 151665] == [151665, 151666, 151667, 151668, 151669]


def test_rows_are_never_shrunk_and_grow_only_past_the_end(tiny_pipeline_dir):
    encoder = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_pipeline_dir, subfolder="text_encoder")
    head = encoder.get_output_embeddings().weight.detach().clone()
    assert ensure_embedding_rows(encoder, (151665,)) == 152064
    assert encoder.get_input_embeddings().num_embeddings == 152064
    assert ensure_embedding_rows(encoder, (152064,)) == 152128  # next multiple of 64
    assert torch.equal(encoder.get_output_embeddings().weight[:152064], head)


def test_expansion_never_rewrites_one_placeholder_inside_another(qwen_tokenizer):
    outer, inner = register_placeholders(
        qwen_tokenizer, [PlaceholderConfig(token="<zwx>"), PlaceholderConfig(token="zwx", num_vectors=2)]
    )
    assert expand_prompt("a photo of <zwx> and zwx", [outer, inner]) == "a photo of <zwx> and zwxzwx_1"
    ids = qwen_tokenizer(expand_prompt("<zwx>, zwx", [outer, inner]))["input_ids"]
    assert [i for i in ids if i >= 151665] == [outer.token_ids[0], *inner.token_ids]


def test_every_tokenizer_of_a_pipeline_gets_the_same_ids(qwen_tokenizer):
    processor_tokenizer = light_copy(qwen_tokenizer)  # Edit-Plus: the processor holds a tokenizer of its own
    [zwx] = register_placeholders([qwen_tokenizer, processor_tokenizer, qwen_tokenizer],
                                  [PlaceholderConfig(num_vectors=2)], family=QWEN_IMAGE_EDIT_PLUS)
    assert zwx.token_ids == (151665, 151666)
    assert len(qwen_tokenizer) == len(processor_tokenizer) == 151667  # the one named twice got the entries once
    ids = processor_tokenizer(QWEN_IMAGE_EDIT_PLUS.wrap_prompt("a photo of <zwx><zwx_1>"))["input_ids"]
    assert ids.count(151665) == ids.count(151666) == 1


def test_tokenizers_that_disagree_are_refused_with_neither_changed(qwen_tokenizer):
    other = light_copy(qwen_tokenizer)
    other.add_tokens(["<other>"])
    with pytest.raises(PlaceholderError, match=r"the pipeline's tokenizers hold \[151665, 151666\] entries, so "
                                               "placeholder '<zwx>' would get different ids"):
        register_placeholders([qwen_tokenizer, other], [PlaceholderConfig()])
    assert (len(qwen_tokenizer), len(other)) == (151665, 151666)
    # A token that only the second tokenizer refuses changes neither.
    taken = light_copy(qwen_tokenizer)
    taken.add_tokens(["<zwx>"])
    fresh = light_copy(qwen_tokenizer)
    fresh.add_tokens(["<zzz>"])
    with pytest.raises(PlaceholderError, match="already exists"):
        register_placeholders([fresh, taken], [PlaceholderConfig()])
    assert (len(fresh), len(taken)) == (151666, 151666) and "<zwx>" not in fresh.get_vocab()
