"""Each model family's facts against its real diffusers pipeline, and the token checks inside its template.

A family's template and dropped positions are what its pipeline feeds the
text encoder; if diffusers changes them, the placeholder checks would be
checking the wrong text. So for every family the ids the pipeline actually
hands its encoder are captured and compared with ``family.wrap_prompt``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import tinytrain
import torch
from PIL import Image

from zero_prior.errors import ConfigError
from zero_prior.models import FAMILIES, family_for_pipeline
from zero_prior.placeholder.config import PlaceholderConfig
from zero_prior.placeholder.vocabulary import TOKEN_CONTEXTS, light_copy, register_placeholders
from zero_prior.testbed import cached_tiny_pipeline
from zero_prior.testbed.tiny_model import BUILDERS

# The id a first new token gets: one past each tokenizer's entries.
FIRST_SPARE_ID = {"qwen_image": 151665, "zimage": 151669, "qwen_image_edit_plus": 151665, "flux2_klein": 151669}
IMAGE_PAD = 151655  # <|image_pad|>: an edit pipeline widens it to the control image's patch count


@pytest.fixture(scope="module", params=[family.name for family in FAMILIES])
def pipe(request: pytest.FixtureRequest):
    return tinytrain.load_pipe(cached_tiny_pipeline(seed=0, family=request.param))


def test_every_family_has_a_tiny_test_bed() -> None:
    assert sorted(BUILDERS) == sorted(family.name for family in FAMILIES) == sorted(FIRST_SPARE_ID)


def _encoder_input_ids(pipe, prompt: str) -> list[int]:
    """The unpadded ids the pipeline's ``encode_prompt`` passes its text encoder for ``prompt``."""
    seen: list[torch.Tensor] = []
    encoder = family_for_pipeline(pipe).text_encoder(pipe)
    handle = encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["input_ids"], kwargs["attention_mask"])), with_kwargs=True)
    try:
        with torch.no_grad():
            if type(pipe).__name__ == "ZImagePipeline":
                pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
            elif family_for_pipeline(pipe).control_images:  # one control image, as the family's template has
                pipe.encode_prompt(prompt, image=[Image.new("RGB", (384, 384), (200, 120, 40))], device="cpu")
            else:
                pipe.encode_prompt(prompt, device="cpu")
    finally:
        handle.remove()
    [(ids, mask)] = seen
    kept = ids[0][mask[0].bool()].tolist()
    return [i for n, i in enumerate(kept) if not (i == IMAGE_PAD and n and kept[n - 1] == IMAGE_PAD)]


def test_the_family_template_is_what_the_pipeline_encodes(pipe) -> None:
    family = family_for_pipeline(pipe)
    prompt = "a photo of a striped fish"
    assert _encoder_input_ids(pipe, prompt) == pipe.tokenizer(family.wrap_prompt(prompt))["input_ids"]


@pytest.mark.parametrize("context", TOKEN_CONTEXTS)
def test_the_token_is_one_spare_id_in_every_context(pipe, context: str) -> None:
    family = family_for_pipeline(pipe)
    tokenizer = light_copy(pipe.tokenizer)
    [zwx] = register_placeholders(tokenizer, [PlaceholderConfig()], family)
    assert zwx.token_ids == (FIRST_SPARE_ID[family.name],)
    ids = tokenizer(family.wrap_prompt(context.format(t="<zwx>")))["input_ids"]
    assert ids.count(zwx.token_ids[0]) == context.count("{t}")


def test_the_pipeline_encodes_the_registered_token_as_one_id(pipe) -> None:
    family = family_for_pipeline(pipe)
    components = {**pipe.components, "tokenizer": light_copy(pipe.tokenizer)}  # the fixture's tokenizers stay clean
    if "processor" in components:
        components["processor"] = copy.copy(pipe.processor)
        components["processor"].tokenizer = light_copy(pipe.processor.tokenizer)
    pipe = type(pipe)(**components)
    [zwx] = register_placeholders(family.tokenizers(pipe), [PlaceholderConfig()], family)
    assert _encoder_input_ids(pipe, "a photo of <zwx>").count(zwx.token_ids[0]) == 1


def test_generate_images_guides_each_family_with_its_own_argument(pipe) -> None:
    from zero_prior.serving.generate import generate_images

    if family_for_pipeline(pipe).control_images:
        pytest.skip("an edit pipeline VAE-encodes its control image at 1024x1024 (~15 s on a CPU): "
                    "test_family_qwen_image_edit_plus generates with one")
    pipe.set_progress_bar_config(disable=True)
    plain, guided = (generate_images(pipe, ["a photo of a fish"], seed=3, steps=2, height=64, width=64,
                                     true_cfg_scale=scale, negative_prompt="blurry")[0] for scale in (1.0, 3.0))
    assert plain.size == guided.size == (64, 64)
    assert plain.tobytes() != guided.tobytes()  # the guidance argument reached the pipeline
    [floats] = generate_images(pipe, ["a photo of a fish"], seed=3, steps=2, height=64, width=64,
                               negative_prompt="blurry", output_type="np")
    assert floats.dtype == np.float32 and np.array_equal((floats * 255).round().astype(np.uint8), np.asarray(plain))
    with pytest.raises(ConfigError, match="output_type must be 'pil' .* or 'np' .*, got 'pt'"):
        generate_images(pipe, ["a photo of a fish"], output_type="pt")


@pytest.mark.parametrize("prefix", ["diffusion_model.", "base_model.model."])
def test_flux2_refuses_a_final_modulation_lora_under_either_prefix(prefix: str) -> None:
    from zero_prior.models.flux2_klein import FLUX2_KLEIN

    block = f"{prefix}double_blocks.0.img_attn.qkv.lora_A.weight"
    assert FLUX2_KLEIN.lora_refusal([block]) is None
    assert "final_layer.adaLN_modulation.1" in FLUX2_KLEIN.lora_refusal(
        [block, f"{prefix}final_layer.adaLN_modulation.1.lora_A.weight"])
