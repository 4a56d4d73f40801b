"""Textual Inversion: learn a new word's vectors on a frozen latent diffusion model.

Read top to bottom: prepare → cache latents → loop (draw batch, noise, loss, step, log,
validate, checkpoint) → save. Only the word's vectors are trained.
"""

from __future__ import annotations

import logging
import math
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import compute_snr
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from tirun import checkpoint, embeddings, sampling, tracking
from tirun.data import LatentCache, TrainingViews, ViewSampler
from tirun.files import atomic_write, write_json
from tirun.models import Components
from tirun.templates import per_image, with_image_token
from tirun.word import Word

log = logging.getLogger(__name__)


def train(cfg: DictConfig, run_dir: Path, keep_tracking: bool = False) -> tuple[dict, dict]:
    """Learn `cfg.word` from `cfg.dataset` on `cfg.model`; returns (metrics, objects).

    Args:
        cfg: the composed config (see `conf/config.yaml`).
        run_dir: where files go (`python -m tirun` passes the folder all ranks agreed on).
        keep_tracking: leave the trackers open (an application follows and logs its scores;
            the caller then calls `tracking.finish`).
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    tc = cfg.train

    # 1. Accelerator, seeds. All ranks draw the same global batch and take their slice, so a
    #    run's result does not depend on the number of processes.
    # Accelerate keeps its settings process-wide; a sweep's next job in this process may ask
    # for another precision. The process group (PartialState) stays.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision,
        cpu=tc.cpu,
        log_with=tracking.log_with(cfg.tracker),
        project_dir=str(run_dir),
    )
    set_seed(tc.seed)
    torch.autograd.set_detect_anomaly(tc.detect_anomaly)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        tc.mixed_precision, torch.float32
    )

    # 2. The frozen model and the new word.
    components: Components = instantiate(cfg.model)
    components.freeze()
    for module in (components.vae, components.unet, *components.text_encoders):
        module.to(accelerator.device)
        if weight_dtype != torch.float32:
            module.to(dtype=weight_dtype)
    components.set_attention(tc.attention)  # after the move: xformers checks the device
    if tc.gradient_checkpointing:
        components.unet.enable_gradient_checkpointing()
        for encoder in components.text_encoders:
            encoder.gradient_checkpointing_enable()
    images = instantiate(cfg.dataset.images)
    wc = cfg.word
    word = Word(
        components,
        token=wc.token,
        initializer=wc.initializer,
        num_vectors=wc.num_vectors,
        num_image_tokens=len(images) if wc.image_tokens else 0,
    )
    templates = per_image(instantiate(cfg.template), len(images))  # each image's sentences

    # 3. Views of the images, encoded once.
    views = TrainingViews(
        images,
        resolution=cfg.dataset.resolution,
        crop=cfg.dataset.crop,
        flip_p=cfg.dataset.flip_p,
        num_crops=cfg.dataset.num_crops,
        seed=tc.seed,
    )
    cache = LatentCache(components.vae, views)
    global_batch = tc.batch_size * accelerator.num_processes
    sampler = ViewSampler(views, global_batch, cfg.dataset.repeats, seed=tc.seed)
    rng = torch.Generator().manual_seed(tc.seed + 1)  # noise, timesteps, prompts
    prompt_ids = PromptIds(components.tokenizers)

    # 4. Optimizer over the word's vectors only; lr scaled as in the paper.
    oc = cfg.optimizer
    lr = oc.lr * (tc.batch_size * tc.grad_accum * accelerator.num_processes if oc.scale_lr else 1)
    optimizer = instantiate(oc.optim)(word.parameters(), lr=lr)
    lr_scheduler = get_scheduler(
        oc.scheduler, optimizer, num_warmup_steps=oc.warmup_steps, num_training_steps=tc.max_steps
    )
    optimizer = accelerator.prepare(optimizer)

    # 5. Resume: everything the loop depends on comes back, or the run stops with an error.
    ckpt_dir = run_dir / "checkpoints"
    step = 0
    if cfg.resume:
        state = checkpoint.load(checkpoint.find(cfg.resume, ckpt_dir))
        step = state.step
        with torch.no_grad():
            for i, vectors in enumerate(word.vectors):
                vectors.copy_(state.tensors[f"vectors.{i}"])
        optimizer.load_state_dict(state.optimizer)
        lr_scheduler.load_state_dict(state.state["lr_scheduler"])
        sampler.load_state_dict(
            {"generator": state.tensors["rng.sampler"], "queue": state.state["sampler_queue"]}
        )
        rng.set_state(state.tensors["rng.batch"])
        log.info("resumed from step %d", step)

    accelerator.init_trackers(
        tracking.project(cfg.tracker),
        config=OmegaConf.to_container(cfg, resolve=True),
        init_kwargs=tracking.init_kwargs(cfg.tracker, cfg, run_dir),
    )
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    if accelerator.is_main_process:
        atomic_write(run_dir / "config.yaml", lambda tmp: tmp.write_text(config_yaml))

    # 6. The loop.
    losses: list[float] = []
    step_times: list[float] = []
    first_step_s = None
    status = "finished"
    norm_warned = False
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
            # 6a. A global batch of views, prompts, noise and timesteps; this rank's slice.
            view, flip = next(sampler)
            latents = cache.sample(view, flip, rng)
            noise = torch.randn(latents.shape, generator=rng)
            if tc.noise_offset:
                noise += tc.noise_offset * torch.randn(*latents.shape[:2], 1, 1, generator=rng)
            timesteps = torch.randint(
                0, components.scheduler.config.num_train_timesteps, (len(view),), generator=rng
            )
            prompts = []
            for image in views.image_index[view].tolist():
                sentences = templates[image]
                template = sentences[int(torch.randint(len(sentences), (1,), generator=rng))]
                if word.image_tokens and float(torch.rand(1, generator=rng)) < wc.image_token_p:
                    prompts.append(
                        with_image_token(template).format(
                            word.text(active), word.image_tokens[image]
                        )
                    )
                else:
                    prompts.append(template.format(word.text(active)))
            mine = slice(
                accelerator.process_index * tc.batch_size,
                (accelerator.process_index + 1) * tc.batch_size,
            )
            latents, noise, timesteps = (
                x[mine].to(accelerator.device) for x in (latents, noise, timesteps)
            )
            input_ids = [ids.to(accelerator.device) for ids in prompt_ids(prompts[mine])]

            # 6b. The LDM loss, with the target the scheduler's parameterisation asks for.
            with accelerator.autocast():
                noisy = components.scheduler.add_noise(latents, noise, timesteps).to(weight_dtype)
                hidden, added = components.encode_prompt(input_ids)
                pred = components.unet(noisy, timesteps, hidden, added_cond_kwargs=added).sample
            if components.prediction_type == "v_prediction":
                target = components.scheduler.get_velocity(latents, noise, timesteps)
            else:
                target = noise
            loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
            if tc.min_snr_gamma:
                snr = compute_snr(components.scheduler, timesteps)
                weight = snr.clamp(max=tc.min_snr_gamma) / snr
                if components.prediction_type == "v_prediction":
                    weight = snr.clamp(max=tc.min_snr_gamma) / (snr + 1)
                loss = loss * weight
            loss = loss.mean()
            if wc.init_l2:
                loss = loss + wc.init_l2 * word.l2_to_initializer()
            step_loss += loss.detach() / tc.grad_accum
            accelerator.backward(loss / tc.grad_accum)

        # 6c. Stop on a non-finite loss before it reaches the vectors.
        step_loss = float(accelerator.reduce(step_loss, "mean"))  # the step's one host sync
        if not math.isfinite(step_loss):
            log.warning(
                "loss is %s at step %d: stopping; the last checkpoint and embedding are kept "
                "(lower optimizer.lr or use train.mixed_precision=bf16)",
                step_loss,
                step,
            )
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
        if active < word.num_vectors:
            word.keep_inactive(active)
        step += 1
        # Non-finite vectors give a non-finite loss at the next step; before anything is logged
        # or written they are checked outright (a host sync, so not at every step).
        writes = (
            step % tc.log_every == 0
            or step in (tc.max_steps, tc.stall_steps)
            or (cfg.validation.every and step % cfg.validation.every == 0)
            or (tc.checkpoint_every and step % tc.checkpoint_every == 0)
        )
        if writes and not all(bool(torch.isfinite(v).all()) for v in word.vectors):
            log.warning(
                "the word's vectors became non-finite at step %d: stopping; the last "
                "checkpoint is kept (lower optimizer.lr)",
                step,
            )
            status = "diverged"
            break

        # 6e. Log, and say so when training goes wrong.
        step_times.append(time.perf_counter() - tick)
        if first_step_s is None:
            first_step_s = time.perf_counter() - started
        losses.append(step_loss)
        bar.update()
        if step % tc.log_every == 0 or step in (tc.max_steps, tc.stall_steps):
            stats = word.stats()  # reads the vectors back: only on log steps
            lr_now = lr_scheduler.get_last_lr()[0]
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr_now:.2e}")
            accelerator.log({"loss": step_loss, "lr": lr_now, **stats}, step=step)
            log.info(
                "step %d loss %.4f lr %.2e norm %.3f cosine-to-init %.3f",
                step,
                step_loss,
                lr_now,
                stats["word/norm"],
                stats["word/cosine_to_init"],
            )
            if step == tc.stall_steps and stats["word/shift"] < 1e-6:
                log.warning(
                    "the word's vectors have not moved after %d steps: check optimizer.lr", step
                )
            if stats["word/norm"] > tc.norm_warn_ratio * word.typical_norm and not norm_warned:
                norm_warned = True
                log.warning(
                    "the word's norm %.2f is over %.0fx the vocabulary's typical %.2f at step %d: "
                    "the usual sign of an overfit word (fewer steps, a lower lr or word.init_l2)",
                    stats["word/norm"],
                    tc.norm_warn_ratio,
                    word.typical_norm,
                    step,
                )

        # 6f. Validation previews from the saved file; checkpoints.
        if cfg.validation.every and step % cfg.validation.every == 0:
            validate(cfg, components, word, step, run_dir, accelerator)
        if tc.checkpoint_every and step % tc.checkpoint_every == 0 and accelerator.is_main_process:
            save_checkpoint(
                ckpt_dir,
                step,
                word,
                optimizer,
                lr_scheduler,
                sampler,
                rng,
                config_yaml,
                keep=tc.keep_checkpoints,
            )
        accelerator.wait_for_everyone()
    bar.close()

    # 7. Save the word in every format asked for, and the metrics.
    objects = {"components": components, "word": word, "accelerator": accelerator}
    files: list[str] = []
    if accelerator.is_main_process and status == "finished":
        learned = word.learned(step)
        for fmt in cfg.export:
            files += [
                str(p) for p in embeddings.save(learned, export_path(run_dir, fmt, learned), fmt)
            ]
    timed = step_times[2:] or step_times
    metrics = {
        "status": status,
        "steps": step,
        "final_loss": statistics.fmean(losses[-max(1, len(losses) // 10) :]) if losses else None,
        "first_loss": losses[0] if losses else None,
        "wall_time_s": time.perf_counter() - started,
        "steps_per_s": len(timed) / sum(timed) if timed else None,
        "timing": {
            "first_step_s": first_step_s,
            "step_s": statistics.median(timed) if timed else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
        "optimizer_state_bytes": optimizer_state_bytes(optimizer),
        "word": word.stats(),
        "files": files,
    }
    if accelerator.is_main_process:
        write_json(run_dir / "metrics.json", metrics)
    if not keep_tracking:
        tracking.finish(accelerator, metrics, files)
    return metrics, objects


class PromptIds:
    """Token ids of prompts, each sentence tokenized once: a run draws the same few dozen
    sentences thousands of times, and tokenizing them anew was a share of a small step."""

    def __init__(self, tokenizers: list) -> None:
        self.tokenizers = tokenizers
        self.known: dict[str, list[torch.Tensor]] = {}

    def __call__(self, prompts: list[str]) -> list[torch.Tensor]:
        """One [len(prompts), max_length] id tensor per tokenizer."""
        for prompt in prompts:
            if prompt not in self.known:
                self.known[prompt] = [
                    tok(
                        prompt,
                        padding="max_length",
                        max_length=tok.model_max_length,
                        truncation=True,
                        return_tensors="pt",
                    ).input_ids[0]
                    for tok in self.tokenizers
                ]
        rows = [self.known[p] for p in prompts]
        return [torch.stack(column) for column in zip(*rows, strict=True)]


def validate(
    cfg: DictConfig,
    components: Components,
    word: Word,
    step: int,
    run_dir: Path,
    accelerator: Accelerator,
) -> None:
    """A fixed-seed grid drawn from the word *as saved and loaded back* by the users' loader."""
    if not accelerator.is_main_process:
        return
    vc = cfg.validation
    folder = run_dir / "samples" / "validation"
    files = embeddings.save(
        word.learned(step), folder / f"step_{step:06d}.safetensors", "diffusers"
    )
    with word.plain_text_encoders() as tokenizers:
        untouched = Components(**{**vars(components), "tokenizers": tokenizers})
        pipe = untouched.pipeline(vc.scheduler)
        pipe.set_progress_bar_config(disable=True)
        # The pipeline expands a multi-vector token itself: prompts carry the bare token.
        token = embeddings.load_into_pipeline(
            pipe, [tuple(files) if len(files) == 2 else files[0]]
        )[0]
        prompts = [p.format(token) for p in vc.prompts]
        rows = sampling.sample(
            pipe,
            prompts,
            vc.images_per_prompt,
            vc.steps,
            vc.guidance,
            vc.seed,
            components.resolution,
        )
    picture = sampling.grid(rows)
    atomic_write(folder / f"step_{step:06d}.png", lambda tmp: picture.save(tmp, format="PNG"))
    tracking.log_images(accelerator, "validation", picture, step)


def save_checkpoint(
    folder, step, word, optimizer, lr_scheduler, sampler, rng, config_yaml, keep: int
) -> None:
    tensors = {f"vectors.{i}": v.detach().cpu() for i, v in enumerate(word.vectors)}
    tensors["rng.sampler"] = sampler.generator.get_state()
    tensors["rng.batch"] = rng.get_state()
    state = {
        "lr_scheduler": lr_scheduler.state_dict(),
        "sampler_queue": sampler.state_dict()["queue"],
    }
    checkpoint.save(
        folder,
        checkpoint.Checkpoint(step, tensors, optimizer.state_dict(), state),
        config_yaml,
        keep=keep,
    )


def export_path(run_dir: Path, fmt: str, learned: embeddings.LearnedWord) -> Path:
    """Where each format's file goes: the names the other tools look for."""
    name = learned.token.strip("<>") or "word"
    sdxl = len(learned.vectors) == 2
    return {
        "diffusers": run_dir / "learned_embeds.safetensors",
        "a1111": run_dir / f"{name}.{'safetensors' if sdxl else 'pt'}",
        "official": run_dir / "embeddings.pt",
        "kohya": run_dir / f"{name}.kohya.safetensors",
    }.get(fmt, run_dir / fmt)


def optimizer_state_bytes(optimizer) -> int:
    return sum(
        t.numel() * t.element_size()
        for state in optimizer.state_dict()["state"].values()
        for t in state.values()
        if torch.is_tensor(t)
    )
