"""The Cog predictor and trainer, in-process through the cog package's own input handling, on the tiny model.

No Docker here: ``cog._inspector`` (what coglet runs to build the schema and
validate inputs) and ``cog.predictor.load_predictor_from_ref`` (how it loads
``predict.py:Predictor``) are driven directly. The model path comes from
``$ZERO_PRIOR_MODEL``; the trainer runs ai-toolkit's real ``run.py`` (2 steps).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import tinytrain
import torch
from PIL import Image
from safetensors.torch import load_file

from zero_prior.errors import ConfigError
from zero_prior.placeholder.config import PlaceholderConfig
from zero_prior.serving.generate import generate_images
from zero_prior.serving.hosted import MODEL_ENV, TRAIN_CONFIG_ENV, unpack_images
from zero_prior.testbed import make_subject_dataset
from zero_prior.weights.export import export_weights
from zero_prior.weights.format import save_lora_file
from zero_prior.weights.loader import load_zero_prior
from zero_prior.weights.package import open_weights

REPO = Path(__file__).resolve().parents[1]
COG_DIR = REPO / "cog"
PROMPT = "a photo of <zwx> on a beach"
SMALL = {"seed": 7, "steps": 2, "width": 32, "height": 32, "guidance": 1.0, "negative_prompt": ""}

cog = pytest.importorskip("cog", reason="the cog package is not installed: pip install 'zero-prior[cog]'")
from cog._inspector import check_input, create_predictor  # noqa: E402
from cog.predictor import load_predictor_from_ref  # noqa: E402


@pytest.fixture(scope="module")
def packages(tiny_pipeline_dir, tmp_path_factory):
    """A trained zero-prior weights.zip, a baseline weights.zip, and the trained file."""
    root = tmp_path_factory.mktemp("cog")
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    configs = [PlaceholderConfig()]
    placeholders, _ = tinytrain.train(pipe, configs, steps=3, prompt="a photo of <zwx>")
    lora = tinytrain.save(pipe, placeholders, configs, root / "subject.safetensors")
    baseline = save_lora_file(root / "baseline.safetensors", load_file(str(lora)))
    return {
        "zero_prior": export_weights(lora, root / "zp", "zip").output,
        "baseline": export_weights(baseline, root / "base", "zip").output,
        "lora": lora,
    }


@pytest.fixture(scope="module")
def predictor(tiny_pipeline_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MODEL_ENV, str(tiny_pipeline_dir))
        patch.syspath_prepend(str(COG_DIR))
        info = create_predictor("predict", "Predictor")
        instance = load_predictor_from_ref(f"{COG_DIR / 'predict.py'}:Predictor")
        instance.setup()
        yield info, instance


def _predict(predictor, **inputs) -> np.ndarray:
    info, instance = predictor
    out = instance.predict(**check_input(info.inputs, inputs))
    return np.asarray(Image.open(out))


def test_schemas_validate_inputs_as_cog_would(predictor):
    info, _ = predictor
    assert list(info.inputs) == ["prompt", "replicate_weights", "lora_scale", "token_scale", "seed", "steps",
                                 "width", "height", "guidance", "negative_prompt"]
    defaults = check_input(info.inputs, {"prompt": PROMPT})
    assert defaults["replicate_weights"] is None and defaults["token_scale"] == 1.0
    with pytest.raises(ValueError, match="token_scale fails constraint >= 0"):
        check_input(info.inputs, {"prompt": PROMPT, "token_scale": -1.0})
    with pytest.raises(ValueError, match="prompt: Field required"):
        check_input(info.inputs, {})


def test_predict_matches_the_original_file_and_warns_without_the_token(predictor, packages, tiny_pipeline_dir, capsys):
    image = _predict(predictor, prompt=PROMPT, replicate_weights=str(packages["zero_prior"]), **SMALL)
    served = predictor[1].server.pipe
    [again] = generate_images(served, [PROMPT], seed=7, steps=2, height=32, width=32)
    assert np.array_equal(image, np.asarray(again))  # the PNG is the served pipeline's image at these settings
    reference = tinytrain.load_pipe(tiny_pipeline_dir)
    load_zero_prior(reference, packages["lora"])
    tinytrain.assert_same_image(tinytrain.image(served, PROMPT), tinytrain.image(reference, PROMPT))
    log = capsys.readouterr().out
    assert "placeholder '<zwx>': ids [151665] (registered)" in log and "WARNING" not in log

    _predict(predictor, prompt="a photo on a beach", replicate_weights=str(packages["zero_prior"]), **SMALL)
    assert ("WARNING: the prompt does not contain the placeholder '<zwx>' these weights were trained with"
            in capsys.readouterr().out)


def test_switching_packages_leaves_no_token_behind(predictor, packages):
    _, instance = predictor
    _predict(predictor, prompt=PROMPT, replicate_weights=str(packages["zero_prior"]), **SMALL)
    first = tinytrain.image(instance.server.pipe, PROMPT)
    _predict(predictor, prompt=PROMPT, replicate_weights=str(packages["baseline"]), **SMALL)
    pipe = instance.server.pipe
    assert "<zwx>" not in pipe.tokenizer.get_vocab()
    assert pipe.get_list_adapters()["transformer"] == ["zero_prior_weights"]  # the earlier adapter is gone
    _predict(predictor, prompt=PROMPT, token_scale=0.0, replicate_weights=str(packages["zero_prior"]), **SMALL)
    row = instance.server.pipe.text_encoder.get_input_embeddings().weight[151665]
    assert torch.count_nonzero(row) == 0
    _predict(predictor, prompt=PROMPT, replicate_weights=str(packages["zero_prior"]), **SMALL)
    # the trained vector is back after the token_scale=0 load
    tinytrain.assert_same_image(tinytrain.image(instance.server.pipe, PROMPT), first)
    # the same package at another lora_scale: no reload, only the adapter's weight changes
    pipe = instance.server.pipe
    _predict(predictor, prompt=PROMPT, lora_scale=0.0, replicate_weights=str(packages["zero_prior"]), **SMALL)
    scalings = [m.scaling["zero_prior_weights"] for m in pipe.transformer.modules()
                if "zero_prior_weights" in getattr(m, "scaling", {})]
    assert instance.server.pipe is pipe and scalings and set(scalings) == {0.0}


def test_unpack_images_refuses_what_it_cannot_train_on(tmp_path):
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("notes.md", "no images")
    with pytest.raises(ConfigError, match="no images found"):
        unpack_images(empty, tmp_path / "a")
    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(twice, "w") as archive:
        archive.writestr("x/1.png", b"")
        archive.writestr("y/1.png", b"")
    with pytest.raises(ConfigError, match="two files are named '1.png'; rename one of them"):
        unpack_images(twice, tmp_path / "b")


def test_train_returns_a_weights_zip_through_ai_toolkit(ai_toolkit_checkout, tiny_pipeline_dir, tmp_path, monkeypatch):
    images = make_subject_dataset(tmp_path / "subject", num_images=3, size=64)
    images[0].with_suffix(".txt").unlink()  # an uncaptioned image gets the default caption
    dataset = tmp_path / "subject.zip"
    with zipfile.ZipFile(dataset, "w") as archive:
        for path in sorted((tmp_path / "subject").iterdir()):
            archive.write(path, f"upload/{path.name}")  # a folder inside the zip is flattened
    monkeypatch.setenv(MODEL_ENV, str(tiny_pipeline_dir))
    monkeypatch.setenv(TRAIN_CONFIG_ENV, str(REPO / "config_examples" / "tiny_cpu.yaml"))
    monkeypatch.syspath_prepend(str(COG_DIR))
    info = create_predictor("train", "train")
    train = load_predictor_from_ref(f"{COG_DIR / 'train.py'}:train")
    inputs = {"input_images": str(dataset), "steps": 2, "learning_rate": 1e-3, "rank": 4, "resolution": 64}
    output = train(**check_input(info.inputs, inputs))
    with open_weights(output.weights) as package:
        meta, record = package.meta_json, package.record
    assert output.weights.name == "weights.zip"
    assert record.placeholders[0].token == "<zwx>" and record.training_step == 2
    assert (meta["learning_rate"], meta["batch_size"], meta["resolutions"]) == (1e-3, 1, [64])
    assert (meta["rank"], meta["training_steps"], meta["placeholder_token_id"]) == (4, 2, 151665)
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    assert [p.token for p in load_zero_prior(pipe, output.weights).tokens] == ["<zwx>"]


def test_baseline_inputs_make_a_valid_baseline_job(tiny_pipeline_dir, tmp_path):
    """train_placeholder_token=false: ai-toolkit's own LoRA training with `token` as a plain trigger word."""
    from zero_prior.aitk.launch import load_config_template
    from zero_prior.aitk.settings import read_settings
    from zero_prior.serving.hosted import _apply_inputs

    values = {"MODEL_PATH": str(tiny_pipeline_dir), "DATASET_PATH": str(tmp_path / "images"),
              "TRAINING_FOLDER": str(tmp_path / "runs")}
    config = load_config_template(REPO / "config_examples" / "tiny_cpu.yaml", values)
    _apply_inputs(config, values, 5, 2e-4, 8, 64, False, "person")
    process = config["config"]["process"][0]
    assert read_settings(process).enabled is False and process["trigger_word"] == "person"
    assert process["network"]["linear"] == process["network"]["linear_alpha"] == 8
    assert config["meta"] == {"learning_rate": 2e-4, "batch_size": 1, "resolutions": [64]}
