"""The experiment: strict spec, arm jobs that differ only in the arm, the runner's log, and one real run.

Everything but the end-to-end test runs without ai-toolkit: the runner is
exercised against a stand-in checkout whose ``run.py`` writes a LoRA file (or
fails on request), the analysis on synthetic measurements. The end-to-end test
trains baseline and zero-prior on the tiny Qwen-Image through real ai-toolkit,
evaluates them with the tiny random CLIP, DINOv2 and LPIPS backbone of
``zero-prior metric-models --tiny``, and checks that evaluating again writes
the same metrics.json.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from zero_prior.aitk.step_log import read_step_log
from zero_prior.cli import main
from zero_prior.errors import ConfigError, ExperimentError
from zero_prior.experiment.arms import build_arm_jobs, job_differences
from zero_prior.experiment.evaluate import BASE_RUN, CLASS, SUBJECT, evaluate_experiment, plan_shots
from zero_prior.experiment.layout import LOG_FILE
from zero_prior.experiment.pipeline import run_experiment
from zero_prior.experiment.spec import load_spec
from zero_prior.experiment.train import check_token_only_lora, prepare_captions
from zero_prior.fileio import sha256_file
from zero_prior.testbed import make_subject_dataset

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "config_examples"
ALL_ARMS = ["baseline", "zero_prior", "rare_word", "word_init", "token_only"]

FAKE_RUN = '''
import os, sys
import numpy as np, yaml
from pathlib import Path
from safetensors.numpy import save_file

config = yaml.safe_load(open(sys.argv[-1]))
name = config["config"]["name"]
print(f"stand-in run.py: {name}")
if os.environ.get("FAKE_FAIL", "\\0") in name:
    print("stand-in failure", file=sys.stderr)
    sys.exit(3)
root = Path(config["config"]["process"][0]["training_folder"]) / name
root.mkdir(parents=True, exist_ok=True)
tensors = {"x.lora_A.weight": np.ones((2, 2), np.float32), "x.lora_B.weight": np.zeros((2, 2), np.float32)}
save_file(tensors, str(root / f"{name}.safetensors"))
'''


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_subject_dataset(tmp_path / "subject", num_images=3, size=32, seed=0)[0].parent


def write_spec(folder: Path, dataset: Path, experiment: dict[str, Any] | None = None, **top: Any) -> Path:
    """An experiment file on the tiny CPU job; ``experiment`` entries replace the defaults below."""
    block = {"output_dir": "out", "arms": ALL_ARMS, "subject": {"class": "object", "class_word": "fish"}}
    block.update(experiment or {})
    raw = {"base_job": str(EXAMPLES / "tiny_cpu.yaml"), "experiment": block, **top}
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def values(dataset: Path) -> dict[str, str]:
    return {"MODEL_PATH": "/models/tiny", "DATASET_PATH": str(dataset)}


# --- the spec ------------------------------------------------------------------------------------


def test_example_experiments_parse_and_build_every_arm(tmp_path: Path, dataset: Path) -> None:
    tiny = load_spec(EXAMPLES / "experiment_tiny.yaml", {**values(dataset), "OUTPUT_DIR": str(tmp_path / "out"),
                                                         "CLIP_MODEL": "/clip", "DINO_MODEL": "/dino"})
    assert (tiny.arms, tiny.evaluation.prompts, tiny.evaluation.seeds) == (
        ("baseline", "zero_prior", "zero_prior_dop", "baseline_dop"), 2, (0, 1))
    assert tiny.runs_dir == tmp_path / "out" / "runs"
    assert tiny.base_job["config"]["process"][0]["training_folder"] == str(tiny.runs_dir)
    real = load_spec(EXAMPLES / "experiment.yaml")
    assert real.arms == tuple(ALL_ARMS) and real.evaluation.clip_model == "openai/clip-vit-large-patch14"
    assert [job.arm for job in build_arm_jobs(real)] == ALL_ARMS  # each passes the trainer's own checks


@pytest.mark.parametrize("experiment, top, message", [
    ({}, {"experimnet": {}}, "experimnet is not an experiment setting"),
    ({"arm": ["baseline"]}, {}, "experiment.arm is not an experiment setting (experiment); known keys: arms, "
                                "evaluation, name, output_dir, subject, training_seeds"),
    ({"subject": {"klass": "dog"}}, {}, "experiment.subject.klass is not an experiment setting"),
    ({"evaluation": {"seed": [0]}}, {}, "experiment.evaluation.seed is not an experiment setting"),
    ({"arms": ["zero_prior"]}, {}, "experiment.arms ['zero_prior'] must list each arm once and include 'baseline'"),
    ({"arms": ["baseline", "lora_only"]}, {}, "experiment.arms: 'lora_only' is not an arm; choose from baseline,"),
    ({"training_seeds": "42"}, {}, "experiment.training_seeds must be a non-empty list of integers"),
    ({"evaluation": {"prompts": 1}}, {}, "experiment.evaluation.prompts must be between 2 and 25, got 1"),
    ({"evaluation": {"width": 100}}, {}, "experiment.evaluation.width must be a multiple of 16, got 100"),
    ({"evaluation": {"seeds": [0, 0]}}, {}, "experiment.evaluation.seeds [0, 0] repeats a seed"),
    ({"evaluation": {"offload": True}}, {}, "experiment.evaluation.offload must be a string, got bool True"),
    ({"subject": {"class": "robot"}}, {}, "experiment.subject.class 'robot' has no built-in phrases"),
    ({}, {"job": {"job": "extension"}}, "give exactly one of base_job"),
], ids=["top", "experiment", "subject", "evaluation", "no_baseline", "unknown_arm", "seeds_type", "prompts",
        "width", "repeated_seed", "offload_type", "subject_class", "two_jobs"])
def test_spec_errors_name_the_key(tmp_path: Path, dataset: Path, experiment: dict, top: dict, message: str) -> None:
    path = write_spec(tmp_path, dataset, experiment, **top)
    with pytest.raises(ConfigError) as raised:
        load_spec(path, values(dataset))
    assert str(raised.value).startswith(message)


def test_missing_value_and_base_job_refusals(tmp_path: Path, dataset: Path) -> None:
    path = write_spec(tmp_path, dataset)
    with pytest.raises(ConfigError, match=r"tiny_cpu.yaml needs a value for \$\{MODEL_PATH\}: pass --set MODEL_PATH="):
        load_spec(path, {"DATASET_PATH": str(dataset)})
    job = yaml.safe_load((EXAMPLES / "tiny_cpu.yaml").read_text())
    job["config"]["process"][0].update(trigger_word="fish")
    inline = write_spec(tmp_path, dataset, job=job)
    raw = yaml.safe_load(inline.read_text())
    del raw["base_job"]
    inline.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"base job \(inline\): config.process\[0\].trigger_word is set; remove it"):
        load_spec(inline, values(dataset))
    job["config"]["process"][0].update(trigger_word=None, type="sd_trainer")
    inline.write_text(yaml.safe_dump({"job": job, "experiment": raw["experiment"]}))
    with pytest.raises(ConfigError, match=r"config.process\[0\].type is 'sd_trainer'; set it to 'zero_prior_trainer'"):
        load_spec(inline, values(dataset))


# --- the arms ------------------------------------------------------------------------------------


def test_arm_jobs_differ_only_in_what_the_arm_changes(tmp_path: Path, dataset: Path) -> None:
    spec = load_spec(write_spec(tmp_path, dataset), values(dataset))
    jobs = {job.arm: job for job in build_arm_jobs(spec)}
    base = jobs["baseline"].job
    process = "config.process[0]"

    def diff(arm: str) -> dict[str, tuple[Any, Any]]:
        changes = job_differences(base, jobs[arm].job)
        assert changes.pop("config.name") == ("tiny_zero_prior_baseline_seed42", f"tiny_zero_prior_{arm}_seed42")
        return changes

    assert diff("zero_prior") == {f"{process}.datasets[0].caption_ext": ("baseline.txt", "zero_prior.txt"),
                                  f"{process}.train.train_placeholder_token": (False, True)}
    assert diff("rare_word") == {f"{process}.datasets[0].caption_ext": ("baseline.txt", "rare_word.txt")}
    assert diff("word_init") == {f"{process}.datasets[0].caption_ext": ("baseline.txt", "zero_prior.txt"),
                                 f"{process}.placeholder.init": ("zero_prior", "word"),
                                 f"{process}.placeholder.init_word": (None, "fish"),
                                 f"{process}.train.train_placeholder_token": (False, True)}
    assert diff("token_only") == {f"{process}.datasets[0].caption_ext": ("baseline.txt", "zero_prior.txt"),
                                  f"{process}.train.lr": (0.001, 0.0),
                                  f"{process}.train.train_placeholder_token": (False, True)}
    dop = {f"{process}.train.diff_output_preservation": (None, True),
           f"{process}.train.diff_output_preservation_class": (None, "an object")}
    (tmp_path / "dop").mkdir()
    dop_spec = load_spec(write_spec(tmp_path / "dop", dataset, {"arms": ["baseline", "zero_prior_dop",
                                                                         "baseline_dop"]}), values(dataset))
    dop_jobs = {job.arm: job for job in build_arm_jobs(dop_spec)}
    assert job_differences(dop_jobs["baseline"].job, dop_jobs["zero_prior_dop"].job) == {
        "config.name": ("tiny_zero_prior_baseline_seed42", "tiny_zero_prior_zero_prior_dop_seed42"),
        f"{process}.datasets[0].caption_ext": ("baseline.txt", "zero_prior.txt"),
        f"{process}.train.train_placeholder_token": (False, True), **dop}
    assert job_differences(dop_jobs["baseline"].job, dop_jobs["baseline_dop"].job) == {
        "config.name": ("tiny_zero_prior_baseline_seed42", "tiny_zero_prior_baseline_dop_seed42"),
        f"{process}.datasets[0].caption_ext": ("baseline.txt", "rare_word.txt"),
        f"{process}.trigger_word": (None, "zwx"), **dop}
    assert (dop_jobs["zero_prior_dop"].subject_text, dop_jobs["baseline_dop"].subject_text) == ("<zwx>", "zwx")
    # The bookkeeping every arm shares, against the base job as the user wrote it.
    assert job_differences(spec.base_job, base) == {
        "config.name": ("tiny_zero_prior", "tiny_zero_prior_baseline_seed42"),
        f"{process}.datasets[0].caption_ext": ("txt", "baseline.txt"),
        f"{process}.logging.use_ui_logger": (None, True),
        f"{process}.train.train_placeholder_token": (True, False),
    }
    assert {arm: (job.subject_text, job.placeholder_token) for arm, job in jobs.items()} == {
        "baseline": ("an object", None), "zero_prior": ("<zwx>", "<zwx>"),
        "rare_word": ("zwx", None), "word_init": ("<zwx>", "<zwx>"), "token_only": ("<zwx>", "<zwx>")}


def test_each_training_seed_is_its_own_job(tmp_path: Path, dataset: Path) -> None:
    spec = load_spec(write_spec(tmp_path, dataset, {"arms": ["baseline", "zero_prior"], "training_seeds": [1, 2]}),
                     values(dataset))
    jobs = build_arm_jobs(spec)
    assert [(job.arm, job.training_seed) for job in jobs] == [("baseline", 1), ("zero_prior", 1),
                                                              ("baseline", 2), ("zero_prior", 2)]
    process = "config.process[0]"
    assert job_differences(jobs[0].job, jobs[2].job) == {
        "config.name": ("tiny_zero_prior_baseline_seed1", "tiny_zero_prior_baseline_seed2"),
        f"{process}.placeholder.seed": (1, 2), f"{process}.training_seed": (1, 2)}


def test_token_only_keeps_the_placeholder_rate_and_needs_an_exact_optimizer(tmp_path: Path, dataset: Path) -> None:
    job = yaml.safe_load((EXAMPLES / "tiny_cpu.yaml").read_text())
    process = job["config"]["process"][0]
    del process["placeholder"]["lr"]
    process["train"]["embedding_lr"] = 5e-4
    raw = yaml.safe_load(write_spec(tmp_path, dataset).read_text())
    raw.pop("base_job")
    (tmp_path / "inline.yaml").write_text(yaml.safe_dump({"job": job, **raw}))
    spec = load_spec(tmp_path / "inline.yaml", values(dataset))
    token_only = next(job for job in build_arm_jobs(spec) if job.arm == "token_only").job["config"]["process"][0]
    assert (token_only["placeholder"]["lr"], token_only["train"]["lr"]) == (5e-4, 0.0)
    process["train"]["optimizer"] = "prodigy"
    (tmp_path / "inline.yaml").write_text(yaml.safe_dump({"job": job, **raw}))
    with pytest.raises(ConfigError, match=r"train.optimizer 'prodigy' cannot run the token_only arm: it freezes the "
                                          r"LoRA with learning rate 0, which only adam, adamw, adam8bit, adamw8bit"):
        build_arm_jobs(load_spec(tmp_path / "inline.yaml", values(dataset)))


def test_token_only_result_must_have_a_zero_lora(tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    down, zero = np.ones((2, 2), np.float32), np.zeros((2, 2), np.float32)
    save_file({"a.lora_A.weight": down, "a.lora_B.weight": zero}, str(path))
    assert check_token_only_lora(path) == 1
    save_file({"a.lora_A.weight": down, "a.lora_B.weight": down}, str(path))
    with pytest.raises(ExperimentError, match="1 of 1 lora_B tensors are non-zero"):
        check_token_only_lora(path)


def test_baseline_subject_images_are_its_class_images(tmp_path: Path, dataset: Path) -> None:
    spec = load_spec(write_spec(tmp_path, dataset, {"arms": ["baseline", "zero_prior"],
                                                    "evaluation": {"prompts": 2, "seeds": [3, 4]}}), values(dataset))
    jobs = build_arm_jobs(spec)
    shots, files = plan_shots(spec, jobs, [0, 1])
    baseline, zero_prior = (job.name for job in jobs)
    assert files[(baseline, SUBJECT, 1, 4)] == files[(baseline, CLASS, 1, 4)]
    assert files[(zero_prior, SUBJECT, 1, 4)] != files[(zero_prior, CLASS, 1, 4)]
    assert len(shots) == 2 * 2 * (1 + 2 + 1)  # prompts x seeds x (baseline + zero_prior's two kinds + base)
    assert {shot.prompt for shot in shots if shot.run == BASE_RUN} == {
        "a photo of an object on a beach at sunset", "a photo of an object in a snowy forest"}
    assert {shot.seed for shot in shots} == {3, 4}


# --- captions and the runner (stand-in ai-toolkit) --------------------------------------------------


def test_captions_are_written_once_and_then_checked(tmp_path: Path, dataset: Path) -> None:
    spec = load_spec(write_spec(tmp_path, dataset), values(dataset))
    [summary] = prepare_captions(spec)
    assert (summary["images"], summary["written"]) == (3, 9)
    captions = {mode: (dataset / f"000.{mode}.txt").read_text() for mode in ("baseline", "zero_prior", "rare_word")}
    assert captions["zero_prior"].replace("<zwx>", "zwx") == captions["rare_word"]
    assert prepare_captions(spec)[0]["written"] == 0
    (dataset / "001.zero_prior.txt").write_text("a photo of sks")
    with pytest.raises(ExperimentError, match=r"001.zero_prior.txt holds a different caption than this experiment "
                                              r"plans"):
        prepare_captions(spec)


@pytest.fixture
def fake_ai_toolkit(tmp_path: Path) -> Path:
    """A folder that passes as an ai-toolkit checkout; its run.py writes a LoRA or fails when asked."""
    root = tmp_path / "fake_ai_toolkit"
    for name in ("toolkit/extension.py", "extensions_built_in/sd_trainer/SDTrainer.py", "extensions/.keep"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    (root / "run.py").write_text(textwrap.dedent(FAKE_RUN))
    return root


def test_runner_logs_commands_versions_seeds_hashes_and_timings(tmp_path: Path, dataset: Path,
                                                               fake_ai_toolkit: Path) -> None:
    arms = {"arms": ["baseline", "zero_prior", "token_only"]}
    spec = load_spec(write_spec(tmp_path, dataset, arms), values(dataset))
    run_experiment(spec, ai_toolkit=fake_ai_toolkit, evaluate=False, echo=False)
    log = json.loads((spec.output_dir / LOG_FILE).read_text())
    assert [(a["arm"], a["status"], a["returncode"]) for a in log["arms"]] == [
        ("baseline", "trained", 0), ("zero_prior", "trained", 0), ("token_only", "trained", 0)]
    for entry, job in zip(log["arms"], build_arm_jobs(spec)):
        assert entry["command"][1:] == ["run.py", str(spec.output_dir / "jobs" / f"{job.name}.yaml")]
        assert entry["job_sha256"] == sha256_file(spec.output_dir / entry["job_file"])
        lora = f"runs/{job.name}/{job.name}.safetensors"
        assert entry["outputs"] == {lora: sha256_file(job.lora_path(spec.runs_dir))}
        assert entry["seconds"] > 0 and f"stand-in run.py: {job.name}" in (spec.output_dir / entry["log"]).read_text()
    assert log["arms"][2]["lora_frozen"] == {"lora_b_tensors": 1, "all_zero": True}
    environment = log["environment"]
    assert environment["ai_toolkit"] == {"path": str(fake_ai_toolkit), "commit": None}
    found = {name for name, version in environment["libraries"].items() if version}
    assert {"torch", "diffusers", "transformers", "zero-prior"} <= found
    assert log["seeds"] == {"training": [42], "placeholder_init": [42], "captions": 0, "evaluation": [0, 1, 2, 3],
                            "statistics": 0}
    assert log["inputs"]["dataset"][str(dataset / "000.png")] == sha256_file(dataset / "000.png")
    assert len(log["inputs"]["dataset"]) == 3 * 4  # each image and its three caption files
    assert log["inputs"]["model"]["sha256"] is None and "not hashed" in log["inputs"]["model"]["missing"]

    # A rerun reuses finished arms; a changed job refuses to mix with the old run unless --fresh.
    run_experiment(spec, ai_toolkit=fake_ai_toolkit, evaluate=False, echo=False)
    reused = json.loads((spec.output_dir / LOG_FILE).read_text())["arms"]
    assert [a["status"] for a in reused] == ["reused"] * 3
    assert [(a["command"], a["seconds"]) for a in reused] == [(a["command"], a["seconds"]) for a in log["arms"]]
    longer = copy.deepcopy(spec.base_job)
    longer["config"]["process"][0]["train"]["steps"] = 5
    changed = dataclasses.replace(spec, base_job=longer)
    with pytest.raises(ExperimentError, match="holds a run of a different job than .* pass --fresh to retrain"):
        run_experiment(changed, ai_toolkit=fake_ai_toolkit, evaluate=False, echo=False)
    run_experiment(changed, ai_toolkit=fake_ai_toolkit, fresh=True, evaluate=False, echo=False)
    assert [a["status"] for a in json.loads((spec.output_dir / LOG_FILE).read_text())["arms"]] == ["trained"] * 3


def test_a_failed_arm_stops_the_experiment_with_its_log(tmp_path: Path, dataset: Path, fake_ai_toolkit: Path) -> None:
    spec = load_spec(write_spec(tmp_path, dataset, {"arms": ["baseline", "zero_prior", "rare_word"]}), values(dataset))
    with pytest.raises(ExperimentError) as raised:
        run_experiment(spec, ai_toolkit=fake_ai_toolkit, evaluate=False, echo=False,
                       env={"FAKE_FAIL": "prior_zero_prior_seed"})  # "_zero_prior_seed" names only that arm
    log_path = spec.output_dir / "logs" / f"{spec.name}_zero_prior_seed42.log"
    assert str(raised.value).startswith(f"arm zero_prior (training seed 42) failed (exit code 3); its log: {log_path}")
    assert "stand-in failure" in str(raised.value) and "stand-in failure" in log_path.read_text()
    log = json.loads((spec.output_dir / LOG_FILE).read_text())
    assert [(a["arm"], a["status"]) for a in log["arms"]] == [("baseline", "trained"), ("zero_prior", "failed"),
                                                              ("rare_word", "pending")]
    rare_word_log = spec.output_dir / "logs" / f"{spec.name}_rare_word_seed42.log"
    assert "outputs" not in log["arms"][2] and not rare_word_log.exists()


def test_cli_dry_run_prints_each_arms_changes(tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_spec(tmp_path, dataset, {"arms": ["baseline", "rare_word"]})
    filled = ["--set", "MODEL_PATH=/m", "--set", f"DATASET_PATH={dataset}"]
    assert main(["experiment", str(path), "--dry-run", *filled]) == 0
    out = capsys.readouterr().out
    assert "tiny_zero_prior_baseline_seed42: the reference" in out
    assert "config.process[0].datasets[0].caption_ext: 'baseline.txt' -> 'rare_word.txt'" in out
    assert main(["experiment", str(path), "--set", "MODEL_PATH"]) == 1
    assert "--set 'MODEL_PATH': write NAME=VALUE" in capsys.readouterr().err


# --- real ai-toolkit, tiny model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ai_toolkit(ai_toolkit_checkout: Path) -> Path:
    return ai_toolkit_checkout


@pytest.mark.long  # four arms, four run.py starts: the second pass of the test command
def test_tiny_experiment_end_to_end_through_ai_toolkit(
    ai_toolkit: Path, tiny_pipeline_dir: Path, tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    work = tmp_path_factory.mktemp("experiment")
    dataset = make_subject_dataset(work / "subject", num_images=4, size=64, seed=0)[0].parent
    # The README's commands: the tiny random metric models, LPIPS's backbone through TORCH_HOME.
    assert main(["metric-models", "--tiny", "--out", str(work / "metric_models")]) == 0
    monkeypatch.setenv("TORCH_HOME", str(work / "metric_models" / "torch"))
    spec = load_spec(EXAMPLES / "experiment_tiny.yaml", {
        "MODEL_PATH": str(tiny_pipeline_dir), "DATASET_PATH": str(dataset), "OUTPUT_DIR": str(work / "out"),
        "CLIP_MODEL": str(work / "metric_models" / "clip"), "DINO_MODEL": str(work / "metric_models" / "dino")})
    result = run_experiment(spec, ai_toolkit=ai_toolkit, echo=False, env={"HF_HUB_OFFLINE": "1"})
    out = spec.output_dir

    metrics = json.loads(result.metrics.read_text())
    names = {job.arm: job.name for job in build_arm_jobs(spec)}
    baseline, zero_prior = names["baseline"], names["zero_prior"]
    assert metrics["runs"][baseline]["placeholders"] == [] and metrics["runs"][zero_prior]["placeholders"] == ["<zwx>"]
    lora = out / "runs" / zero_prior / f"{zero_prior}.safetensors"
    assert metrics["runs"][zero_prior]["lora_sha256"] == sha256_file(lora)
    assert metrics["runs"][names["zero_prior_dop"]]["placeholders"] == ["<zwx>"]
    assert metrics["runs"][names["baseline_dop"]]["placeholders"] == []
    assert len(metrics["images"]) == 2 * 2 * (4 * 2 + 1)  # prompts x seeds x (4 runs x 2 kinds + base)
    assert all((out / image["file"]).is_file() for image in metrics["images"])
    for arm in ("baseline", "zero_prior", "zero_prior_dop", "baseline_dop"):
        assert {"clip_t", "clip_i", "dino", "prior_leak", "brightness"} <= set(metrics["summary"][arm])
    assert {c["metric"] for c in metrics["comparisons"]} >= {"clip_t", "clip_i", "dino", "prior_leak"}
    assert "diversity" in metrics["summary"]["zero_prior"] and metrics["missing"] == {}
    assert {key: identity["random"] for key, identity in metrics["metric_models"].items()} == {
        "clip": True, "dino": True, "lpips": True}
    assert metrics["metric_models"]["clip"]["sha256"]["model.safetensors"] == sha256_file(
        work / "metric_models" / "clip" / "model.safetensors")
    assert metrics["design"]["n_training_runs"] == 1 and metrics["design"]["unit"] == "prompt"
    clip_t = next(c for c in metrics["comparisons"] if c["metric"] == "clip_t")
    assert (clip_t["family"], clip_t["adjustment"]) == ("primary", "Holm step-down (family-wise error)")
    assert clip_t["adjusted_p"] >= clip_t["p_value"] and clip_t["n_training_runs"] == 1
    assert "not applicable" in metrics["token_necessity"]["baseline"]["missing"]
    assert metrics["token_necessity"]["zero_prior"]["treatment"] == "zero_prior: token"

    report = result.report.read_text()
    assert report.splitlines()[2].startswith("**Random metric models (CLIP, DINO, LPIPS backbone): every score")
    assert "## Each arm against baseline" in report and "![subject prompts" in report
    assert "| family | adjusted p |" in report and "| zero_prior | baseline | clip_t |" in report
    assert "**One training run per arm.**" in report and "Student t interval of the mean paired difference" in report
    assert "- primary family (2, Holm step-down (family-wise error))" in report
    assert "| brightness |" in report and "| token necessity |" in report and "| class_dino |" in report
    assert (out / "grid_subject_seed0.png").is_file() and (out / "grid_class_seed1.png").is_file()
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "loss.png").is_file() and (out / "placeholder_norm.png").is_file()
    else:
        assert "plots not made: matplotlib is not installed" in report
    with sqlite3.connect(out / "runs" / zero_prior / "loss_log.db") as db:
        keys = {key for (key,) in db.execute("SELECT DISTINCT key FROM metrics")}
    assert {"loss/loss", "placeholder/<zwx>/norm"} <= keys
    for arm in ("zero_prior_dop", "baseline_dop"):  # ai-toolkit's preservation pass ran in both
        assert "loss/preservation" in read_step_log(out / "runs" / names[arm] / "loss_log.db")

    log = json.loads((out / LOG_FILE).read_text())
    # Unique images per prompt and seed: baseline 1 (subject = class), three arms 2 each, base 1.
    assert [a["status"] for a in log["arms"]] == ["trained"] * 4 and log["evaluation"]["images"] == 2 * 2 * 8
    first = result.metrics.read_bytes()
    evaluate_experiment(spec, echo=False)
    assert result.metrics.read_bytes() == first  # same seeds, same CPU: the same metrics.json, byte for byte


# --- the analysis: units, families, the report's wording (synthetic measurements, no models) -----------------


def synthetic_tables(spec, effect: float, seed: int = 0):
    """``per_prompt``, ``per_run`` shaped as ``aggregate`` makes them; ``effect`` shifts zero_prior's DINO, CLIP-T."""
    from zero_prior.experiment.captions import EVAL_TEMPLATES
    from zero_prior.experiment.design import ARM_METRICS

    rng = np.random.default_rng(seed)
    templates = EVAL_TEMPLATES[: spec.evaluation.prompts]
    base = {t: 0.3 + 0.05 * rng.normal() for t in templates}
    per_run: dict[str, Any] = {}
    for arm in spec.arms:
        per_run[arm] = {}
        for metric in [*ARM_METRICS, "class_dino"]:
            shift = effect if arm == "zero_prior" and metric in ("dino", "clip_t") else 0.0
            per_run[arm][metric] = {str(s): {t: 0.5 + shift + 0.02 * rng.normal() for t in templates}
                                    for s in spec.training_seeds}
    per_prompt = {"base": {"class_dino": base}}
    for arm, table in per_run.items():
        per_prompt[arm] = {m: {t: float(np.mean([runs[s][t] for s in runs])) for t in templates}
                           for m, runs in table.items()}
    return per_prompt, per_run


def test_statistics_adjust_within_the_pre_declared_families_and_count_training_runs(tmp_path: Path, dataset: Path,
                                                                                    capsys) -> None:
    from zero_prior.experiment.evaluate import statistics

    spec = load_spec(write_spec(tmp_path, dataset, {"evaluation": {"prompts": 25}}), values(dataset))
    result = statistics(spec, *synthetic_tables(spec, effect=0.03), {})
    design = result["design"]
    assert (design["unit"], design["n_units"], design["n_training_runs"]) == ("prompt", 25, 1)
    assert design["families"]["primary"]["comparisons"] == ["vs baseline: zero_prior vs baseline, clip_t",
                                                            "vs baseline: zero_prior vs baseline, dino"]
    # 4 arms x 8 metrics vs baseline, 5 prior-leak tests, 4 token-necessity tests: 41, 2 of them primary.
    assert len(design["families"]["secondary"]["comparisons"]) == 39
    records = result["comparisons"] + list(result["prior_leak"].values()) + [
        r for r in result["token_necessity"].values() if "missing" not in r]
    assert len(records) == 41 and {r["adjustment"] for r in records} == {"Holm step-down (family-wise error)"}
    primary = sorted((r for r in records if r["family"] == "primary"), key=lambda r: r["p_value"])
    assert [r["metric"] for r in primary] == ["clip_t", "dino"] or [r["metric"] for r in primary] == ["dino", "clip_t"]
    assert primary[0]["adjusted_p"] == pytest.approx(2 * primary[0]["p_value"])
    assert all(r["verdict"]["label"] == "better" for r in primary)  # a true effect at 25 prompts is found
    secondary = [r for r in records if r["family"] == "secondary"]
    smallest = min(r["p_value"] for r in secondary)
    assert min(r["adjusted_p"] for r in secondary) == pytest.approx(min(1.0, 39 * smallest))
    brightness = next(r for r in result["comparisons"] if r["metric"] == "brightness")
    assert brightness["higher_is_better"] is None and brightness["verdict"]["label"] in ("higher", "lower",
                                                                                          "no clear difference")
    assert all(r["n_training_runs"] == 1 and r["interval_method"].startswith("Student t") for r in records)

    # Three training seeds: the training run is the unit, n = 3, and no verdict can be reached.
    (tmp_path / "seeds").mkdir()
    seeded = load_spec(write_spec(tmp_path / "seeds", dataset, {"training_seeds": [1, 2, 3],
                                                                "evaluation": {"prompts": 25}}), values(dataset))
    result = statistics(seeded, *synthetic_tables(seeded, effect=0.03), {})
    assert (result["design"]["unit"], result["design"]["n_units"]) == ("training run", 3)
    dino = next(r for r in result["comparisons"] if r["metric"] == "dino" and r["treatment"] == "zero_prior")
    assert dino["units"] == ["training seed 1", "training seed 2", "training seed 3"] and dino["n_training_runs"] == 3
    assert dino["p_value"] == 0.25 and dino["verdict"]["label"] == "no clear difference"

    # The report states the design and the families, and lists only what was measured.
    from dataclasses import asdict

    from zero_prior.experiment.report import render

    metrics = {"arms": list(spec.arms), "evaluation": {**asdict(spec.evaluation), "device_used": "cpu"},
               "models": {"base": "/m", "clip": "c", "dino": "d", "lpips": "alex"},
               "metric_models": {"clip": {"random": False}}, "references": [], "missing": {},
               **statistics(spec, *synthetic_tables(spec, effect=0.03), {})}
    del metrics["summary"]["zero_prior"]["diversity"]
    for name in ("baseline", "rare_word", "word_init", "token_only"):
        del metrics["summary"][name]["diversity"]
    report = render(spec, build_arm_jobs(spec), metrics, [], [], [])
    assert not report.splitlines()[2].startswith("**Random metric models")
    assert "| diversity |" not in report.split("## How verdicts")[0] and "| clip_t | CLIP cosine" in report
    assert "- unit of replication: prompt, n = 25; training runs behind each verdict: 1" in report
    assert "Monte Carlo; smallest attainable p 9.999e-05" in report
    assert "- primary family (2, Holm step-down (family-wise error)): the comparisons the experiment is for" in report
    assert "- secondary family (39, Holm step-down (family-wise error)): every other comparison" in report
    assert "| zero_prior | baseline | dino |" in report and "| primary |" in report and "| better |" in report

    # The dry run says what the design can reach before anything is trained.
    filled = ["--set", "MODEL_PATH=/m", "--set", f"DATASET_PATH={dataset}"]
    assert main(["experiment", str(spec.path), "--dry-run", *filled]) == 0
    out = capsys.readouterr().out
    assert "statistics: unit of replication: prompt (n = 25); 1 training run(s) per arm; verdicts are about" in out
    assert "primary family: 2 comparison(s), Holm step-down (family-wise error); smallest attainable adjusted " \
           "p 0.0002 vs alpha 0.05: a verdict is possible" in out
    assert main(["experiment", str(seeded.path), "--dry-run", *filled]) == 0
    assert "smallest attainable adjusted p 0.5 vs alpha 0.05: NO verdict is possible" in capsys.readouterr().out


@pytest.mark.slow  # loads three metric models: about 2 s
def test_metric_models_are_checked_before_any_image_and_the_protocol_names_dino(
    tmp_path: Path, dataset: Path, tiny_clip_dir: Path, tiny_dino_dir: Path
) -> None:
    from zero_prior.experiment.evaluate import check_metric_models

    spec = load_spec(write_spec(tmp_path, dataset, {"evaluation": {"clip_model": str(tiny_dino_dir),
                                                                   "dino_model": str(tiny_clip_dir)}}),
                     values(dataset))
    models, unavailable = check_metric_models(spec, "cpu")
    assert "is a 'clip' model; give a DINO ViT" in unavailable["DINO"] and "DINO" in models["dino"]["unavailable"]
    assert "could not be loaded" in unavailable["CLIP"] or "does not match CLIPModel" in unavailable["CLIP"]
    (tmp_path / "db").mkdir()
    dreambooth = load_spec(write_spec(tmp_path / "db", dataset, {"evaluation": {"protocol": "dreambooth"}}),
                           values(dataset))
    assert (dreambooth.evaluation.dino_model, dreambooth.evaluation.clip_model) == (
        "facebook/dino-vits16", "openai/clip-vit-large-patch14")
    (tmp_path / "bad").mkdir()
    with pytest.raises(ConfigError, match="experiment.evaluation.protocol 'dreambench': choose one of dinov2, "
                                          "dreambooth"):
        load_spec(write_spec(tmp_path / "bad", dataset, {"evaluation": {"protocol": "dreambench"}}), values(dataset))
