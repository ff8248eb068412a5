"""zero-prior behind a hosted predictor (Cog / Replicate): the logic of ``cog/predict.py`` and ``cog/train.py``.

Cog files only declare inputs; everything they do lives here so that it is
tested without Docker. ``WeightsServer`` keeps one Qwen-Image pipeline in
memory and applies a different ``weights.zip`` per request without
reloading the base model: between packages ``unload_zero_prior`` removes the
earlier package's adapter, token and rows, so no token of it survives.
``train_weights`` turns a zip of images into an ai-toolkit job for this
extension, runs ai-toolkit's own ``run.py`` (staged, the checkout untouched)
and packages the result as ``weights.zip``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..aitk.facts import IMAGE_EXTENSIONS
from ..errors import AiToolkitError, ConfigError, FormatError
from ..fileio import sha256_file
from ..weights.loader import LoadResult, load_zero_prior, unload_zero_prior

MODEL_ENV = "ZERO_PRIOR_MODEL"
DEFAULT_MODEL = "Qwen/Qwen-Image"
TRAIN_CONFIG_ENV = "ZERO_PRIOR_TRAIN_CONFIG"
DEFAULT_TRAIN_CONFIG = "zero_prior.yaml"
JOB_NAME = "zero_prior_cog"
# Used for images that come without a .txt caption; ai-toolkit puts the trigger (the token) in.
DEFAULT_CAPTION = "a photo of [trigger]"


def model_path() -> str:
    """The base model to serve or train: ``$ZERO_PRIOR_MODEL``, else ``Qwen/Qwen-Image``."""
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


@dataclass
class Prediction:
    """One generated image and the lines meant for the user's log."""

    image: Any  # PIL.Image
    log: list[str] = field(default_factory=list)


class WeightsServer:
    """A loaded Qwen-Image pipeline that serves one weights package at a time.

    Example::

        server = WeightsServer.from_model("Qwen/Qwen-Image")
        server.predict("a photo of <zwx>", weights="weights.zip").image.save("out.png")
    """

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.loaded: LoadResult | None = None
        self._key: tuple[str, float] | None = None

    @classmethod
    def from_model(cls, model: str | None = None, device: str | None = None) -> WeightsServer:
        """Load the base pipeline (``model_path()`` by default) and wrap it."""
        from .generate import load_pipeline

        return cls(load_pipeline(model or model_path(), device=device))

    def use(
        self, weights: str | os.PathLike[str] | None, lora_scale: float = 1.0, token_scale: float = 1.0
    ) -> LoadResult | None:
        """Make ``weights`` (a weights.zip, LoRA file or exported folder; None: the base model) current.

        The same package at the same ``token_scale`` is not loaded again; a
        new ``lora_scale`` only changes the adapter's weight.
        """
        if weights is not None and not Path(weights).exists():
            raise FormatError(f"{weights}: no such file or folder; pass a weights.zip, a LoRA .safetensors or an "
                              "exported folder")
        key = None if weights is None else (_file_digest(Path(weights)), float(token_scale))
        if key != self._key:
            self._reset()
            if weights is not None:
                self.loaded = load_zero_prior(self.pipe, weights, lora_scale=lora_scale, token_scale=token_scale)
            self._key = key
        elif self.loaded is not None:
            self.pipe.set_adapters([self.loaded.adapter_name], adapter_weights=[float(lora_scale)])
            self.loaded.lora_scale = float(lora_scale)
        return self.loaded

    def predict(
        self,
        prompt: str,
        weights: str | os.PathLike[str] | None = None,
        lora_scale: float = 1.0,
        token_scale: float = 1.0,
        seed: int = 0,
        steps: int = 30,
        width: int = 1024,
        height: int = 1024,
        true_cfg_scale: float = 1.0,
        negative_prompt: str | None = None,
    ) -> Prediction:
        """Generate one image with ``weights`` applied; the log warns about a prompt without the token."""
        from .generate import generate_images

        loaded = self.use(weights, lora_scale, token_scale)
        log = [] if loaded is None else loaded.summary().splitlines()
        log += prompt_warnings(prompt, loaded)
        [image] = generate_images(self.pipe, [prompt], seed=seed, steps=steps, height=height, width=width,
                                  true_cfg_scale=true_cfg_scale, negative_prompt=negative_prompt)
        return Prediction(image, log)

    def _reset(self) -> None:
        """Back to the base model: no adapter, no token, the rows as loaded."""
        if self.loaded is None:
            return
        unload_zero_prior(self.pipe)
        self.loaded = None
        self._key = None


def prompt_warnings(prompt: str, loaded: LoadResult | None) -> list[str]:
    """A warning per trained placeholder the prompt does not contain (the subject would be left out).

    Example::

        prompt_warnings("a photo on a beach", server.use("weights.zip"))
        # -> ["WARNING: the prompt does not contain the placeholder '<zwx>' ..."]
    """
    if loaded is None:
        return []
    return [
        f"WARNING: the prompt does not contain the placeholder {token.token!r} these weights were trained with, "
        f"so the trained subject will not appear; write it where the subject goes, e.g. 'a photo of {token.token}'"
        for token in loaded.tokens
        if token.token not in prompt
    ]


@dataclass
class TrainResult:
    """What ``train_weights`` produced."""

    weights: Path  # weights.zip
    lora: Path  # the trained .safetensors inside the run folder
    log: str  # ai-toolkit's output
    images: int


def train_weights(
    images_zip: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    steps: int = 1000,
    learning_rate: float = 1e-4,
    rank: int = 16,
    resolution: int = 768,
    train_placeholder_token: bool = True,
    token: str = "<zwx>",
    model: str | None = None,
    ai_toolkit: str | os.PathLike[str] | None = None,
    config_template: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train on a zip of images through ai-toolkit with this extension; write ``out_dir/weights.zip``.

    ``token`` is the placeholder (``train_placeholder_token=True``) or, for the
    baseline, the trigger word. The job starts from ``config_template``
    (``$ZERO_PRIOR_TRAIN_CONFIG``, else ``config_examples/zero_prior.yaml``) with
    the data, model, steps, lr, rank and resolution replaced; lr, batch size
    and resolutions go into the config's ``meta:`` block so that the LoRA
    header (and so ``meta.json``) records them.

    Example::

        train_weights("subject.zip", "out", steps=1500, token="<zwx>").weights  # -> PosixPath('out/weights.zip')
    """
    from zero_prior.config_examples import example_path

    from ..aitk.checkout import find_ai_toolkit
    from ..aitk.launch import load_config_template, log_tail, run_jobs
    from ..weights.export import export_weights

    checkout = find_ai_toolkit(ai_toolkit)
    out_dir = Path(out_dir)
    template = Path(config_template or os.environ.get(TRAIN_CONFIG_ENV) or example_path(DEFAULT_TRAIN_CONFIG))
    with tempfile.TemporaryDirectory(prefix="zero_prior_train_") as tmp:
        work = Path(tmp)
        count = unpack_images(images_zip, work / "images")
        runs = work / "runs"
        values = {"MODEL_PATH": model or model_path(), "DATASET_PATH": str(work / "images"),
                  "TRAINING_FOLDER": str(runs)}
        config = load_config_template(template, values)
        _apply_inputs(config, values, steps, learning_rate, rank, resolution, train_placeholder_token, token)
        log = run_jobs(checkout, [config]).stdout
        lora = runs / JOB_NAME / f"{JOB_NAME}.safetensors"
        if not lora.is_file():
            raise AiToolkitError(f"ai-toolkit finished without writing {lora.name}; last lines:\n{log_tail(log)}")
        out_dir.mkdir(parents=True, exist_ok=True)
        kept = out_dir / lora.name
        shutil.copyfile(lora, kept)
        weights = export_weights(kept, out_dir, "zip", overwrite=True).output
    return TrainResult(weights=weights, lora=kept, log=log, images=count)


def _apply_inputs(
    config: dict[str, Any], values: dict[str, str], steps: int, learning_rate: float, rank: int,
    resolution: int, train_placeholder_token: bool, token: str,
) -> None:
    """Overwrite the template's job with the trainer's inputs (one dataset, no sampling)."""
    config["config"]["name"] = JOB_NAME
    process = config["config"]["process"][0]
    process["training_folder"] = values["TRAINING_FOLDER"]
    process["model"]["name_or_path"] = values["MODEL_PATH"]
    process["network"].update(linear=rank, linear_alpha=rank)  # alpha == rank: diffusers loads it at strength 1
    dataset = dict(process["datasets"][0])
    dataset.update(folder_path=values["DATASET_PATH"], resolution=[resolution], default_caption=DEFAULT_CAPTION)
    process["datasets"] = [dataset]
    train = process["train"]
    train.update(steps=steps, lr=learning_rate, train_placeholder_token=train_placeholder_token,
                 disable_sampling=True)
    if train_placeholder_token:
        process.setdefault("placeholder", {})["token"] = token
        process.pop("trigger_word", None)  # defaults to the token
    else:
        process["trigger_word"] = token
    config["meta"] = {**(config.get("meta") or {}), "learning_rate": learning_rate,
                      "batch_size": train.get("batch_size", 1), "resolutions": [resolution]}


def unpack_images(images_zip: str | os.PathLike[str], folder: Path) -> int:
    """Copy the zip's images and same-named ``.txt`` captions into ``folder`` (flat); return the image count.

    Only base names are used (no path from the zip is trusted); macOS resource
    forks and hidden files are skipped; two files with one name are refused.

    Example::

        unpack_images("subject.zip", Path("images"))  # -> 12
    """
    folder.mkdir(parents=True, exist_ok=True)
    wanted = IMAGE_EXTENSIONS + (".txt",)
    images = 0
    try:
        with zipfile.ZipFile(images_zip) as archive:
            for info in archive.infolist():
                member = PurePosixPath(info.filename)
                if info.is_dir() or member.name.startswith(".") or "__MACOSX" in member.parts:
                    continue
                if member.suffix.lower() not in wanted:
                    continue
                target = folder / member.name
                if target.exists():
                    raise ConfigError(f"{images_zip}: two files are named {member.name!r}; rename one of them")
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                images += member.suffix.lower() in IMAGE_EXTENSIONS
    except (zipfile.BadZipFile, OSError) as error:
        raise ConfigError(f"{images_zip}: not a readable zip of images ({error})") from None
    if images == 0:
        raise ConfigError(f"{images_zip}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                          "zip the training images, optionally with same-named .txt captions")
    return images


def _file_digest(path: Path) -> str:
    """Content digest of a weights file or folder, so a re-downloaded package is recognised."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256("".join(f"{file.name}:{sha256_file(file)};" for file in files).encode()).hexdigest()
