"""The ``zero-prior`` command: help, inspect, generate, and one-line errors."""

import json
import subprocess
import sys

import pytest
import tinytrain
from PIL import Image

from zero_prior.cli import main
from zero_prior.placeholder.config import PlaceholderConfig


@pytest.fixture(scope="module")
def lora_file(tiny_pipeline_dir, tmp_path_factory):
    pipe = tinytrain.load_pipe(tiny_pipeline_dir)
    configs = [PlaceholderConfig()]
    placeholders, _ = tinytrain.train(pipe, configs, steps=2)
    return tinytrain.save(pipe, placeholders, configs, tmp_path_factory.mktemp("cli") / "subject.safetensors")


def test_help_lists_subcommands_without_heavy_imports():
    code = "import sys; from zero_prior.cli import main; main(['--help'])"
    result = subprocess.run([sys.executable, "-c", code + "\n"], capture_output=True, text=True)
    assert "inspect" in result.stdout and "generate" in result.stdout and "tiny-model" in result.stdout
    probe = "import sys, zero_prior.cli; zero_prior.cli.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


def test_inspect_prints_placeholder_and_lora_summary(lora_file, capsys):
    assert main(["inspect", str(lora_file)]) == 0
    report = json.loads(capsys.readouterr().out)
    [placeholder] = report["zero_prior"]["placeholders"]
    assert placeholder["token"] == "<zwx>" and placeholder["token_ids"] == [151665]
    assert "base64" not in placeholder["vectors"] and len(placeholder["vectors"]["sha256"]) == 64
    assert report["lora"]["ranks"] == [tinytrain.LORA_RANK] and report["lora"]["tensors"] > 0
    assert report["zero_prior"]["hidden_size"] == 64


def test_inspect_error_is_one_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.safetensors")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"zero-prior inspect: error: {tmp_path / 'missing.safetensors'}: no such file; pass the LoRA "
                   ".safetensors file a training wrote")


def test_generate_writes_an_image(lora_file, tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "img.png"
    argv = ["generate", "--model", str(tiny_pipeline_dir), "--lora", str(lora_file), "--prompt",
            "a photo of <zwx>", "--out", str(out), "--steps", "2", "--height", "64", "--width", "96"]
    assert main(argv) == 0
    assert Image.open(out).size == (96, 64)
    assert "placeholder '<zwx>': ids [151665] (registered)" in capsys.readouterr().out


def test_the_demo_offers_every_family(capsys):
    # Every family trains through ai-toolkit now (the edit family with control images), so each has a demo.
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--family {flux2_klein,qwen_image,qwen_image_edit_plus,zimage}" in capsys.readouterr().out


def test_demo_without_ai_toolkit_says_how_to_get_it(tmp_path, capsys):
    assert main(["demo", "--ai-toolkit", str(tmp_path / "nowhere"), "--out", str(tmp_path / "demo")]) == 1
    err = capsys.readouterr().err
    assert "is not an ai-toolkit checkout" in err
    assert "git clone https://github.com/ostris/ai-toolkit ~/ai-toolkit" in err and "checkout 27a03a91" in err
    assert not (tmp_path / "demo").exists()  # nothing written
