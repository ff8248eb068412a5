"""The extension's config rules, in-process: every refused setting names its key, before ai-toolkit is needed.

The same cases run through ai-toolkit's real ``run.py`` in ``test_aitk_run.py``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from aitk_cases import EDIT_PLUS_REFUSALS, REFUSALS, REPO, TOKEN, edit_plus, tiny_process

from zero_prior.aitk.settings import effective_config, read_settings
from zero_prior.errors import ConfigError
from zero_prior.models import family_for_arch
from zero_prior.models.qwen_image import QWEN_IMAGE


@pytest.mark.parametrize("change, message", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refused_setting_names_the_key(tmp_path: Path, change: Callable[[dict], None], message: str) -> None:
    process = tiny_process(tmp_path)
    change(process)
    with pytest.raises(ConfigError) as raised:
        read_settings(process, 0)
    assert str(raised.value).startswith(message)


def test_toggle_off_accepts_what_the_baseline_may_use(tmp_path: Path) -> None:
    process = tiny_process(tmp_path)
    process["train"].update(train_placeholder_token=False, cache_text_embeddings=True, unload_text_encoder=True)
    process["trigger_word"] = "striped fish"
    assert read_settings(process, 0).enabled is False


def test_effective_config_defaults_trigger_word_and_switches_arch(tmp_path: Path) -> None:
    process = tiny_process(tmp_path)
    original = copy.deepcopy(process)
    effective = effective_config(process, read_settings(process, 0))
    assert (effective["trigger_word"], effective["model"]["arch"]) == (TOKEN, QWEN_IMAGE.zero_prior_arch)
    assert process == original  # the user's config (ai-toolkit saves it as config.yaml) is left as written


def test_example_configs_are_twins_that_pass_the_rules() -> None:
    on, off = (yaml.safe_load((REPO / "config_examples" / name).read_text())["config"]
               for name in ("zero_prior.yaml", "zero_prior_baseline.yaml"))
    assert read_settings(on["process"][0], 0).enabled and not read_settings(off["process"][0], 0).enabled
    assert on["name"] != off["name"]  # the same name would make one resume from the other's checkpoints
    for config in (on, off):
        config.pop("name")
        config["process"][0].pop("trigger_word", None)
        config["process"][0]["train"].pop("train_placeholder_token")
    assert on == off


def test_24gb_example_passes_the_rules_and_pivots() -> None:
    config = yaml.safe_load((REPO / "config_examples" / "zero_prior_24gb.yaml").read_text())["config"]
    settings = read_settings(config["process"][0], 0)
    assert settings.enabled and settings.placeholder.prefix_cache
    assert 0 < settings.pivot_step < config["process"][0]["train"]["steps"]


def test_ui_examples_are_zero_prior_yaml_as_the_ui_imports_it() -> None:
    """``zero_prior_ui.{yaml,json}``: one job, what the UI's Import keeps (``ui/src/app/jobs/new/page.tsx``)."""
    examples = REPO / "config_examples"
    job = yaml.safe_load((examples / "zero_prior_ui.yaml").read_text())
    assert json.loads((examples / "zero_prior_ui.json").read_text()) == job
    process = job["config"]["process"][0]
    # The import sets these four and turns sample.prompts into sample.samples; the logging block it keeps.
    process.update(sqlite_db_path="./aitk_db.db", training_folder="/ui/output", device="cuda",
                   performance_log_every=10)
    assert process["type"] == "zero_prior_trainer" and "prompts" not in process["sample"]
    assert process["logging"] == {"log_every": 1, "use_ui_logger": True}
    assert read_settings(process, 0).enabled
    cli = yaml.safe_load((examples / "zero_prior.yaml").read_text())["config"]["process"][0]
    for section in ("placeholder", "network", "save", "datasets", "model"):
        assert process[section] == cli[section], section
    assert [s["prompt"] for s in process["sample"]["samples"]] == cli["sample"]["prompts"]
    assert {k: v for k, v in process["train"].items() if k != "lr"} == \
        {k: v for k, v in cli["train"].items() if k != "lr"}


# A real-weights example per family beyond Qwen-Image: (file, family name).
FAMILY_EXAMPLES = [("zero_prior_zimage.yaml", "zimage"),
                   ("zero_prior_qwen_image_edit_plus.yaml", "qwen_image_edit_plus"),
                   ("zero_prior_flux2_klein.yaml", "flux2_klein")]


@pytest.mark.parametrize("name, family", FAMILY_EXAMPLES, ids=[f for _, f in FAMILY_EXAMPLES])
def test_family_examples_pass_the_rules(name: str, family: str) -> None:
    text = (REPO / "config_examples" / name).read_text()
    assert "estimates" in text  # memory figures are marked as estimates, not measurements
    process = yaml.safe_load(text)["config"]["process"][0]
    settings = read_settings(process, 0)
    assert settings.enabled and settings.family.name == family
    assert settings.prefix_cache == (settings.family.prefix_cache_refusal() is None)


@pytest.mark.parametrize("arch, family", [("qwen_image:2512", "qwen_image"), ("zimage:turbo", "zimage"),
                                          ("zimage:deturbo", "zimage")])
def test_an_arch_variant_after_a_colon_picks_its_family(tmp_path: Path, arch: str, family: str) -> None:
    process = tiny_process(tmp_path)
    process["model"]["arch"] = arch
    settings = read_settings(process, 0)
    assert settings.family.name == family
    # ai-toolkit drops the variant itself (ModelConfig), so the subclass's arch replaces the whole string.
    assert effective_config(process, settings)["model"]["arch"] == settings.family.zero_prior_arch


@pytest.mark.parametrize("arch, subclass", [("flux2_klein_4b", "flux2_klein_4b_zero_prior"),
                                            ("flux2_klein_9b", "flux2_klein_9b_zero_prior")])
def test_each_flux2_klein_size_trains_under_its_own_subclass(tmp_path: Path, arch: str, subclass: str) -> None:
    # ai-toolkit has one FLUX.2 [klein] class per size (its encoder repo and transformer sizes), so zero-prior too.
    process = tiny_process(tmp_path)
    process["model"]["arch"] = arch
    settings = read_settings(process, 0)
    assert settings.family.name == "flux2_klein"
    assert effective_config(process, settings)["model"]["arch"] == subclass
    assert family_for_arch(subclass) is settings.family


def test_the_supported_arch_list_names_only_trainable_families(tmp_path: Path) -> None:
    process = tiny_process(tmp_path)
    process["model"]["arch"] = "sdxl"
    supported = ("qwen_image (Qwen-Image), zimage (Z-Image), qwen_image_edit_plus (Qwen-Image-Edit-Plus), "
                 "flux2_klein_4b or flux2_klein_9b (FLUX.2 [klein]); set arch")
    with pytest.raises(ConfigError, match=re.escape(f"supports {supported}")):
        read_settings(process, 0)


def test_an_edit_plus_arch_variant_picks_its_family(tmp_path: Path) -> None:
    process = edit_plus(tiny_process(tmp_path))
    process["model"]["arch"] = "qwen_image_edit_plus:2511"
    settings = read_settings(process, 0)
    assert settings.family.name == "qwen_image_edit_plus" and not settings.prefix_cache
    assert effective_config(process, settings)["model"]["arch"] == "qwen_image_edit_plus_zero_prior"


@pytest.mark.parametrize("change, message", [r[1:] for r in EDIT_PLUS_REFUSALS],
                         ids=[r[0] for r in EDIT_PLUS_REFUSALS])
def test_what_edit_plus_rules_out_is_refused_with_the_key(tmp_path: Path, change: Callable[[dict], None],
                                                          message: str) -> None:
    process = edit_plus(tiny_process(tmp_path))
    read_settings(copy.deepcopy(process), 0)  # the valid job passes
    change(process)
    with pytest.raises(ConfigError) as raised:
        read_settings(process, 0)
    assert str(raised.value).startswith(message)


def test_edit_plus_refusals_leave_the_baseline_alone(tmp_path: Path) -> None:
    process = edit_plus(tiny_process(tmp_path))
    process["train"].update(train_placeholder_token=False, batch_size=2)
    process["trigger_word"] = "striped fish"
    del process["datasets"][0]["control_path"]
    assert read_settings(process, 0).enabled is False


def test_sample_prompts_with_a_control_flag_or_no_sampling_pass(tmp_path: Path) -> None:
    process = edit_plus(tiny_process(tmp_path))
    process["sample"] = {**process["sample"], "prompts": ["a photo of [trigger] --ctrl_img /unused/000.png"]}
    del process["sample"]["samples"]
    read_settings(process, 0)
    process["sample"]["prompts"] = ["a photo of [trigger]"]
    with pytest.raises(ConfigError, match="has no control image"):
        read_settings(process, 0)
    process["train"]["disable_sampling"] = True
    read_settings(process, 0)
