"""The two variants tirun is measured against, on the same model, case and images.

- `common_loop`: the loop of the diffusers textual_inversion example, as ToyBench runs it for
  its peer recipe (`train.loop=common`): `tirun.toybench.common.ExampleLoop`, the one copy.
- `Floor`: one forward and backward of the frozen text encoder and UNet on cached latents, the
  gradient reaching only the new vector: what the method itself costs.
"""

from __future__ import annotations

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
from tirun.data import load_image_folder
from tirun.templates import OBJECT_TEMPLATES
from tirun.toybench.common import ExampleLoop, ExampleSettings

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


# 2. The common approach: the diffusers example's loop, as ToyBench runs it --------------------


def common_loop(components, case: Case, images: Path) -> ExampleLoop:
    """`tirun.toybench.common.ExampleLoop`, the loop ToyBench scores as its peer, on this case:
    the tokenizer padded to the token table (the whole table trains), the object templates,
    batch, precision and attention as the other variants have them, and AdamW at the
    benchmark's lr and weight decay."""
    components.tokenizers[0] = pad_tokenizer(components.tokenizers[0], _table_rows(components))
    settings = ExampleSettings(
        token=TOKEN,
        initializer=INITIALIZER,
        templates=OBJECT_TEMPLATES,
        resolution=case.resolution,
        batch_size=case.batch,
        lr=LR,
        mixed_precision={"fp32": "no"}.get(case.precision, case.precision),
        attention=case.attention,
        device=case.device,
    )
    return ExampleLoop(
        components,
        load_image_folder(images),
        settings,
        lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY),
    )


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
