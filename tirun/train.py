"""Textual Inversion: learn a new word's vectors on a frozen latent diffusion model.

Read top to bottom: prepare → cache latents → loop (draw batch, noise, loss, step, log,
validate, checkpoint) → save. Only the word's vectors are trained.
"""

from __future__ import annotations

import logging
import os
import resource
import statistics
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from tirun import checkpoint, tracking, xti
from tirun.data import LatentCache, TrainingViews, ViewSampler
from tirun.early_stop import EarlyStop
from tirun.files import atomic_write, write_json
from tirun.health import Health
from tirun.loss import ldm_loss
from tirun.models import Components
from tirun.outputs import save_outputs, save_word, snapshot_path
from tirun.templates import PromptSampler, per_image
from tirun.validation import validate, validation_judge
from tirun.word import Word

log = logging.getLogger(__name__)


def train(cfg: DictConfig, run_dir: Path, keep_tracking: bool = False) -> tuple[dict, dict]:
    """Learn `cfg.word` from `cfg.dataset` on `cfg.model`; returns (metrics, objects).

    Args:
        cfg: the composed config (see `tirun/conf/config.yaml`).
        run_dir: where files go (`python -m tirun` passes the folder all ranks agreed on).
        keep_tracking: leave the trackers open (an application follows and logs its scores;
            the caller then calls `tracking.finish`).
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    tc, wc, oc = cfg.train, cfg.word, cfg.optimizer
    if tc.max_steps < 1:
        raise ValueError(f"train.max_steps={tc.max_steps} trains nothing: give 1 or more steps")
    if wc.per_layer and set(cfg.export) - {"diffusers"}:
        raise ValueError(
            f"export={list(cfg.export)}: an XTI word (word.per_layer=true) has a file of its own "
            "that other tools' formats cannot hold; train with +recipe=fast (several vectors) "
            "for those"
        )

    # 1. Accelerator, seeds, precision.
    accelerator = make_accelerator(cfg, run_dir)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        tc.mixed_precision, torch.float32
    )

    # 2. The frozen model and the new word.
    components: Components = instantiate(cfg.model)
    components.prepare(accelerator.device, weight_dtype, tc.attention, tc.gradient_checkpointing)
    check_resolution(cfg.dataset.resolution, components)
    layers = xti.install(components.unet) if wc.per_layer else []
    images = instantiate(cfg.dataset.images)
    word = Word(components, wc.token, wc.initializer, wc.num_vectors,
                len(images) if wc.image_tokens else 0, wc.init, wc.init_file, len(layers))  # fmt: skip
    templates = per_image(instantiate(cfg.template), len(images))
    word.check_fits(dict.fromkeys(t for image in templates for t in image), "template")
    if cfg.validation.every:
        word.check_fits(cfg.validation.prompts, "validation.prompts")

    # 3. Views of the images, encoded once; the batch's draws (views; noise, timesteps and
    #    each image's sentence from one generator).
    dc = cfg.dataset
    masks = instantiate(dc.masks) if dc.masked else None
    views = TrainingViews(images, dc.resolution, dc.crop, dc.flip_p, dc.num_crops, tc.seed, masks)
    cache = LatentCache(components.vae, views)
    global_batch = tc.batch_size * accelerator.num_processes
    sampler = ViewSampler(views, global_batch, dc.repeats, seed=tc.seed)
    rng = torch.Generator().manual_seed(tc.seed + 1)
    prompts = PromptSampler(
        templates, components.tokenizers, rng, word.image_tokens, wc.image_token_p
    )
    early = EarlyStop(**tc.early_stop)
    fixed = fixed_batch(cache, templates, components, word, tc) if early.every else None
    judge = validation_judge(cfg, early.keep)

    # 4. Optimizer over the word's vectors only; lr scaled as in the paper.
    lr = oc.lr * (tc.batch_size * tc.grad_accum * accelerator.num_processes if oc.scale_lr else 1)
    optimizer = instantiate(oc.optim)(word.parameters(), lr=lr)
    lr_scheduler = get_scheduler(
        oc.scheduler, optimizer, num_warmup_steps=oc.warmup_steps, num_training_steps=tc.max_steps
    )
    optimizer = accelerator.prepare(optimizer)

    # 5. Resume: everything the loop depends on comes back, or the run stops with an error.
    ckpt_dir = run_dir / "checkpoints"
    step, loop = 0, {}
    if cfg.resume:
        state = checkpoint.load(checkpoint.find(cfg.resume, ckpt_dir))
        loop = checkpoint.restore(state, word, optimizer, lr_scheduler, sampler, prompts)
        early.load_state_dict(loop.get("early_stop", {}))
        step = state.step
        started -= loop.get("seconds", 0.0)  # the run's clock goes on from the checkpoint's
        log.info("resumed from step %d", step)
    tracking.start(accelerator, cfg, run_dir)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    if accelerator.is_main_process:
        atomic_write(run_dir / "config.yaml", lambda tmp: tmp.write_text(config_yaml))

    # 6. The loop.
    health = Health(tc.stall_steps, tc.norm_warn_ratio, word.reference_norm)
    progress = Progress(started, loop.get("snapshots", []))
    status = "finished"
    mine = slice(
        accelerator.process_index * tc.batch_size, (accelerator.process_index + 1) * tc.batch_size
    )
    bar = tqdm(
        total=tc.max_steps, initial=step, disable=not accelerator.is_main_process, desc="train"
    )
    while step < tc.max_steps:
        tick = time.perf_counter()
        active = word.num_vectors
        if wc.progressive_every:
            active = min(word.num_vectors, 1 + step // wc.progressive_every)
        step_loss = torch.zeros((), device=accelerator.device)
        for _ in range(tc.grad_accum):
            # 6a. A global batch of views, noise, timesteps and sentences; this rank's slice.
            latents, noise, timesteps, weights, sentences = draw_batch(
                sampler, cache, prompts, rng, word.text(active), tc.noise_offset, components
            )
            latents, noise, timesteps, weights = (
                x[mine].to(accelerator.device) if x is not None else None
                for x in (latents, noise, timesteps, weights)
            )  # each layer of an XTI word reads the sentence with its own token
            ids = prompts.ids(word.layer_prompts(sentences[mine]))
            input_ids = [x.to(accelerator.device) for x in ids]

            # 6b. The LDM loss on the scheduler's parameterisation (epsilon or v).
            with accelerator.autocast():
                loss = ldm_loss(components, latents, noise, timesteps, input_ids, weight_dtype,
                                tc.min_snr_gamma, weights, len(layers))  # fmt: skip
            if wc.init_l2:
                loss = loss + wc.init_l2 * word.l2_to_initializer()
            step_loss += loss.detach() / tc.grad_accum
            accelerator.backward(loss / tc.grad_accum)

        # 6c. Stop on a non-finite loss before it reaches the vectors.
        step_loss = float(accelerator.reduce(step_loss, "mean"))  # the step's one host sync
        if not health.loss_is_finite(step_loss, step):
            status = "diverged"
            break

        # 6d. Average the vectors' gradients across processes, clip, step.
        if accelerator.num_processes > 1:
            for vectors in word.vectors:
                vectors.grad = accelerator.reduce(vectors.grad, "mean")
        if oc.max_grad_norm:
            accelerator.clip_grad_norm_(word.parameters(), oc.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if wc.norm == "vocab":
            word.hold_norm()
        if active < word.num_vectors:
            word.keep_inactive(active)
        step += 1
        logging_now = step % tc.log_every == 0 or step in (tc.max_steps, tc.stall_steps)
        validating = bool(cfg.validation.every) and step % cfg.validation.every == 0
        saving = bool(tc.checkpoint_every) and step % tc.checkpoint_every == 0
        checking = logging_now or validating or saving  # a host sync: not at every step
        if checking and not health.vectors_are_finite(word.vectors, step):
            status = "diverged"
            break

        # 6e. Log, and say so when training goes wrong.
        progress.stepped(step_loss, tick)
        bar.update()
        if logging_now:
            stats = word.stats()  # reads the vectors back: only on log steps
            lr_now = lr_scheduler.get_last_lr()[0]
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr_now:.2e}")
            accelerator.log({"loss": step_loss, "lr": lr_now, **stats}, step=step)
            log.info(
                "step %d loss %.4f lr %.2e norm %.3f", step, step_loss, lr_now, stats["word/norm"]
            )
            health.check_stats(stats, step)

        # 6f. The deterministic objective (early stop, best word), snapshots, previews from
        #     the saved file, checkpoints.
        stop = False
        if early.due(step):
            with torch.no_grad(), accelerator.autocast():
                fixed_loss = ldm_loss(components, weight_dtype=weight_dtype, **fixed).item()
            stop = early.record(step, fixed_loss, word.vectors)
            bar.set_postfix(fixed_loss=f"{fixed_loss:.4f}", dvar=f"{early.ratio() or 1:.2f}")
        if tc.snapshot_every and step % tc.snapshot_every == 0 and accelerator.is_main_process:
            seconds = progress.seconds()
            path = save_word(word, layers, snapshot_path(run_dir, step), step)[0]
            progress.snapshots.append({"step": step, "seconds": seconds, "file": str(path)})
        if validating:
            score = validate(cfg, components, word, step, run_dir, accelerator, judge)
            if score is not None:
                early.record_validation(step, score, word.vectors)
                accelerator.log({"validation/score": score}, step=step)
                log.info("step %d validation score %.3f", step, score)
        if saving and accelerator.is_main_process:
            loop = progress.state_dict(early)
            state = checkpoint.capture(step, word, optimizer, lr_scheduler, sampler, prompts, loop)
            checkpoint.save(ckpt_dir, state, config_yaml, keep=tc.keep_checkpoints)
        accelerator.wait_for_everyone()
        if stop:
            bar.set_description(f"stopped at step {step} (DVAR)")
            break
    bar.close()

    # 7. Save the word in every format asked for (with early_stop.keep=best or validated, the
    #    word it names), and the metrics.
    objects = {
        "components": components,
        "word": word,
        "accelerator": accelerator,
        "early_stop": early,
    }
    files = []
    if accelerator.is_main_process and status == "finished":
        files = save_outputs(cfg, run_dir, word, layers, step, early)
    metrics = {
        "status": status,
        "steps": step,
        **progress.metrics(),
        "optimizer_state_bytes": optimizer_state_bytes(optimizer),
        "word": word.stats(),
        "files": files,
        "early_stop": early.outcome(step) if early.every or early.validation else None,
    }
    if accelerator.is_main_process:
        write_json(run_dir / "metrics.json", metrics)
    if not keep_tracking:
        tracking.finish(accelerator, metrics, files)
    return metrics, objects


class Progress:
    """What the loop measures as it goes: losses, step times, the word's snapshots."""

    def __init__(self, started: float, snapshots: list[dict]) -> None:
        self.started = started
        self.snapshots = snapshots
        self.losses: list[float] = []
        self.step_times: list[float] = []
        self.first_step_s: float | None = None

    def seconds(self) -> float:
        """Seconds since the run started (a resumed run's clock goes on from its checkpoint)."""
        return time.perf_counter() - self.started

    def stepped(self, loss: float, tick: float) -> None:
        self.step_times.append(time.perf_counter() - tick)
        self.first_step_s = self.first_step_s or self.seconds()
        self.losses.append(loss)

    def state_dict(self, early: EarlyStop) -> dict:
        """What a checkpoint keeps of the loop besides the trainer's objects."""
        return {
            "snapshots": self.snapshots,
            "seconds": self.seconds(),
            "early_stop": early.state_dict(),
        }

    def metrics(self) -> dict:
        losses, timed = self.losses, self.step_times[2:] or self.step_times
        return {
            "final_loss": statistics.fmean(losses[-max(1, len(losses) // 10) :])
            if losses
            else None,
            "first_loss": losses[0] if losses else None,
            "wall_time_s": self.seconds(),
            "steps_per_s": len(timed) / sum(timed) if timed else None,
            "timing": {
                "first_step_s": self.first_step_s,
                "step_s": statistics.median(timed) if timed else None,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "threads": torch.get_num_threads(),  # job_environment caps it at the CPU share
            },
            "snapshots": self.snapshots,
        }


def make_accelerator(cfg: DictConfig, run_dir: Path) -> Accelerator:
    """The run's Accelerator, seeded. All ranks draw the same global batch and take their
    slice, so a run's result does not depend on the number of processes. Accelerate keeps its
    settings process-wide and a sweep's next job may ask for another precision: reset first."""
    tc = cfg.train
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision,
        cpu=tc.cpu,
        log_with=tracking.log_with(cfg.tracker),
        project_dir=str(run_dir),
    )
    if tc.deterministic:  # CUDA's deterministic kernels; cuBLAS reads this before its first call
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_seed(tc.seed, deterministic=tc.deterministic)
    torch.autograd.set_detect_anomaly(tc.detect_anomaly)
    return accelerator


def check_resolution(resolution: int, components: Components) -> None:
    """The VAE maps ``resolution`` pixels to whole latent cells, or training would crop."""
    factor = components.vae_scale_factor
    if resolution < factor or resolution % factor:
        raise ValueError(
            f"dataset.resolution={resolution} is not a multiple of the VAE's factor {factor}: "
            f"use {max(factor, resolution // factor * factor)} or "
            f"{(resolution // factor + 1) * factor}"
        )


def fixed_batch(cache: LatentCache, templates: list[list[str]], components: Components, word: Word,
                tc: DictConfig) -> dict:  # fmt: skip
    """DVAR's fixed batch, drawn once from a generator of its own (the run's draws are
    untouched): every view in turn, each image's first sentence, noise, and timesteps spread
    evenly over the schedule (and the views' masks); returns `ldm_loss`'s batch arguments."""
    gen = torch.Generator().manual_seed(tc.seed + 2)
    size = max(tc.batch_size, len(cache.views))
    view = torch.arange(size) % len(cache.views)
    latents = cache.sample(view, torch.zeros(size, dtype=torch.bool), gen)
    noise = torch.randn(latents.shape, generator=gen)
    steps = components.scheduler.config.num_train_timesteps
    timesteps = (torch.arange(size) * steps // size).long()
    images = cache.views.image_index[view].tolist()
    sentences = word.layer_prompts([templates[i][0].format(word.text()) for i in images])
    sampler = PromptSampler(templates, components.tokenizers, gen)
    device = next(components.unet.parameters()).device
    weights = cache.loss_weights(view, torch.zeros(size, dtype=torch.bool))
    return {
        "latents": latents.to(device),
        "noise": noise.to(device),
        "timesteps": timesteps.to(device),
        "input_ids": [x.to(device) for x in sampler.ids(sentences)],
        "weights": weights.to(device) if weights is not None else None,
        "layers": word.per_layer,
    }


def draw_batch(
    sampler: ViewSampler,
    cache: LatentCache,
    prompts: PromptSampler,
    rng: torch.Generator,
    word_text: str,
    noise_offset: float,
    components: Components,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, list[str]]:
    """A global batch: views' latents drawn from their cached posteriors, noise (with an offset
    if asked), timesteps, the views' loss weights (their masks, or None), and each view's
    sentence from its own image's templates."""
    view, flip = next(sampler)
    latents = cache.sample(view, flip, rng)
    noise = torch.randn(latents.shape, generator=rng)
    if noise_offset:
        noise += noise_offset * torch.randn(*latents.shape[:2], 1, 1, generator=rng)
    steps = components.scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (len(view),), generator=rng)
    sentences = prompts.sentences(cache.views.image_index[view].tolist(), word_text)
    return latents, noise, timesteps, cache.loss_weights(view, flip), sentences


def optimizer_state_bytes(optimizer) -> int:
    return sum(
        t.numel() * t.element_size()
        for state in optimizer.state_dict()["state"].values()
        for t in state.values()
        if torch.is_tensor(t)
    )
