"""The two variants tirun is measured against, on the same model, case and images.

- `Common`: the loop of the diffusers textual_inversion example, re-implemented step for step.
- `Floor`: one forward and backward of the frozen text encoder and UNet on cached latents, the
  gradient reaching only the new vector: what the method itself costs.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from experiments.bench.cases import INITIALIZER, LR, TOKEN, WEIGHT_DECAY, Case
from experiments.bench.models import pad_tokenizer, use_attention
from experiments.bench.steps import (
    Stopwatch,
    grad_scaler,
    optimizer_step,
    state_bytes,
    unet_and_backward,
)

# 1. What both variants set up alike -----------------------------------------------------------


def _table_rows(components) -> int:
    return components.text_encoders[0].get_input_embeddings().num_embeddings


def add_placeholder(components) -> tuple:
    """The tokenizer padded to the token table, with the placeholder added; returns it, the
    placeholder's id and the initializer's."""
    tokenizer = pad_tokenizer(components.tokenizers[0], _table_rows(components))
    tokenizer.add_tokens([TOKEN])
    new_id = tokenizer.convert_tokens_to_ids(TOKEN)
    init_id = tokenizer.encode(INITIALIZER, add_special_tokens=False)[0]
    return tokenizer, new_id, init_id


def freeze_vae_and_unet(components, case: Case) -> None:
    """The VAE and the UNet frozen, in eval mode (as `from_pretrained` leaves them), on the
    case's device in its weight dtype, with its attention."""
    for module in (components.vae, components.unet):
        module.requires_grad_(False).eval().to(case.device, dtype=case.weight_dtype)
    use_attention(components.unet, case.attention)


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
        self.tokenizer, new_id, init_id = add_placeholder(components)
        self.placeholder_ids = [new_id]
        self.text_encoder = components.text_encoders[0]
        self.vae, self.unet, self.noise_scheduler = (
            components.vae,
            components.unet,
            components.scheduler,
        )
        # 1. the placeholder added: grow the table to the tokenizer, start it at the initializer
        self.text_encoder.resize_token_embeddings(len(self.tokenizer))
        table = self.text_encoder.get_input_embeddings().weight.data
        with torch.no_grad():
            for token_id in self.placeholder_ids:
                table[token_id] = table[init_id].clone()
        # 2. freeze all but the token table (in eval mode, as `from_pretrained` leaves them);
        #    the frozen VAE and UNet in the weight dtype
        freeze_vae_and_unet(components, case)
        self.text_encoder.encoder.requires_grad_(False)
        self.text_encoder.final_layer_norm.requires_grad_(False)
        self.text_encoder.embeddings.position_embedding.requires_grad_(False)
        # 3. the whole table under AdamW; the encoder in fp32
        self.optimizer = torch.optim.AdamW(
            self.text_encoder.get_input_embeddings().parameters(),
            lr=LR,
            betas=(0.9, 0.999),
            weight_decay=WEIGHT_DECAY,
            eps=1e-8,
        )
        self.scaler = grad_scaler(case)
        self.text_encoder.to(self.device)
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
        self.tokenizer, new_id, init_id = add_placeholder(components)
        self.text_encoder, self.unet = components.text_encoders[0], components.unet
        self.noise_scheduler = components.scheduler
        freeze_vae_and_unet(components, case)
        self.text_encoder.requires_grad_(False).eval().to(self.device, dtype=case.weight_dtype)
        # 1. the new vector, a parameter of its own, read through the frozen table
        table = self.text_encoder.get_input_embeddings()
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
