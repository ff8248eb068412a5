"""``ZeroPriorTrainer``: ai-toolkit's diffusion trainer, plus a brand-new placeholder token trained with the LoRA.

The base is ``DiffusionTrainer`` (the UI's ``diffusion_trainer``, an
``SDTrainer`` that, run from ai-toolkit's web UI, keeps the UI's job row up to
date and honours its Stop / Save now / Sample now; from the command line it is
``SDTrainer``). ``type: zero_prior_trainer`` with
``train.train_placeholder_token: false`` is exactly that base (the baseline):
every override below returns to the parent untouched. With ``true``, the trainer

- checks the config, the dataset folders and the token in the model's own
  tokenizer before anything is loaded or written (``settings``, ``preflight``),
  and puts ``config.yaml`` back when it refuses a run later (a resume that
  does not fit);
- adds the placeholder after the model loads: a new tokenizer entry and an
  fp32 vector outside the frozen text encoder, spliced in by a forward hook;
- gives the vector its own optimizer group, last, so ``optimizer.pt`` resumes;
- lets the gradient reach it: SDTrainer encodes prompts with gradient only
  while ``train_config.train_text_encoder`` is set, so the flag is set for the
  span of each ``train_single_accumulation`` (it is read nowhere else during
  a step, and the text encoder was never made trainable by it), and the model
  class (``models.qwen_image.QwenImageZeroPriorModel``) keeps the embeddings attached;
- with ``train.diff_output_preservation`` encodes the preservation prompts
  (the class in place of the token) without gradient (``preservation``);
- encodes training prompts through a ``PrefixCache`` (``placeholder.prefix_cache``):
  the positions before the token are computed once per prefix, without gradient;
- at ``placeholder.stop_step`` pivots (``pivot``): the vector freezes, every
  caption and sample prompt is encoded once, the text encoder is unloaded and
  the run goes on like the baseline with cached embeddings;
- saves the vector in the metadata of every LoRA file (with the pivot step,
  once past it) and restores it bit-exactly when ai-toolkit resumes from one,
  pivoting right away when the resumed step is past ``stop_step``;
- logs the vector's norm, gradient norm, cosine to its start and nearest
  vocabulary tokens every ``logging.log_every`` steps (so the UI's Loss Graph
  plots them when ``logging.use_ui_logger`` is on) and, in a UI job, rewrites
  the UI's Plugin tab page (``plugin_page``) with them, the pivot and the encoder check;
- reports a config it refuses before the model loads to the UI's job row
  (``ui_job``), since the base that writes the row does not exist yet;
- on several GPUs (``accelerate launch run.py``): starts every rank from rank
  0's LoRA, vector and step, and averages the LoRA's and the vector's
  gradients after every backward (``distributed``), since ai-toolkit's DDP
  wrapper never runs its forward and so averages nothing; rank 0 saves.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from extensions_built_in.sd_trainer.DiffusionTrainer import DiffusionTrainer
from toolkit.basic import flush
from toolkit.memory_management.manager_modules import sync_grad_transfers
from toolkit.print import print_acc
from toolkit.unloader import unload_text_encoder
from tqdm import tqdm

from ...errors import AiToolkitError, PlaceholderError, TrainingError, ZeroPriorError
from ...fileio import remove_stale_temps
from ...placeholder.prepare import add_placeholders
from ...placeholder.splice import PlaceholderEmbedding
from ...placeholder.telemetry import module_sha256, placeholder_stats
from ...placeholder.vocabulary import next_token_id
from ...training.distributed import (
    any_rank,
    average_gradients,
    broadcast_from_main,
    broadcast_objects_from_main,
    world_size,
)
from ...training.prefix_cache import PrefixCache
from ...weights.format import ZeroPriorRecord, read_zero_prior, to_record, vector_sha256
from ..checkpoints import ConfigSnapshot, atomic_torch_save, optimizer_state_unreadable
from ..plugin_page import TokenHealth, write_plugin_page
from ..preflight import check_datasets, check_token
from ..settings import effective_config, read_settings
from ..ui_job import record_refusal
from .models.placeholder_model import PlaceholderModelMixin
from .pivot import encode_once, training_captions
from .preservation import preservation_embeds

NEAREST_TOKENS = 5
OPTIMIZER_FILE = "optimizer.pt"  # BaseSDTrainProcess.save / run


class ZeroPriorTrainer(DiffusionTrainer):
    """ai-toolkit process ``zero_prior_trainer``; see the module docstring."""

    def __init__(self, process_id: int, job: Any, config: OrderedDict, **kwargs: Any) -> None:
        # Before SDTrainer.__init__: it creates the output folder, writes config.yaml and copies trigger_word
        # into the datasets.
        try:
            self.zero_prior = read_settings(config, process_id)
            check_datasets(config, self.zero_prior.path)
            if self.zero_prior.enabled:
                note = check_token(config, self.zero_prior)
                if note:
                    print_acc(note)
                config = effective_config(config, self.zero_prior)
        except ZeroPriorError as error:
            record_refusal(config, str(error))
            raise
        folder = config.get("training_folder", getattr(job, "training_folder", None)) or ""
        self._config_before = ConfigSnapshot(os.path.join(folder, config.get("name", job.name)))
        super().__init__(process_id, job, config, **kwargs)
        # A save interrupted by a kill left its temporary file; this process is the folder's only writer now.
        remove_stale_temps(self.save_root, self.job.name)
        self._optimizer_restarted_at: int | None = None
        self.placeholders: list[PlaceholderEmbedding] = []
        self.tokenizer_length = 0
        self._text_encoder_sha256 = ""
        self._text_encoder_sha256_at_pivot = ""
        self._grad_norms: dict[str, torch.Tensor] = {}
        self._trained: list[torch.Tensor] = []
        self._health: list[TokenHealth] = []

    def hook_after_model_load(self) -> None:
        super().hook_after_model_load()
        if not self.zero_prior.enabled:
            return
        family = self.zero_prior.family
        if not (isinstance(self.sd, PlaceholderModelMixin) and getattr(self.sd, "family", None) is family):
            raise AiToolkitError(
                f"zero-prior: ai-toolkit loaded {type(self.sd).__name__} for arch {self.model_config.arch!r} instead "
                f"of zero-prior's {family.label} model; the extension's model list failed to import (see the "
                "'Failed to import' line above) or another extension registers the same arch"
            )
        tokenizer = self.sd.tokenizer[0]
        self.tokenizer_length = next_token_id(tokenizer)
        with self._config_kept_on_refusal():  # on every tokenizer the model encodes with, or on none
            self.placeholders = add_placeholders(self.sd.text_encoder[0], self.sd.placeholder_tokenizers(),
                                                 [self.zero_prior.placeholder], family=family)
        if self.zero_prior.placeholder.verify_text_encoder:
            self._text_encoder_sha256 = module_sha256(self.sd.text_encoder[0])
        self.sd.placeholder_tokens = [placeholder.registered for placeholder in self.placeholders]
        self.sd.record_builder = self._record
        if self.zero_prior.prefix_cache:
            ids = [i for placeholder in self.placeholders for i in placeholder.registered.token_ids]
            self.sd.prefix_cache = PrefixCache(self.sd.text_encoder[0], tokenizer, ids, family=family)
        self._health = [
            TokenHealth(p.registered.token, list(p.registered.token_ids), self.zero_prior.placeholder.init,
                        self.zero_prior.placeholder.verify_text_encoder) for p in self.placeholders
        ]
        for placeholder in self.placeholders:
            registered = placeholder.registered
            print_acc(
                f"zero-prior: placeholder {registered.token!r} -> token ids {list(registered.token_ids)}, "
                f"init {self.zero_prior.placeholder.init}, start norm {placeholder.vectors.norm().item():.3g}"
            )

    def load_weights(self, path: str) -> Any:
        """ai-toolkit's resume loads only the LoRA tensors; the placeholder comes from the file's metadata."""
        extra_weights = super().load_weights(path)
        if self.zero_prior.enabled:
            with self._config_kept_on_refusal():
                self._restore_placeholders(path)
        return extra_weights

    def save(self, step: int | None = None) -> None:
        """ai-toolkit's save, with its ``optimizer.pt`` written atomically (a kill mid-write keeps the last one)."""
        with atomic_torch_save(os.path.join(self.save_root, OPTIMIZER_FILE)):
            super().save(step)
        if self._health:
            for health in self._health:
                health.last_save_step = self.step_num
            self._write_plugin_page()

    @contextmanager
    def _config_kept_on_refusal(self) -> Iterator[None]:
        """A refusal after ai-toolkit wrote ``config.yaml`` puts the file (and a new folder) back as they were."""
        try:
            yield
        except (PlaceholderError, TrainingError):
            self._config_before.restore()
            raise

    def hook_add_extra_train_params(self, params: list[dict[str, Any]]) -> list[dict[str, Any]]:
        params = super().hook_add_extra_train_params(params)
        # Right before ai-toolkit builds the optimizer and tries optimizer.pt, which fails quietly when cut off.
        unreadable = optimizer_state_unreadable(os.path.join(self.save_root, OPTIMIZER_FILE))
        if unreadable:
            self._optimizer_restarted_at = self.step_num
            print_acc(f"zero-prior: WARNING: {os.path.join(self.save_root, OPTIMIZER_FILE)} cannot be loaded "
                      f"({unreadable}, e.g. an interrupted save): the LoRA and the placeholder resume, but the "
                      "optimizer state (Adam moments) starts over; the next saves record it")
        if not self.zero_prior.enabled:
            return params
        config = self.zero_prior.placeholder
        lr = self.zero_prior.placeholder_lr
        # Last, so optimizer.pt from an earlier run of this config lines up group by group; its own
        # group also gets its own gradient clipping (SDTrainer clips per group).
        vectors = [p.vectors for p in self.placeholders]
        params.append({"params": vectors, "lr": lr, "weight_decay": config.weight_decay})
        print_acc(f"zero-prior: placeholder optimizer group: lr {lr}, weight decay {config.weight_decay}")
        return params

    def hook_before_train_loop(self) -> None:
        super().hook_before_train_loop()
        if self.zero_prior.enabled:
            # Several GPUs: only rank 0 reads the resumed step from the file, and only the DDP
            # wrapper's (never-run) forward would have kept the LoRA in step.
            self.step_num, self.start_step, self.epoch_num = broadcast_objects_from_main(
                [self.step_num, self.start_step, self.epoch_num]
            )
            self._trained = [param for group in self.params for param in group["params"]]
            broadcast_from_main(self._trained)
            self._write_plugin_page()  # a page left by an earlier start of the job shows this run from now on
        if self._pivot_due():  # resumed past stop_step: the restored vector is the frozen one
            self._pivot_on_every_rank()

    def ensure_params_requires_grad(self, force: bool = False) -> None:
        """ai-toolkit re-enables grad on every optimizer parameter (after saves); a frozen vector stays frozen."""
        super().ensure_params_requires_grad(force=force)
        if self.zero_prior.enabled and self.sd.frozen_prompts is not None:
            for placeholder in self.placeholders:
                placeholder.vectors.requires_grad_(False)

    def train_single_accumulation(self, batch: Any) -> Any:
        if not self.zero_prior.enabled:
            return super().train_single_accumulation(batch)
        out_of_memory: torch.cuda.OutOfMemoryError | None = None
        try:
            loss = self._train_single_accumulation(batch)
        except torch.cuda.OutOfMemoryError as error:  # ai-toolkit skips the step; every rank must skip it
            out_of_memory = error
        if world_size() > 1:
            if any_rank(out_of_memory is not None):
                for param in self._trained:
                    param.grad = None
                raise out_of_memory or torch.cuda.OutOfMemoryError(
                    "zero-prior: another rank ran out of memory in this step; every rank skips it"
                )
            sync_grad_transfers()  # offloaded layers copy their gradients to the CPU asynchronously
            average_gradients(self._trained)  # every rank, after every backward, before SDTrainer clips
        elif out_of_memory is not None:
            raise out_of_memory
        self._remember_grad_norms()
        return loss

    def _train_single_accumulation(self, batch: Any) -> Any:
        if self.sd.frozen_prompts is not None:
            return super().train_single_accumulation(batch)
        # SDTrainer encodes prompts with gradient only while this is set; nothing else reads it during a step.
        self.train_config.train_text_encoder = True
        try:
            with preservation_embeds(self, batch):  # SDTrainer sets them only on its branch without gradient
                return super().train_single_accumulation(batch)
        finally:
            self.train_config.train_text_encoder = False

    def hook_train_loop(self, batch: Any) -> Any:
        if self._pivot_due():
            self._pivot_on_every_rank()
        loss_dict = super().hook_train_loop(batch)
        if self.zero_prior.enabled and self.sd.frozen_prompts is None and self._is_log_step():
            self._log_placeholders()
        return loss_dict

    def pivot(self) -> None:
        """Freeze the vector, encode every prompt once with it, and unload the text encoder.

        Runs at the start of step ``stop_step`` (ai-toolkit counts steps from
        0, so steps 0 to ``stop_step - 1`` trained the vector) or, on a resume
        from a save made after the pivot, before the loop.
        """
        step = self.zero_prior.pivot_step
        print_acc(
            f"zero-prior: pivot at step {self.step_num} (stop_step {step}): freezing the placeholder and encoding "
            "every prompt once"
        )
        for placeholder in self.placeholders:
            placeholder.vectors.requires_grad_(False)
            placeholder.vectors.grad = None
        if self.accelerator.is_main_process:
            self._log_placeholders()
        if self.zero_prior.placeholder.verify_text_encoder:
            self._text_encoder_sha256_at_pivot = module_sha256(self.sd.text_encoder[0])
            self._note_encoder_check(self._text_encoder_sha256_at_pivot)
        for health in self._health:
            health.pivot_step = self.step_num
        self._write_plugin_page()
        self.sd.prefix_cache = None  # its key/value tensors live on the training device
        self.sd.text_encoder_to(self.device_torch)
        loaders = [loader for loader in (self.data_loader, self.data_loader_reg) if loader is not None]
        captions = training_captions(loaders, self.trigger_word, self.sd.inject_trigger_into_prompt)
        with torch.no_grad():
            self.cache_sample_prompts()  # ai-toolkit's own sample-prompt cache, now with the final vector
        self.sd.frozen_prompts = encode_once(captions, self.sd.encode_prompt, step)
        unload_text_encoder(self.sd)
        flush()
        print_acc(
            f"zero-prior: pivot done: {len(self.sd.frozen_prompts)} training prompts encoded, text encoder unloaded"
        )

    def _pivot_on_every_rank(self) -> None:
        """``pivot``, and on several GPUs a hard stop if any rank failed it.

        In one process an out-of-memory pivot is skipped by ai-toolkit like any
        step and retried on the next; across ranks that would leave the ranks a
        step apart in their collectives, so every rank stops instead.
        """
        if world_size() == 1:
            self.pivot()
            return
        failure: BaseException | None = None
        try:
            self.pivot()
        except Exception as error:  # noqa: BLE001  (every rank must reach the agreement below)
            failure = error
        if any_rank(failure is not None):
            raise TrainingError(
                "zero-prior: the pivot (placeholder.stop_step) failed on at least one rank"
                + (f": {failure}" if failure is not None else "; see that rank's error")
            ) from failure

    def _pivot_due(self) -> bool:
        pivot_step = self.zero_prior.pivot_step
        return pivot_step is not None and self.sd.frozen_prompts is None and self.step_num >= pivot_step

    def _record(self) -> ZeroPriorRecord:
        """The file record of the current vectors, written by the model's ``save_lora``."""
        extra: dict[str, Any] = {}
        for placeholder in self.placeholders:
            if not torch.isfinite(placeholder.vectors).all():
                raise TrainingError(
                    f"zero-prior: the placeholder {placeholder.registered.token!r} became NaN or infinite by step "
                    f"{self.step_num} (the training diverged), so step {self.step_num} is not saved: lower "
                    f"placeholder.lr (now {self.zero_prior.placeholder_lr}) or train.lr, and resume from the last save"
                )
        if self._optimizer_restarted_at is not None:
            extra["optimizer_restarted_at_step"] = self._optimizer_restarted_at
        frozen = self.sd.frozen_prompts
        if frozen is not None:
            extra["pivot_step"] = frozen.pivot_step
        if self.zero_prior.placeholder.verify_text_encoder:
            if frozen is None:
                now = {"at_save": module_sha256(self.sd.text_encoder[0])}
                self._note_encoder_check(now["at_save"])
            else:  # unloaded at the pivot; its hash was taken just before
                now = {"at_pivot": self._text_encoder_sha256_at_pivot}
            extra["text_encoder_sha256"] = {"start": self._text_encoder_sha256, **now}
        return to_record(
            self.placeholders,
            [self.zero_prior.placeholder],
            tokenizer_length=self.tokenizer_length,
            base_model=self.model_config.name_or_path,
            training_step=self.step_num,
            extra=extra,
            family=self.zero_prior.family.name,
        )

    def _restore_placeholders(self, path: str) -> None:
        record = read_zero_prior(path)
        if record is None:
            if path == self.network_config.pretrained_lora_path:
                print_acc(f"zero-prior: {path} is a plain LoRA; the placeholder starts from its initial vector")
                return
            raise PlaceholderError(
                f"{path} has no zero-prior placeholder, so this run cannot resume its vector: the training folder "
                "holds a run without train.train_placeholder_token (a baseline?); use another job name or "
                "training_folder"
            )
        if path != self.network_config.pretrained_lora_path:  # a resume, not a starting point
            self._check_pivot_on_resume(path, record)
        stored_by_token = {stored.token: stored for stored in record.placeholders}
        for placeholder in self.placeholders:
            token = placeholder.registered.token
            stored = stored_by_token.get(token)
            if stored is None or stored.vectors.shape != placeholder.vectors.shape:
                found = {name: list(s.vectors.shape) for name, s in stored_by_token.items()}
                raise PlaceholderError(
                    f"{path} holds placeholders {found}, not {token!r} with shape {list(placeholder.vectors.shape)}; "
                    "resume with the same placeholder settings, or use another job name or training_folder"
                )
            with torch.no_grad():
                placeholder.vectors.copy_(stored.vectors)
            print_acc(
                f"zero-prior: restored placeholder {token!r} from {os.path.basename(path)} "
                f"(step {record.training_step}), vector sha256 {vector_sha256(placeholder.vectors)}"
            )

    def _check_pivot_on_resume(self, path: str, record: ZeroPriorRecord) -> None:
        """Refuse a resume whose saved vector does not fit this config's ``stop_step``."""
        recorded, configured = record.extra.get("pivot_step"), self.zero_prior.pivot_step
        fix = "resume with the stop_step that run used, or use another job name or training_folder"
        if recorded is not None and recorded != configured:
            now = "is not set" if configured is None else f"resolves to {configured}"
            raise PlaceholderError(
                f"{path} froze its placeholder at step {recorded}, but this config's placeholder.stop_step {now}; "
                f"{fix}"
            )
        saved_at = record.training_step
        if recorded is None and configured is not None and saved_at is not None and saved_at >= configured:
            raise PlaceholderError(
                f"{path} was saved at step {saved_at} with its placeholder still training, past this "
                f"config's placeholder.stop_step ({configured}), so the vector would not be the one frozen at "
                f"step {configured}; {fix}"
            )

    def _remember_grad_norms(self) -> None:
        """Keep each vector's current (accumulated, rank-averaged, pre-clip) gradient norm for the logs."""
        for placeholder in self.placeholders:
            if placeholder.vectors.grad is not None:
                self._grad_norms[placeholder.registered.token] = placeholder.vectors.grad.detach().norm(dim=1)

    def _is_log_step(self) -> bool:
        """The steps on which BaseSDTrainProcess hands ``additional_logs`` to the logger."""
        every = self.logging_config.log_every
        if self.step_num == self.start_step or not self.accelerator.is_main_process:
            return False
        return every is None or (every > 0 and self.step_num % every == 0)

    def _log_placeholders(self) -> None:
        weight = self.sd.text_encoder[0].get_input_embeddings().weight
        tokenizer = self.sd.tokenizer[0]
        for placeholder, health in zip(self.placeholders, self._health, strict=True):
            stats = placeholder_stats(placeholder, weight, tokenizer, self.tokenizer_length, NEAREST_TOKENS)
            token = placeholder.registered.token
            health.add_log_step(self.step_num, stats["norm"], [repr(text) for text, _ in stats["nearest_tokens"][0]])
            grad_norms = self._grad_norms.get(token)
            for index in range(placeholder.registered.num_vectors):
                key = f"placeholder/{token}" + (f"/{index}" if placeholder.registered.num_vectors > 1 else "")
                scalars = {
                    f"{key}/norm": stats["norm"][index],
                    f"{key}/grad_norm": float(grad_norms[index]) if grad_norms is not None else 0.0,
                    f"{key}/cosine_to_initial": stats["cosine_to_initial"][index],
                }
                nearest = ", ".join(f"{text!r} {score:.3f}" for text, score in stats["nearest_tokens"][index])
                self.additional_logs.update(scalars)
                if not self.is_ui_trainer:  # the UI's Loss Graph would list text as a series it cannot plot
                    self.additional_logs[f"{key}/nearest_tokens"] = nearest
                if self.writer is not None:
                    for name, value in scalars.items():
                        self.writer.add_scalar(name, value, self.step_num)
                    self.writer.add_text(f"{key}/nearest_tokens", nearest, self.step_num)
                tqdm.write(
                    f"zero-prior step {self.step_num}: {key} norm {scalars[f'{key}/norm']:.4g} "
                    f"grad_norm {scalars[f'{key}/grad_norm']:.3g} "
                    f"cosine_to_initial {scalars[f'{key}/cosine_to_initial']:.3f} nearest {nearest}"
                )
        self._write_plugin_page()

    def _note_encoder_check(self, sha256: str) -> None:
        """The page shows the latest text-encoder check against the start (``verify_text_encoder``)."""
        for health in self._health:
            health.text_encoder_unchanged = (self.step_num, sha256 == self._text_encoder_sha256)

    def _write_plugin_page(self) -> None:
        """Rewrite the UI's Plugin tab page (UI jobs, rank 0); a failed write warns and training goes on.

        Only for a UI job (the base's ``is_ui_trainer``): from the command line the folder holds what it always held.
        """
        if not (self.is_ui_trainer and self.accelerator.is_main_process):
            return
        try:
            write_plugin_page(self.save_root, self._health)
        except OSError as error:
            print_acc(f"zero-prior: WARNING: could not write {os.path.join(self.save_root, 'plugin.html')}: {error}")
