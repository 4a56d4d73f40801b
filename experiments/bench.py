"""How fast tirun trains a word, beside the common approach and the floor (issue 7).

Three variants, measured on the same model, machine, batch, resolution, precision and attention:

- `tirun`: tirun's own trainer, `train(cfg)` composed through Hydra as `python -m tirun`
  composes it, paused after each optimisation step so it steps in turn with the others.
- `common`: the loop of the diffusers textual_inversion example, re-implemented step for step:
  images read and resized every step, the VAE encodes every batch, the whole token table trains
  under AdamW (weight decay 0.01) and every other row is copied back after the step.
- `floor`: one forward and backward of the frozen text encoder and UNet on cached latents, the
  gradient reaching only the new vector, in eager PyTorch: what the method itself costs.

Each variant runs in a worker process of its own, so peak memory is that process's high-water
mark (`ru_maxrss`, or CUDA's peak allocation on a GPU) and no variant inherits another's. The
coordinator steps the three in turn (ABBA order), so a change in the machine's load hits every
variant alike.

    python -m experiments.bench                 # CPU: sd15 (and toy when present), 256 px
    python -m experiments.bench --quick         # a short smoke run (small images, few steps)
    python -m experiments.bench --device cuda   # 512 px, batch 1/4, fp16/bf16, sdpa/xformers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "experiments" / "results"
TOY_MODEL = REPO / "tirun" / "assets" / "toy" / "model"
TOKEN, INITIALIZER = "<bench-word>", "toy"
LR, WEIGHT_DECAY = 5e-3, 1e-2
PROMPTS = ["a photo of a {}", "a painting in the style of {}"]
GUIDANCE = 7.5
TARGETS = {"floor_ratio": 1.05, "speedup_vs_common": 1.3, "sampling_ratio": 0.95}
# The trainer's Hydra model preset for each benchmark model.
TIRUN_MODEL = {"sd15": "sd15_random", "toy": "toy", "tiny-sd1": "tiny"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    """One point of the grid: every variant of a case runs on exactly these settings."""

    model: str
    device: str
    resolution: int
    batch: int
    precision: str = "fp32"
    attention: str = "sdpa"

    @property
    def label(self) -> str:
        return f"{self.resolution}px b{self.batch} {self.precision} {self.attention}"

    @property
    def weight_dtype(self) -> torch.dtype:
        return DTYPES[self.precision]


@dataclass(frozen=True)
class Plan:
    """How many steps to take; `timed` is split around the tirun run."""

    warmup: int = 2
    timed: int = 6
    phase_steps: int = 2
    sample_steps: int = 8
    images_per_prompt: int = 1
    sample_repeats: int = 2
    threads: int = 2
    profile: bool = True


# 1. Models ------------------------------------------------------------------------------------


def toy_available() -> bool:
    return (TOY_MODEL / "model_index.json").is_file() and (TOY_MODEL / "unet").is_dir()


def load_components(model: str, resolution: int):
    """The model as tirun loads it: the packaged toy model, or random weights on an arch folder."""
    from tirun.models import build_random, load_pretrained

    if model == "toy":
        return load_pretrained("toy", resolution)
    return build_random(model, seed=0, resolution=resolution)


def native_resolution(model: str) -> int:
    """The image size a small model was made for: its VAE's `sample_size`."""
    from tirun.models import ASSETS

    folder = TOY_MODEL if model == "toy" else ASSETS / "arch" / model
    if not folder.is_dir():
        folder = Path(model)
    return int(json.loads((folder / "vae" / "config.json").read_text())["sample_size"])


def pad_tokenizer(tokenizer, size: int):
    """The tokenizer with unused entries up to `size`, so its length matches the token table.

    The example grows the table to `len(tokenizer)`: with the project's small tokenizer that
    would shrink SD 1.5's 49 408-row table to a few hundred rows and hide the cost under test.
    """
    from transformers import CLIPTokenizer

    if len(tokenizer) >= size:
        return tokenizer
    with tempfile.TemporaryDirectory(prefix="bench-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        spec = json.loads((Path(tmp) / "tokenizer.json").read_text())
        vocab = spec["model"]["vocab"]
        for index in range(len(tokenizer), size):
            vocab[f"<|unused{index}|>"] = index
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec))
        return CLIPTokenizer.from_pretrained(tmp)


def use_attention(unet, attention: str) -> None:
    """`sdpa` is diffusers' default processor; `xformers` is switched on as the example does."""
    if attention == "xformers":
        unet.enable_xformers_memory_efficient_attention()
    elif attention != "sdpa":
        raise ValueError(f"attention={attention!r} is unknown; use sdpa or xformers")


def write_images(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """A few smooth random RGB images: timing does not depend on what they show."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        image.save(folder / f"image{index}.png")
    return folder


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Seconds per named phase; an inactive one costs nothing and leaves the step unsplit."""

    def __init__(self, device: torch.device, active: bool = True):
        self.device = device
        self.active = active
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, name: str):
        return self._phase(name) if self.active else nullcontext()

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds[name] += time.perf_counter() - start


def unet_and_backward(
    unet, noisy, timesteps, states, target, clock: Stopwatch, scaler: torch.amp.GradScaler | None
) -> float:
    """UNet forward, loss and backward; a measuring clock splits off the text encoder's backward
    so the two costs can be told apart (the same operations, in two calls)."""
    condition = states.detach().requires_grad_() if clock.active else states
    with clock("unet"):
        prediction = unet(noisy, timesteps, condition).sample
        loss = F.mse_loss(prediction.float(), target.float(), reduction="mean")
        (scaler.scale(loss) if scaler else loss).backward()
    if clock.active:
        with clock("text_encoder"):
            states.backward(condition.grad)
    return loss.item()


def grad_scaler(case: Case) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling to train at all (Accelerate adds it); fp32 and bf16 do not."""
    return torch.amp.GradScaler(case.device) if case.precision == "fp16" else None


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad()


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value)
    )


# 2. The common approach: the diffusers example's loop ------------------------------------------


class ExampleImages(torch.utils.data.Dataset):
    """The example's `TextualInversionDataset.__getitem__`: the file is read, a template drawn
    and tokenized, the image resized (bicubic) and flipped, at every step."""

    def __init__(self, folder: Path, tokenizer, size: int, placeholder: str, flip_p: float = 0.5):
        from tirun.templates import OBJECT_TEMPLATES

        self.paths = sorted(folder.iterdir())
        self.tokenizer = tokenizer
        self.size = size
        self.placeholder = placeholder
        self.flip_p = flip_p
        self.templates = OBJECT_TEMPLATES
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.paths) * 100

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = Image.open(self.paths[index % len(self.paths)])
        if image.mode != "RGB":
            image = image.convert("RGB")
        text = self.templates[self.rng.integers(len(self.templates))].format(self.placeholder)
        input_ids = self.tokenizer(
            text,
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids[0]
        image = Image.fromarray(np.array(image).astype(np.uint8))
        image = image.resize((self.size, self.size), resample=Image.Resampling.BICUBIC)
        if self.rng.random() < self.flip_p:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = (np.array(image).astype(np.uint8) / 127.5 - 1.0).astype(np.float32)
        return {"input_ids": input_ids, "pixel_values": torch.from_numpy(array).permute(2, 0, 1)}


class Common:
    """The diffusers textual_inversion example, step for step (no checkpoint or validation).

    Args:
        components: the model, fresh from `load_components`.
        case: device, batch, precision and attention.
        images: the training image folder.
    """

    name = "common"

    def __init__(self, components, case: Case, images: Path):
        self.device = torch.device(case.device)
        self.weight_dtype = case.weight_dtype
        self.tokenizer = pad_tokenizer(components.tokenizers[0], _table_rows(components))
        self.text_encoder = components.text_encoders[0]
        self.vae, self.unet, self.noise_scheduler = (
            components.vae,
            components.unet,
            components.scheduler,
        )
        # 1. add the placeholder, grow the table to the tokenizer, start it at the initializer
        self.tokenizer.add_tokens([TOKEN])
        init_id = self.tokenizer.encode(INITIALIZER, add_special_tokens=False)[0]
        self.placeholder_ids = self.tokenizer.convert_tokens_to_ids([TOKEN])
        self.text_encoder.resize_token_embeddings(len(self.tokenizer))
        table = self.text_encoder.get_input_embeddings().weight.data
        with torch.no_grad():
            for token_id in self.placeholder_ids:
                table[token_id] = table[init_id].clone()
        # 2. freeze all but the token table (in eval mode, as `from_pretrained` leaves them)
        self.vae.requires_grad_(False).eval()
        self.unet.requires_grad_(False).eval()
        self.text_encoder.encoder.requires_grad_(False)
        self.text_encoder.final_layer_norm.requires_grad_(False)
        self.text_encoder.embeddings.position_embedding.requires_grad_(False)
        # 3. the whole table under AdamW; frozen parts in the weight dtype, the encoder in fp32
        self.optimizer = torch.optim.AdamW(
            self.text_encoder.get_input_embeddings().parameters(),
            lr=LR,
            betas=(0.9, 0.999),
            weight_decay=WEIGHT_DECAY,
            eps=1e-8,
        )
        self.scaler = grad_scaler(case)
        self.text_encoder.to(self.device)
        self.unet.to(self.device, dtype=self.weight_dtype)
        self.vae.to(self.device, dtype=self.weight_dtype)
        use_attention(self.unet, case.attention)
        dataset = ExampleImages(images, self.tokenizer, case.resolution, TOKEN)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=case.batch, shuffle=True)
        self.batches = iter(self.loader)
        self.original = self.text_encoder.get_input_embeddings().weight.data.clone()
        self.text_encoder.train()

    def autocast(self):
        """Accelerate's mixed precision wraps the prepared text encoder in autocast (and the
        example's validation runs its pipeline in autocast)."""
        if self.weight_dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.weight_dtype)

    def _next_batch(self) -> dict[str, torch.Tensor]:
        try:
            batch = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            batch = next(self.batches)
        return {k: v.to(self.device) for k, v in batch.items()}

    def step(self, clock: Stopwatch | None = None) -> float:
        """One optimisation step of the example's loop; returns the loss."""
        clock = clock or Stopwatch(self.device, active=False)
        with clock("data"):
            batch = self._next_batch()
        with clock("vae_encode"):
            pixels = batch["pixel_values"].to(dtype=self.weight_dtype)
            latents = self.vae.encode(pixels).latent_dist.sample().detach()
            latents = latents * self.vae.config.scaling_factor
        with clock("other"):
            noise = torch.randn_like(latents)
            timesteps = torch.randint(
                0,
                self.noise_scheduler.config.num_train_timesteps,
                (latents.shape[0],),
                device=self.device,
            ).long()
            noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with clock("text_encoder"), self.autocast():
            states = self.text_encoder(batch["input_ids"])[0].to(dtype=self.weight_dtype)
        loss = unet_and_backward(self.unet, noisy, timesteps, states, noise, clock, self.scaler)
        with clock("optimizer"):
            optimizer_step(self.optimizer, self.scaler)
        with clock("restore"):
            self._restore_other_rows()
        return loss

    def _restore_other_rows(self) -> None:
        keep = torch.ones((len(self.tokenizer),), dtype=torch.bool)
        keep[min(self.placeholder_ids) : max(self.placeholder_ids) + 1] = False
        with torch.no_grad():
            self.text_encoder.get_input_embeddings().weight[keep] = self.original[keep]

    def other_rows_restored(self) -> bool:
        """Every row but the placeholder's is bit-for-bit what it was before training."""
        keep = torch.ones((len(self.tokenizer),), dtype=torch.bool)
        keep[min(self.placeholder_ids) : max(self.placeholder_ids) + 1] = False
        weight = self.text_encoder.get_input_embeddings().weight.data
        return bool(torch.equal(weight[keep], self.original[keep]))

    def optimizer_state_bytes(self) -> int:
        return state_bytes(self.optimizer)

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


def _table_rows(components) -> int:
    return components.text_encoders[0].get_input_embeddings().num_embeddings


# 3. The floor: frozen forward and backward, the gradient reaching the new vector only ---------


class NewVectorEmbedding(nn.Module):
    """The frozen token table, with the placeholder's id read from a trainable vector."""

    def __init__(self, table: nn.Embedding, new_id: int, vector: nn.Parameter):
        super().__init__()
        self.table = table
        self.new_id = new_id
        self.vector = vector

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_new = input_ids == self.new_id
        rows = self.table(input_ids.masked_fill(is_new, 0))
        return torch.where(is_new.unsqueeze(-1), self.vector.to(rows.dtype), rows)


class Floor:
    """Cached latents, frozen text encoder and UNet, AdamW on one vector: the method's own cost.

    Args:
        components: the model, fresh from `load_components`.
        case: device, batch, precision and attention.
        images: the training image folder.
    """

    name = "floor"

    def __init__(self, components, case: Case, images: Path):
        from tirun.templates import OBJECT_TEMPLATES

        self.device = torch.device(case.device)
        self.batch = case.batch
        self.tokenizer = pad_tokenizer(components.tokenizers[0], _table_rows(components))
        self.text_encoder, self.unet = components.text_encoders[0], components.unet
        self.noise_scheduler = components.scheduler
        for module in (components.vae, self.unet, self.text_encoder):
            module.requires_grad_(False).eval().to(self.device, dtype=case.weight_dtype)
        use_attention(self.unet, case.attention)
        # 1. the new vector, a parameter of its own, read through the frozen table
        self.tokenizer.add_tokens([TOKEN])
        new_id = self.tokenizer.convert_tokens_to_ids(TOKEN)
        table = self.text_encoder.get_input_embeddings()
        init_id = self.tokenizer.encode(INITIALIZER, add_special_tokens=False)[0]
        self.vector = nn.Parameter(table.weight[init_id].detach().float().clone())
        self.text_encoder.set_input_embeddings(NewVectorEmbedding(table, new_id, self.vector))
        self.optimizer = torch.optim.AdamW([self.vector], lr=LR, weight_decay=WEIGHT_DECAY)
        self.scaler = grad_scaler(case)
        # 2. latents and prompts computed once: no VAE and no tokenizer inside the step
        self.latents = encode_images(components.vae, images, case.resolution, self.device)
        prompts = [t.format(TOKEN) for t in OBJECT_TEMPLATES]
        self.prompt_ids = self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids.to(self.device)
        self.generator = torch.Generator().manual_seed(0)

    def step(self, clock: Stopwatch | None = None) -> float:
        """Forward and backward on a cached batch, then AdamW on the vector; returns the loss."""
        clock = clock or Stopwatch(self.device, active=False)
        with clock("data"):
            pick = torch.randint(len(self.latents), (self.batch,), generator=self.generator)
            words = torch.randint(len(self.prompt_ids), (self.batch,), generator=self.generator)
            latents, ids = (
                self.latents[pick.to(self.device)],
                self.prompt_ids[words.to(self.device)],
            )
        with clock("other"):
            noise = torch.randn_like(latents)
            timesteps = torch.randint(
                0,
                self.noise_scheduler.config.num_train_timesteps,
                (self.batch,),
                device=self.device,
            )
            noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with clock("text_encoder"):
            states = self.text_encoder(ids)[0]
        loss = unet_and_backward(self.unet, noisy, timesteps, states, noise, clock, self.scaler)
        with clock("optimizer"):
            optimizer_step(self.optimizer, self.scaler)
        return loss

    def optimizer_state_bytes(self) -> int:
        return state_bytes(self.optimizer)


@torch.no_grad()
def encode_images(vae, folder: Path, size: int, device: torch.device) -> torch.Tensor:
    """Scaled latents of every image, encoded once (one posterior sample each)."""
    param = next(vae.parameters())
    pixels = []
    for path in sorted(folder.iterdir()):
        image = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        pixels.append(torch.from_numpy(array).permute(2, 0, 1))
    batch = torch.stack(pixels).to(device, param.dtype)
    return vae.encode(batch).latent_dist.sample() * vae.config.scaling_factor


# 4. tirun: its trainer and its sampler ---------------------------------------------------------


def tirun_overrides(case: Case, images: Path, out_dir: Path, steps: int) -> list[str]:
    """The Hydra overrides that put tirun's trainer on this case."""
    overrides = [
        f"model={TIRUN_MODEL.get(case.model, case.model)}",
        f"dataset.path={images}",
        f"train.max_steps={steps}",
        f"train.batch_size={case.batch}",
        "train.checkpoint_every=0",
        "validation.every=0",
        "tracker=none",
        f"model.resolution={case.resolution}",
        f"train.mixed_precision={'no' if case.precision == 'fp32' else case.precision}",
        f"train.attention={case.attention}",
        f"train.cpu={case.device == 'cpu'}",
    ]
    return overrides


def run_tirun(case: Case, images: Path, out_dir: Path, steps: int) -> dict:
    """Run `train(cfg)` as `python -m tirun` would; returns its `metrics.json`."""
    from hydra import compose, initialize_config_dir

    from tirun.train import train

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=tirun_overrides(case, images, out_dir, steps))
    train(cfg, run_dir=out_dir)
    metrics = out_dir / "metrics.json"
    if not metrics.is_file():
        raise RuntimeError(f"tirun's trainer wrote no {metrics}")
    return json.loads(metrics.read_text())


def tirun_sampler() -> Callable | None:
    """tirun's validation sampler, or None while it does not exist."""
    try:
        from tirun.sampling import sample
    except ImportError:
        return None
    return sample


def sample_grid(pipe, kind: str, plan: Plan, resolution: int) -> None:
    """The validation grid (every prompt × `images_per_prompt`) by tirun's sampler, or by one
    plain pipeline call with the same scheduler, steps, guidance and size."""
    prompts = [p.format(TOKEN) for p in PROMPTS]
    if kind == "tirun":
        sampler = tirun_sampler()
        if sampler is None:
            raise RuntimeError("tirun.sampling.sample is not available")
        sampler(pipe, prompts, plan.images_per_prompt, plan.sample_steps, GUIDANCE, 0, resolution)
        return
    pipe(
        prompts,
        num_images_per_prompt=plan.images_per_prompt,
        num_inference_steps=plan.sample_steps,
        guidance_scale=GUIDANCE,
        height=resolution,
        width=resolution,
        generator=torch.Generator().manual_seed(0),
    )


# 5. The workers: one variant per process, one JSON command per line --------------------------


class Channel:
    """A worker's end of the pipe: requests on stdin, answers on the original stdout; library
    prints are moved to stderr so that stdout carries nothing but the answers."""

    def __init__(self):
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)

    def read(self) -> dict | None:
        line = sys.stdin.readline()
        return json.loads(line) if line else None

    def answer(self, message: dict) -> None:
        self.out.write(json.dumps(message) + "\n")


class Clock:
    """Wall and CPU seconds since `start`; CPU time (all threads) is the cross-check that a
    busy machine inflates less than wall time."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start()

    def start(self) -> None:
        synchronize(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict[str, float]:
        synchronize(self.device)
        return {"s": time.perf_counter() - self.wall, "cpu_s": time.process_time() - self.cpu}


class Session:
    """A `common` or `floor` worker: the variant it built and the commands it answers."""

    commands = ("setup", "step", "phases", "stats", "sample", "profile")

    def __init__(self, variant: str, case: Case, images: Path, plan: Plan, channel: Channel):
        self.variant_name = variant
        self.case = case
        self.images = images
        self.plan = plan
        self.device = torch.device(case.device)
        self.variant: Common | Floor | None = None

    def setup(self) -> dict:
        """Build the variant and take its first step: the time to first step."""
        clock = Clock(self.device)
        components = load_components(self.case.model, self.case.resolution)
        variants = {"common": Common, "floor": Floor}
        self.variant = variants[self.variant_name](components, self.case, self.images)
        loss = self.variant.step()
        return {"first_step_s": clock.read()["s"], "loss": loss}

    def step(self) -> dict:
        clock = Clock(self.device)
        loss = self.variant.step()
        return {**clock.read(), "loss": loss}

    def phases(self) -> dict:
        clock = Stopwatch(self.device)
        self.variant.step(clock)
        return {"phases": dict(clock.seconds)}

    def stats(self) -> dict:
        restored = self.variant.other_rows_restored() if isinstance(self.variant, Common) else None
        return {
            "peak_rss_mb": peak_rss_mb(),
            "peak_cuda_mb": peak_cuda_mb(self.device),
            "optimizer_state_bytes": self.variant.optimizer_state_bytes(),
            "restored": restored,
        }

    def sample(self, kind: str) -> dict:
        """One validation grid; both kinds run in the same autocast (an fp32 text encoder
        beside an fp16 UNet needs it, as in the example's validation)."""
        pipe = self.variant.pipeline()
        clock = Clock(self.device)
        with self.variant.autocast():
            sample_grid(pipe, kind, self.plan, self.case.resolution)
        return clock.read()

    def profile(self, kind: str = "step") -> dict:
        """torch.profiler's table of the top costs of one step (or one sampling call)."""
        profiler = start_profiler(self.device)
        if kind == "step":
            self.variant.step()
        else:
            self.sample(kind)
        return {"table": stop_profiler(profiler, self.device)}


class TrainerSession:
    """A `tirun` worker: tirun's own trainer, paused after each of its optimisation steps.

    A global optimizer step hook (torch's public instrumentation API; the trainer is not
    touched) hands control to the coordinator after every step, so the trainer's real loop
    takes its steps in turn with the other variants. An interval runs from the coordinator's
    `step` to the next optimizer step: exactly one loop iteration. The `setup` command runs
    the whole training; the hook answers the commands that arrive meanwhile.
    """

    commands = ("setup",)

    def __init__(self, variant: str, case: Case, images: Path, plan: Plan, channel: Channel):
        self.case = case
        self.images = images
        self.channel = channel
        self.device = torch.device(case.device)
        self.clock = Clock(self.device)
        self.first = True
        self.profiler = None
        self.hook = None

    def setup(self, steps: int, out_dir: str) -> dict:
        """Train for `steps` steps; answers `finish` (the last command) with the metrics."""
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.clock.start()
        self.hook = register_optimizer_step_post_hook(self._after_step)
        try:
            metrics = run_tirun(self.case, self.images, Path(out_dir), steps)
        finally:
            self.hook.remove()
        return {
            "metrics": metrics,
            "peak_rss_mb": peak_rss_mb(),
            "peak_cuda_mb": peak_cuda_mb(self.device),
        }

    def _after_step(self, optimizer, args, kwargs) -> None:
        answer = self.clock.read()
        if self.first:
            answer, self.first = {"first_step_s": answer["s"]}, False
        if self.profiler is not None:
            answer["table"] = stop_profiler(self.profiler, self.device)
            self.profiler = None
        self.channel.answer(answer)
        while (request := self.channel.read()) is not None:
            command = request.pop("op")
            if command == "stats":
                self.channel.answer({"peak_rss_mb": peak_rss_mb()})
                continue
            if command == "profile":
                self.profiler = start_profiler(self.device)
            if command == "finish":
                self.hook.remove()
            elif command not in ("step", "profile"):
                self.channel.answer({"error": f"unknown command {command!r} during training"})
                continue
            self.clock.start()
            return


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_cuda_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def start_profiler(device: torch.device):
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    profiler = profile(activities=activities)
    profiler.start()
    return profiler


def stop_profiler(profiler, device: torch.device, rows: int = 15) -> str:
    """torch.profiler's table of the top costs, by self time on the device that does the work."""
    synchronize(device)
    profiler.stop()
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return profiler.key_averages().table(sort_by=sort, row_limit=rows)


def serve(variant: str, case: Case, images: Path, plan: Plan) -> None:
    """A worker's loop: answer each command until `quit` or the end of stdin."""
    channel = Channel()
    torch.set_num_threads(plan.threads)
    kind = TrainerSession if variant == "tirun" else Session
    session = kind(variant, case, images, plan, channel)
    while (request := channel.read()) is not None:
        command = request.pop("op")
        if command == "quit":
            break
        try:
            if command not in kind.commands:
                raise ValueError(f"unknown command {command!r}")
            answer = getattr(session, command)(**request)
        except Exception:
            answer = {"error": traceback.format_exc()}
        channel.answer(answer)


class WorkerError(RuntimeError):
    pass


class Worker:
    """The coordinator's handle on one worker process."""

    def __init__(self, variant: str, case: Case, images: Path, plan: Plan, log_dir: Path):
        self.variant = variant
        self.log_path = log_dir / f"{case.model}-{case.label.replace(' ', '_')}-{variant}.log"
        env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            OMP_NUM_THREADS=str(plan.threads),
            MKL_NUM_THREADS=str(plan.threads),
        )
        command = [sys.executable, "-m", "experiments.bench", "--worker", variant]
        command += ["--case", json.dumps(asdict(case)), "--plan", json.dumps(asdict(plan))]
        command += ["--images", str(images)]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=REPO,
                env=env,
            )

    def call(self, op: str, **args) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"{self.variant} worker died during {op!r}:\n{self.log_tail()}")
        answer = json.loads(line)
        if "error" in answer:
            raise WorkerError(f"{self.variant} worker failed on {op!r}:\n{answer['error']}")
        return answer

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# 6. The coordinator ---------------------------------------------------------------------------


@dataclass
class VariantResult:
    variant: str
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    first_step_s: float | None = None
    peak_rss_mb: float | None = None
    peak_cuda_mb: float | None = None
    optimizer_state_bytes: int | None = None
    phases: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def step_s(self) -> float | None:
        return median_or_none(self.times)

    @property
    def step_cpu_s(self) -> float | None:
        return median_or_none(self.cpu_times)


@dataclass
class CaseResult:
    case: Case
    variants: dict[str, VariantResult]
    sampling: dict[str, list[float]] = field(default_factory=dict)
    sampling_note: str = ""
    restored: bool | None = None
    profiles: dict[str, str] = field(default_factory=dict)

    def ratio(self, top: str, bottom: str, cpu: bool = False) -> float | None:
        a, b = self.variants[top], self.variants[bottom]
        a, b = (a.step_cpu_s, b.step_cpu_s) if cpu else (a.step_s, b.step_s)
        return a / b if a and b else None

    @property
    def floor_ratio(self) -> float | None:
        return self.ratio("tirun", "floor")

    @property
    def speedup_vs_common(self) -> float | None:
        return self.ratio("common", "tirun")

    @property
    def sampling_ratio(self) -> float | None:
        plain, ours = self.sampling.get("plain"), self.sampling.get("tirun")
        return statistics.median(plain) / statistics.median(ours) if plain and ours else None


def alternate(workers: list[Worker], rounds: int, op: str = "step") -> dict[str, list[dict]]:
    """Each worker's answers to `rounds` calls, in ABBA order: no variant always goes first,
    so slow drift of the machine's load cancels."""
    answers: dict[str, list[dict]] = defaultdict(list)
    for index in range(rounds):
        for worker in workers if index % 2 == 0 else workers[::-1]:
            answers[worker.variant].append(worker.call(op))
    return answers


def record_times(results: dict[str, VariantResult], answers: dict[str, list[dict]]) -> None:
    for variant, steps in answers.items():
        if any("s" not in answer for answer in steps):
            raise WorkerError(f"{variant} stopped before its last step: {steps[-1]}")
        results[variant].times += [answer["s"] for answer in steps]
        results[variant].cpu_times += [answer["cpu_s"] for answer in steps]


def record_phases(results: dict[str, VariantResult], answers: dict[str, list[dict]]) -> None:
    for variant, steps in answers.items():
        names = steps[0]["phases"]
        results[variant].phases = {
            n: statistics.median(a["phases"][n] for a in steps) for n in names
        }


def bench_case(case: Case, plan: Plan, work: Path, log: Callable[[str], None]) -> CaseResult:
    """Every variant of one case, side by side, step by step."""
    images = write_images(work / "images", count=4, size=case.resolution)
    results = {name: VariantResult(name) for name in ("tirun", "common", "floor")}
    outcome = CaseResult(case, results)
    with ExitStack() as stack:
        workers = [
            stack.enter_context(Worker(name, case, images, plan, work))
            for name in (["tirun"] if trainer_available(results["tirun"], log) else [])
            + ["common", "floor"]
        ]
        trainer_steps = plan.warmup + plan.timed + (1 if plan.profile else 0)
        # 1. build one at a time, so no time to first step pays for another's build
        for worker in workers:
            args = {}
            if worker.variant == "tirun":
                args = {"steps": trainer_steps, "out_dir": str(work / "tirun-run")}
            first = worker.call("setup", **args)["first_step_s"]
            results[worker.variant].first_step_s = first
            log(f"  {worker.variant}: first step after {first:.1f} s")
        # 2. warm-up, then the timed steps, every variant in turn
        alternate(workers, plan.warmup - 1)
        record_times(results, alternate(workers, plan.timed))
        for name, result in results.items():
            log(f"  {name}: {fmt(result.step_s, 3)} s/step, {fmt(result.step_cpu_s, 3)} CPU s/step")
        # 3. one profiled step each; the trainer then finishes and reports its own figures
        tables = {w.variant: w.call("profile")["table"] for w in workers} if plan.profile else {}
        if workers[0].variant == "tirun":
            finish_trainer(workers.pop(0), results["tirun"])
        # 4. where the time goes, then memory (before sampling can raise the high-water mark)
        record_phases(results, alternate(workers, plan.phase_steps, op="phases"))
        for worker in workers:
            record_stats(worker.call("stats"), results[worker.variant], outcome)
        # 5. the validation grid: tirun's sampler against one plain pipeline call
        common = workers[0]
        bench_sampling(common, plan, outcome, log)
        # 6. where a target is missed, what costs the time
        for name in missed(outcome) if plan.profile else []:
            if name.startswith("sampling:"):
                tables[name] = common.call("profile", kind=name.split(":")[1])["table"]
            if name in tables:
                outcome.profiles[name] = tables[name]
    return outcome


def trainer_available(result: VariantResult, log) -> bool:
    if (REPO / "tirun" / "train.py").is_file():
        return True
    result.note = "tirun.train not written yet"
    log(f"  tirun: skipped ({result.note})")
    return False


def finish_trainer(worker: Worker, result: VariantResult) -> None:
    """Let the trainer end its run and keep what it reports about memory.

    Its own `timing` is not used: the pauses between steps (while the other variants step)
    fall inside the steps it times.
    """
    answer = worker.call("finish")
    worker.close()
    metrics = answer["metrics"]
    result.optimizer_state_bytes = metrics.get("optimizer_state_bytes")
    result.peak_rss_mb, result.peak_cuda_mb = answer["peak_rss_mb"], answer["peak_cuda_mb"]
    result.note = f"real trainer, {metrics.get('steps')} steps, status {metrics.get('status')}"


def record_stats(stats: dict, result: VariantResult, outcome: CaseResult) -> None:
    result.peak_rss_mb, result.peak_cuda_mb = stats["peak_rss_mb"], stats["peak_cuda_mb"]
    result.optimizer_state_bytes = stats["optimizer_state_bytes"]
    if stats["restored"] is not None:
        outcome.restored = stats["restored"]


def bench_sampling(worker: Worker, plan: Plan, outcome: CaseResult, log) -> None:
    if tirun_sampler() is None:
        outcome.sampling_note = "tirun.sampling.sample not available"
    kinds = ["plain"] + ([] if outcome.sampling_note else ["tirun"])
    worker.call("sample", kind="plain")  # warm-up
    for index in range(plan.sample_repeats):
        for kind in kinds if index % 2 == 0 else kinds[::-1]:
            outcome.sampling.setdefault(kind, []).append(worker.call("sample", kind=kind)["s"])
    log(
        f"  sampling: plain {fmt(median_or_none(outcome.sampling.get('plain')), 2)} s, "
        f"tirun {fmt(median_or_none(outcome.sampling.get('tirun')), 2)} s"
    )


def missed(outcome: CaseResult) -> list[str]:
    """The variants behind each missed (or unmeasured) target, for their profiles."""
    wanted = []
    if not meets(outcome.floor_ratio, "floor_ratio"):
        wanted += ["tirun", "floor"]
    if not meets(outcome.speedup_vs_common, "speedup_vs_common"):
        wanted += ["common", "tirun"]
    if outcome.sampling.get("tirun") and not meets(outcome.sampling_ratio, "sampling_ratio"):
        wanted += ["sampling:plain", "sampling:tirun"]
    return list(dict.fromkeys(wanted))


def meets(value: float | None, target: str) -> bool:
    if value is None:
        return False
    limit = TARGETS[target]
    return value <= limit if target == "floor_ratio" else value >= limit


def median_or_none(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


# 7. The report --------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    import diffusers
    import transformers

    info = {
        "cpu": cpu,
        "cores": str(
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


PHASES = ("data", "vae_encode", "text_encoder", "unet", "optimizer", "restore", "other")


def report(
    outcomes: list[CaseResult], info: dict[str, str], plan: Plan, loads: tuple, notes: list[str]
) -> str:
    """The Markdown report: machine and method, then one table per question."""
    sections = [
        header(info, plan, loads),
        variant_table(outcomes),
        ratio_table(outcomes),
        phase_table(outcomes),
        sampling_table(outcomes, plan),
        *(
            f"## Profile: {o.case.model} {o.case.label} {name}\n\n```\n{table.rstrip()}\n```"
            for o in outcomes
            for name, table in o.profiles.items()
        ),
    ]
    if notes:
        sections.append("## Notes\n\n" + "\n".join(f"- {note}" for note in notes))
    return "\n\n".join(sections) + "\n"


def header(info: dict[str, str], plan: Plan, loads: tuple) -> str:
    machine_line = ", ".join(f"{k} {v}" for k, v in info.items())
    return (
        "# tirun training-step benchmark\n\n"
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        f"`python -m experiments.bench {' '.join(sys.argv[1:])}`.\n\n"
        f"Machine: {machine_line}; {plan.threads} torch threads; load average "
        f"{loads[0]:.2f} before, {loads[1]:.2f} after.\n\n"
        f"Method: each variant in a worker process of its own; after {plan.warmup} warm-up "
        f"steps the three take {plan.timed} timed steps in turn (ABBA order, so drift in the "
        "machine's load hits all alike); medians. `tirun` is its real trainer, paused after "
        "each optimizer step by a global step hook: its interval is one whole loop iteration. "
        "CPU s is the process's CPU time (all threads), less inflated than wall time on a "
        "busy machine. Peak memory is each worker's `ru_maxrss` (models included), or CUDA's "
        "peak allocation on a GPU. Time to first step counts from model load (tirun: from "
        "composing its config), latent caching included. Random weights: timing does not "
        "depend on them."
    )


def variant_table(outcomes: list[CaseResult]) -> str:
    lines = [
        "| model | case | variant | s/step | CPU s/step | steps/s | images/s | peak RSS MB "
        "| peak CUDA MB | optimizer state bytes | first step s | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for outcome in outcomes:
        for r in outcome.variants.values():
            step = r.step_s
            state = r.optimizer_state_bytes if r.optimizer_state_bytes is not None else "n/a"
            lines.append(
                f"| {outcome.case.model} | {outcome.case.label} | {r.variant} | {fmt(step, 3)} "
                f"| {fmt(r.step_cpu_s, 3)} | {fmt(1 / step if step else None, 3)} "
                f"| {fmt(outcome.case.batch / step if step else None, 3)} "
                f"| {fmt(r.peak_rss_mb, 0)} | {fmt(r.peak_cuda_mb, 0)} | {state} "
                f"| {fmt(r.first_step_s, 1)} | {r.note} |"
            )
    return "\n".join(lines)


def ratio_table(outcomes: list[CaseResult]) -> str:
    lines = [
        "## Ratios and targets (wall time; CPU time in brackets)",
        "",
        "| model | case | tirun/floor (≤ 1.05) | common/tirun (≥ 1.3) | common/floor "
        "| sampling plain/tirun (≥ 0.95) | other rows restored (common) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.case.model} | {o.case.label} "
            f"| {mark(o.floor_ratio, 'floor_ratio')} ({fmt(o.ratio('tirun', 'floor', cpu=True), 3)}) "
            f"| {mark(o.speedup_vs_common, 'speedup_vs_common')} "
            f"({fmt(o.ratio('common', 'tirun', cpu=True), 3)}) "
            f"| {fmt(o.ratio('common', 'floor'), 3)} ({fmt(o.ratio('common', 'floor', cpu=True), 3)}) "
            f"| {mark(o.sampling_ratio, 'sampling_ratio')} | {o.restored} |"
        )
    return "\n".join(lines)


def phase_table(outcomes: list[CaseResult]) -> str:
    lines = [
        "## Where a step's time goes (median seconds of instrumented steps; share of their sum)",
        "",
        "| model | case | variant | " + " | ".join(PHASES) + " |",
        "|---|---|---|" + "---:|" * len(PHASES),
    ]
    for outcome in outcomes:
        for r in outcome.variants.values():
            if not r.phases:
                continue
            total = sum(r.phases.values())
            cells = [
                f"{r.phases[p]:.3f} ({100 * r.phases[p] / total:.0f}%)" if p in r.phases else "–"
                for p in PHASES
            ]
            lines.append(
                f"| {outcome.case.model} | {outcome.case.label} | {r.variant} | {' | '.join(cells)} |"
            )
    lines += [
        "",
        "Instrumented steps split the backward in two (UNet, then the text encoder from the "
        "gradient of its output): the same operations, timed apart. `optimizer` is AdamW's step "
        "and zero_grad; `restore` the example's copy of every other row.",
    ]
    return "\n".join(lines)


def sampling_table(outcomes: list[CaseResult], plan: Plan) -> str:
    lines = [
        f"## Sampling a validation grid ({len(PROMPTS)} prompts × {plan.images_per_prompt}, "
        f"DDIM {plan.sample_steps} steps, guidance {GUIDANCE})",
        "",
        "`tirun.sampling.sample` (the whole grid in one pipeline call, fixed per-image noise) against "
        "one plain pipeline call for the whole grid; same pipeline, scheduler and steps; medians.",
        "",
        "| model | case | plain pipeline call s | tirun sampler s | note |",
        "|---|---|---:|---:|---|",
    ]
    for o in outcomes:
        plain, ours = (
            median_or_none(o.sampling.get("plain")),
            median_or_none(o.sampling.get("tirun")),
        )
        lines.append(
            f"| {o.case.model} | {o.case.label} | {fmt(plain)} | {fmt(ours)} | {o.sampling_note} |"
        )
    return "\n".join(lines)


def mark(value: float | None, target: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} {'✓' if meets(value, target) else '✗ missed'}"


def summary_line(outcomes: list[CaseResult]) -> str:
    """`speedup_vs_common=X floor_ratio=Y` for the SD 1.5-shaped case (the first one run)."""
    sd15 = [o for o in outcomes if o.case.model == "sd15"]
    if not sd15:
        return "speedup_vs_common=nan floor_ratio=nan"
    first = sd15[0]
    speedup = first.speedup_vs_common
    ratio = first.floor_ratio
    return f"speedup_vs_common={fmt(speedup, 3) if speedup else 'nan'} floor_ratio={fmt(ratio, 3) if ratio else 'nan'}"


def cases_for(models: list[str], device: str, quick: bool) -> tuple[list[Case], list[str]]:
    """CPU: 256 px (toy at its own size), batch 1, fp32, sdpa. GPU: 512 px, batch 1 and 4,
    fp16 and bf16, sdpa and xformers."""
    cases, notes = [], []
    for model in models:
        if model == "toy" and not toy_available():
            notes.append(f"toy model skipped: {TOY_MODEL.relative_to(REPO)} does not exist yet")
            continue
        if model == "sd15":
            size = 512 if device != "cpu" else 128 if quick else 256
        else:
            size = native_resolution(model)
        if device == "cpu":
            cases.append(Case(model, device, size, 1))
            continue
        for batch in (1, 4):
            for precision in ("fp16", "bf16"):
                for attention in ("sdpa", "xformers"):
                    cases.append(Case(model, device, size, batch, precision, attention))
    return cases, notes


def plan_for(device: str, quick: bool) -> Plan:
    """CPU steps cost seconds, so few of them; a GPU affords many, and the validation grid
    tirun draws by default (4 images a prompt, 25 steps)."""
    if quick:
        return Plan(
            warmup=1, timed=2, phase_steps=1, sample_steps=2, sample_repeats=1, profile=False
        )
    if device == "cpu":
        return Plan()
    return Plan(
        warmup=5, timed=30, phase_steps=5, sample_steps=25, images_per_prompt=4, sample_repeats=3
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="short smoke run: 128 px, few steps")
    parser.add_argument(
        "--models", default="sd15,toy", help="comma-separated: sd15, toy, or an arch folder"
    )
    parser.add_argument("--out", default=None, help="Markdown report path")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        serve(
            args.worker,
            Case(**json.loads(args.case)),
            Path(args.images),
            Plan(**json.loads(args.plan)),
        )
        return

    plan = plan_for(args.device, args.quick)
    out = Path(args.out) if args.out else RESULTS / ("bench_quick.md" if args.quick else "bench.md")
    cases, notes = cases_for(args.models.split(","), args.device, args.quick)
    load_before = os.getloadavg()[0]
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="tirun-bench-") as tmp:
        for index, case in enumerate(cases):
            print(f"[{time.strftime('%H:%M:%S')}] {case.model} {case.label}", flush=True)
            work = Path(tmp) / str(index)
            work.mkdir()
            try:
                outcomes.append(bench_case(case, plan, work, lambda m: print(m, flush=True)))
            except WorkerError as error:
                notes.append(
                    f"{case.model} {case.label} failed: {str(error).strip().splitlines()[-1][:300]}"
                )
                print(error, flush=True)
    text = report(outcomes, machine(), plan, (load_before, os.getloadavg()[0]), notes)
    line = summary_line(outcomes)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n" + line + "\n")
    print(text)
    print(line)


if __name__ == "__main__":
    main()
