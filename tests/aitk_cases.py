"""The zero-prior settings the tests change, and the refusals every one of them must produce.

Shared by the in-process rule tests (``test_aitk_rules.py``) and the real
``run.py`` tests (``test_aitk_run.py``), so both check the same cases.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from zero_prior.aitk.launch import load_config_template
from zero_prior.testbed.qwen_image_edit_plus import edit_job

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "config_examples" / "tiny_cpu.yaml"
TOKEN = "<zwx>"


def set_key(*keys: str | int, value: Any) -> Callable[[dict], None]:
    def apply(process: dict) -> None:
        target = process
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return apply


def drop_key(*keys: str | int) -> Callable[[dict], None]:
    def apply(process: dict) -> None:
        target = process
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return apply


# (id, change to the valid tiny process config, start of the error message that must name the key)
REFUSALS: list[tuple[str, Callable[[dict], None], str]] = [
    ("toggle_missing", drop_key("train", "train_placeholder_token"),
     "config.process[0].train.train_placeholder_token must be true or false"),
    ("toggle_not_bool", set_key("train", "train_placeholder_token", value="yes"),
     "config.process[0].train.train_placeholder_token must be true or false"),
    ("placeholder_unknown_key", set_key("placeholder", "lr_scale", value=2.0),
     "config.process[0].placeholder.lr_scale is not a placeholder setting"),
    ("placeholder_wrong_type", set_key("placeholder", "num_vectors", value="two"),
     "config.process[0].placeholder.num_vectors must be an integer"),
    ("placeholder_out_of_range", set_key("placeholder", "init_std", value=5.0),
     "config.process[0].placeholder.init_std must be in (0, 1]"),
    ("cache_text_embeddings", set_key("train", "cache_text_embeddings", value=True),
     "config.process[0].train.cache_text_embeddings: True cannot be used"),
    ("dataset_cache_text_embeddings", lambda p: p["datasets"][0].update(cache_text_embeddings=True),
     "config.process[0].datasets[0].cache_text_embeddings: True cannot be used"),
    ("unload_text_encoder", set_key("train", "unload_text_encoder", value=True),
     "config.process[0].train.unload_text_encoder: True cannot be used"),
    ("dop_without_class", set_key("train", "diff_output_preservation", value=True),
     "config.process[0].train.diff_output_preservation_class None: with diff_output_preservation"),
    ("dop_other_trigger", lambda p: (p["train"].update(diff_output_preservation=True,
                                                       diff_output_preservation_class="a fish"),
                                     p.update(trigger_word="<zwx> fish")),
     "config.process[0].trigger_word '<zwx> fish' must be exactly the placeholder token"),
    ("train_text_encoder", set_key("train", "train_text_encoder", value=True),
     "config.process[0].train.train_text_encoder: True cannot be used"),
    ("merge_network_on_save", set_key("train", "merge_network_on_save", value=True),
     "config.process[0].train.merge_network_on_save: True cannot be used"),
    ("embedding_section", set_key("embedding", value={"trigger": "zwx", "tokens": 1}),
     "config.process[0].embedding cannot be used"),
    ("validation_config", set_key("train", "validation_config", value={"validate_every_n_steps": 2}),
     "config.process[0].train.validation_config cannot be used"),
    ("not_qwen_image", set_key("model", "arch", value="flux"),
     "config.process[0].model.arch is 'flux'"),
    ("no_network", drop_key("network"),
     "config.process[0].network is missing"),
    ("not_lora_network", set_key("network", "type", value="lokr"),
     "config.process[0].network.type is 'lokr'"),
    ("lstrip", set_key("placeholder", "lstrip", value=True),
     "config.process[0].placeholder.lstrip: true is not supported (the token would absorb"),
    ("trigger_word_without_token", set_key("trigger_word", value="sks"),
     "config.process[0].trigger_word 'sks' does not contain the placeholder token '<zwx>'"),
    ("stop_step_not_before_steps", set_key("placeholder", "stop_step", value=4),
     "config.process[0].placeholder.stop_step resolves to step 4, not before train.steps 4"),
    ("stop_step_with_shuffled_captions",
     lambda p: (p["placeholder"].update(stop_step=0.5), p["datasets"][0].update(shuffle_tokens=True)),
     "config.process[0].datasets[0].shuffle_tokens: True cannot be used with config.process[0].placeholder.stop_step"),
    ("stop_step_with_cfg", lambda p: (p["placeholder"].update(stop_step=2), p["train"].update(do_random_cfg=True)),
     "config.process[0].train.do_random_cfg: True cannot be used with config.process[0].placeholder.stop_step"),
    ("stop_step_with_dop", lambda p: (p["placeholder"].update(stop_step=2), p["train"].update(
        diff_output_preservation=True, diff_output_preservation_class="a fish")),
     "config.process[0].train.diff_output_preservation: True cannot be used with config.process[0].placeholder."
     "stop_step"),
    ("stop_step_with_ema",
     lambda p: (p["placeholder"].update(stop_step=2), p["train"].update(ema_config={"use_ema": True})),
     "config.process[0].train.ema_config.use_ema cannot be used with config.process[0].placeholder.stop_step"),
    ("steps_not_a_number", lambda p: (p["placeholder"].update(stop_step=0.5), p["train"].update(steps="four")),
     "config.process[0].train.steps must be a number, got 'four'"),
    ("stop_step_after_start_step", lambda p: (p["placeholder"].update(stop_step=2), p["train"].update(start_step=2)),
     "config.process[0].train.start_step 2 is not before config.process[0].placeholder.stop_step (step 2)"),
]


def edit_plus(process: dict, control: str = "/unused") -> dict:
    """``process`` made a Qwen-Image-Edit-Plus job (``testbed.qwen_image_edit_plus.edit_job``); the rules' tests
    need no real control folder."""
    return edit_job(process, control)


# What Qwen-Image-Edit-Plus rules out with the toggle on: (id, change to a valid edit_plus process, message start).
EDIT_PLUS_REFUSALS: list[tuple[str, Callable[[dict], None], str]] = [
    ("prefix_cache", set_key("placeholder", "prefix_cache", value=True),
     "config.process[0].placeholder.prefix_cache: true cannot be used with Qwen-Image-Edit-Plus: the positions "
     "before the token hold the control image"),
    ("stop_step", set_key("placeholder", "stop_step", value=2),
     "config.process[0].placeholder.stop_step cannot be used with Qwen-Image-Edit-Plus: the pivot encodes each "
     "caption once"),
    ("batch_size", set_key("train", "batch_size", value=2),
     "config.process[0].train.batch_size 2 cannot be used with Qwen-Image-Edit-Plus and "
     "train.train_placeholder_token: true"),
    ("no_control_path", drop_key("datasets", 0, "control_path"),
     "config.process[0].datasets[0] has no control_path: Qwen-Image-Edit-Plus encodes every caption together with "
     "its control image"),
    ("sample_without_control_image", drop_key("sample", "samples", 0, "ctrl_img_1"),
     "config.process[0].sample prompt 'a photo of [trigger]' has no control image"),
]


def tiny_process(training_folder: Path, model: str = "/unused", dataset: str = "/unused") -> dict:
    """The process of ``config_examples/tiny_cpu.yaml`` with its ``${NAME}`` fields filled."""
    config = load_config_template(
        TINY_CONFIG, {"MODEL_PATH": model, "DATASET_PATH": dataset, "TRAINING_FOLDER": str(training_folder)}
    )
    return config["config"]["process"][0]
