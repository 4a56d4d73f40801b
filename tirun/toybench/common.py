"""The common approach: the diffusers textual_inversion example's loop, written once.

ToyBench runs it as its peer recipe (`train.loop=common`, through `train`), so the peer's
*quality* is measured beside tirun's, and `make bench` times this same loop (`ExampleLoop`, built
by `experiments.bench.variants.Common`), so its *speed* is measured on the code ToyBench scores.

What differs from `tirun.train`: every batch is resized and flipped anew and encoded by the VAE
(`latent_dist.sample()`), the whole token table trains under the optimizer and every other row
is copied back after each step, the text encoder is in train mode, and templates and flips come
from the loop's own generator. The loop honours every setting the example has (batch size,
gradient accumulation, `optimizer.scale_lr`, the lr scheduler and its warm-up, the optimizer's
settings, mixed precision, attention, gradient checkpointing) and gradient clipping; a setting
only tirun's trainer has is refused in one line naming it (`check`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from tirun import embeddings, tracking
from tirun.embeddings import LearnedWord
from tirun.files import atomic_write, write_json
from tirun.health import Health
from tirun.models import Components
from tirun.outputs import export_path, snapshot_path
from tirun.templates import per_image

# Settings only tirun's trainer has, each with the value that asks for nothing; the example's
# loop runs only with that value (another is refused, naming the key).
TIRUN_ONLY: dict[str, object] = {
    "train.min_snr_gamma": None,
    "train.noise_offset": 0.0,
    "train.checkpoint_every": 0,
    "train.early_stop.every": 0,
    "validation.every": 0,
    "resume": None,
    "word.num_vectors": 1,
    "word.progressive_every": 0,
    "word.image_tokens": False,
    "word.init_l2": 0.0,
    "word.init": "embedding",
    "word.init_file": None,
    "word.norm": None,
    "word.per_layer": False,
    "dataset.masked": False,
    "dataset.crop": "center",
}
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def check(cfg: DictConfig) -> None:
    """Refuse, in one line naming the key, a setting the example's loop does not have."""
    for key, off in TIRUN_ONLY.items():
        value = OmegaConf.select(cfg, key, default=off)
        if value != off:
            shown = "null" if off is None else str(off).lower() if isinstance(off, bool) else off
            raise ValueError(
                f"{key}={value} is not a setting of train.loop=common (the diffusers example's "
                f"loop has no such thing): set {key}={shown}, or train with train.loop=tirun"
            )


@dataclass(frozen=True)
class ExampleSettings:
    """What one run of the example's loop is given (its command-line arguments, by our names)."""

    token: str
    initializer: str
    templates: list[str] | list[list[str]]  # one list, or each image's own (captions)
    resolution: int
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 5e-3
    scale_lr: bool = False  # lr × batch_size × grad_accum, as the example's --scale_lr
    scheduler: str = "constant"
    warmup_steps: int = 0
    max_steps: int = 1
    max_grad_norm: float | None = None
    flip_p: float = 0.5
    repeats: int = 100
    center_crop: bool = True
    mixed_precision: str = "no"
    attention: str = "sdpa"
    gradient_checkpointing: bool = False
    device: str = "cpu"
    seed: int = 0

    @property
    def scaled_lr(self) -> float:
        return self.lr * (self.batch_size * self.grad_accum if self.scale_lr else 1)


def settings_from(cfg: DictConfig, images: int, device: str) -> ExampleSettings:
    """The loop's settings from a composed tirun config (``images``: how many training images)."""
    tc, oc, dc = cfg.train, cfg.optimizer, cfg.dataset
    return ExampleSettings(
        token=cfg.word.token,
        initializer=cfg.word.initializer,
        templates=per_image(instantiate(cfg.template), images),
        resolution=dc.resolution,
        batch_size=tc.batch_size,
        grad_accum=tc.grad_accum,
        lr=oc.lr,
        scale_lr=oc.scale_lr,
        scheduler=oc.scheduler,
        warmup_steps=oc.warmup_steps,
        max_steps=tc.max_steps,
        max_grad_norm=oc.max_grad_norm,
        flip_p=dc.flip_p,
        repeats=dc.repeats,
        mixed_precision=tc.mixed_precision,
        attention=tc.attention,
        gradient_checkpointing=tc.gradient_checkpointing,
        device=device,
        seed=tc.seed,
    )


def _no_clock(name: str) -> AbstractContextManager:
    return nullcontext()


class ExampleLoop:
    """The diffusers textual_inversion example's loop, one optimisation step per `step()`.

    Args:
        components: the model; its first tokenizer and text encoder take the placeholder (one
            text encoder: the example is SD 1.x/2.x's).
        images: the training images.
        settings: what the run is given.
        optimizer: builds the optimizer from (parameters, lr); AdamW with the example's
            defaults (betas 0.9/0.999, weight decay 1e-2, eps 1e-8) when None.
    """

    def __init__(
        self,
        components: Components,
        images: list[Image.Image],
        settings: ExampleSettings,
        optimizer: Callable | None = None,
    ):
        from diffusers.optimization import get_scheduler

        if len(components.text_encoders) != 1:
            raise ValueError(
                "train.loop=common is the diffusers example for one text encoder (SD 1.x/2.x); "
                "train this model with train.loop=tirun"
            )
        self.settings = s = settings
        self.components = components
        self.device = torch.device(s.device)
        self.weight_dtype = DTYPES[s.mixed_precision]
        self.rng = np.random.default_rng(s.seed)
        torch.manual_seed(s.seed)
        self.tokenizer, self.text_encoder = components.tokenizers[0], components.text_encoders[0]
        self.vae, self.unet = components.vae, components.unet
        self.noise_scheduler = components.scheduler
        # 1. the placeholder added: the table grown to the tokenizer, its row the initializer's
        self.tokenizer.add_tokens([s.token])
        self.new_id = self.tokenizer.convert_tokens_to_ids(s.token)
        init_id = self.tokenizer.encode(s.initializer, add_special_tokens=False)[0]
        self.text_encoder.resize_token_embeddings(len(self.tokenizer))
        self.table = self.text_encoder.get_input_embeddings()
        with torch.no_grad():
            self.table.weight[self.new_id] = self.table.weight[init_id].clone()
        # 2. everything frozen but the table; the VAE and UNet in the weight dtype, the text
        #    encoder in fp32 and in train mode
        components.prepare(self.device, torch.float32, s.attention, s.gradient_checkpointing)
        self.vae.to(dtype=self.weight_dtype)
        self.unet.to(dtype=self.weight_dtype)
        self.table.requires_grad_(True)
        self.text_encoder.train()
        self.original = self.table.weight.data.clone()
        self.keep = torch.ones(len(self.tokenizer), dtype=torch.bool)
        self.keep[self.new_id] = False
        # 3. the whole table under the optimizer, with the example's lr scheduler
        build = optimizer or (
            lambda params, lr: torch.optim.AdamW(
                params, lr=lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8
            )
        )
        self.optimizer = build(self.table.parameters(), lr=s.scaled_lr)
        self.lr_scheduler = get_scheduler(
            s.scheduler, self.optimizer, num_warmup_steps=s.warmup_steps,
            num_training_steps=s.max_steps,
        )  # fmt: skip
        self.scaler = torch.amp.GradScaler(s.device) if s.mixed_precision == "fp16" else None
        self.templates = per_image(s.templates, len(images))
        self.images = [image.convert("RGB") for image in images]
        self.order = self._shuffled()
        self.steps = 0

    # the example's `TextualInversionDataset` and its shuffled `DataLoader`
    def _shuffled(self) -> Iterator[int]:
        while True:
            indices = np.arange(len(self.images) * self.settings.repeats) % len(self.images)
            yield from self.rng.permutation(indices).tolist()

    def _example(self, index: int) -> tuple[torch.Tensor, str]:
        s = self.settings
        image = self.images[index]
        if s.center_crop:
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        image = image.resize((s.resolution, s.resolution), resample=Image.Resampling.BICUBIC)
        if self.rng.random() < s.flip_p:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = (np.array(image).astype(np.uint8) / 127.5 - 1.0).astype(np.float32)
        templates = self.templates[index]
        text = templates[self.rng.integers(len(templates))].format(s.token)
        return torch.from_numpy(array).permute(2, 0, 1), text

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        examples = [self._example(next(self.order)) for _ in range(self.settings.batch_size)]
        pixels, texts = zip(*examples, strict=True)
        ids = self.tokenizer(list(texts), padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt")  # fmt: skip
        return torch.stack(pixels).to(self.device), ids.input_ids.to(self.device)

    def autocast(self) -> AbstractContextManager:
        """Accelerate's mixed precision wraps the prepared text encoder in autocast (and the
        example's validation runs its pipeline in autocast)."""
        if self.weight_dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.weight_dtype)

    def step(self, clock: Callable[[str], AbstractContextManager] | None = None) -> float:
        """One optimisation step: `grad_accum` forward and backward passes, then the optimizer,
        the lr scheduler and the rows copied back; returns the step's mean loss.

        A ``clock`` (a context per named phase) times the phases, and splits the backward in
        two (the UNet's, then the text encoder's from the gradient of its output: the same
        operations in two calls) so their costs can be told apart.
        """
        timed = clock is not None
        clock = clock or _no_clock
        total = 0.0
        for _ in range(self.settings.grad_accum):
            with clock("data"):
                pixels, input_ids = self._batch()
            with clock("vae_encode"), torch.no_grad():
                latents = self.vae.encode(pixels.to(self.weight_dtype)).latent_dist.sample()
                latents = latents * self.vae.config.scaling_factor
            with clock("other"):
                noise = torch.randn_like(latents)
                steps = self.noise_scheduler.config.num_train_timesteps
                timesteps = torch.randint(0, steps, (len(latents),), device=self.device)
                noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
            with clock("text_encoder"), self.autocast():
                states = self.text_encoder(input_ids)[0].to(dtype=self.weight_dtype)
            with clock("unet"):
                condition = states.detach().requires_grad_() if timed else states
                prediction = self.unet(noisy, timesteps, condition).sample
                loss = F.mse_loss(prediction.float(), noise.float()) / self.settings.grad_accum
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            if timed:
                with clock("text_encoder"):
                    states.backward(condition.grad)
            total += loss.item()
        with clock("optimizer"):
            self._optimizer_step()
        with clock("restore"), torch.no_grad():  # every row but the placeholder's copied back
            self.table.weight[self.keep] = self.original[self.keep]
        self.steps += 1
        return total

    def _optimizer_step(self) -> None:
        if self.settings.max_grad_norm:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.table.parameters(), self.settings.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad()

    def vector(self) -> torch.Tensor:
        return self.table.weight[self.new_id].detach()

    def learned(self, step: int) -> LearnedWord:
        vectors = [self.table.weight[self.new_id : self.new_id + 1].detach().float().cpu().clone()]
        return LearnedWord(self.settings.token, vectors, step, self.components.name)

    def other_rows_restored(self) -> bool:
        """Every row but the placeholder's is bit-for-bit what it was before training."""
        return bool(torch.equal(self.table.weight.data[self.keep], self.original[self.keep]))

    def optimizer_state_bytes(self) -> int:
        return sum(
            t.numel() * t.element_size()
            for state in self.optimizer.state_dict()["state"].values()
            for t in state.values()
            if torch.is_tensor(t)
        )

    def pipeline(self):
        """A plain diffusers pipeline over these modules, the word loaded as the example leaves
        it (a row of the table), with DDIM on the training noise schedule."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=DDIMScheduler.from_config(self.noise_scheduler.config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe


def train(cfg: DictConfig, run_dir: Path, keep_tracking: bool = False) -> tuple[dict, dict]:
    """The example's loop on ``cfg``; writes the word in every format of `export`, its
    snapshots and `metrics.json` as `tirun.train.train` does, logs the loss and lr every
    `train.log_every` steps to the run's trackers, and returns (metrics, objects)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    check(cfg)
    started = time.perf_counter()
    run_dir = Path(run_dir)
    tc = cfg.train
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision, cpu=tc.cpu, log_with=tracking.log_with(cfg.tracker),
        project_dir=str(run_dir),
    )  # fmt: skip
    if accelerator.num_processes > 1:
        raise ValueError("train.loop=common runs in one process; launch it without accelerate")
    set_seed(tc.seed, deterministic=tc.deterministic)
    torch.autograd.set_detect_anomaly(tc.detect_anomaly)
    components: Components = instantiate(cfg.model)
    images = instantiate(cfg.dataset.images)
    loop = ExampleLoop(
        components,
        images,
        settings_from(cfg, len(images), str(accelerator.device)),
        lambda params, lr: instantiate(cfg.optimizer.optim)(params, lr=lr),
    )
    start = loop.vector().float().clone()
    vocabulary = loop.original[loop.keep].float().norm(dim=-1).median()
    health = Health(tc.stall_steps, tc.norm_warn_ratio, max(float(vocabulary), float(start.norm())))
    tracking.start(accelerator, cfg, run_dir)
    atomic_write(
        run_dir / "config.yaml", lambda t: t.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    )
    snapshots, losses, status = [], [], "finished"
    for step in range(1, tc.max_steps + 1):
        loss = loop.step()
        if not health.loss_is_finite(loss, step):
            status = "diverged"
            break
        losses.append(loss)
        if step % tc.log_every == 0 or step in (tc.max_steps, tc.stall_steps):
            vector = loop.vector().float()
            stats = {
                "word/norm": float(vector.norm()),
                "word/shift": float((vector - start).norm()),
            }
            lr = loop.lr_scheduler.get_last_lr()[0]
            accelerator.log({"loss": loss, "lr": lr, **stats}, step=step)
            health.check_stats(stats, step)
        if tc.snapshot_every and step % tc.snapshot_every == 0:
            seconds = time.perf_counter() - started
            path = embeddings.save(loop.learned(step), snapshot_path(run_dir, step), "diffusers")
            snapshots.append({"step": step, "seconds": seconds, "file": str(path[0])})
    files = []
    if status == "finished":
        word = loop.learned(tc.max_steps)
        files = [str(p) for fmt in cfg.export
                 for p in embeddings.save(word, export_path(run_dir, fmt, word), fmt)]  # fmt: skip
    metrics = {
        "status": status,
        "loop": "common",
        "steps": loop.steps,
        "lr": loop.settings.scaled_lr,
        "first_loss": losses[0] if losses else None,
        "final_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])) if losses else None,
        "wall_time_s": time.perf_counter() - started,
        "optimizer_state_bytes": loop.optimizer_state_bytes(),
        "files": files,
        "snapshots": snapshots,
    }
    write_json(run_dir / "metrics.json", metrics)
    if not keep_tracking:
        tracking.finish(accelerator, metrics, files)
    return metrics, {"accelerator": accelerator}
