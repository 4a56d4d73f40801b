"""The common approach, as ToyBench's peer recipe (`train.loop=common`): the diffusers
textual_inversion example's loop, step for step, on the same model, images, templates, steps,
batch and lr as tirun's trainer, so the peer's *quality* is measured beside its speed (`make
bench` times the same loop).

What differs from `tirun.train`: every batch is read, resized, flipped and encoded by the VAE
anew (`latent_dist.sample()`), the whole token table is trained under AdamW and every other row
is copied back after each step, the text encoder is in train mode, and sentences and flips come
from Python's and numpy's generators as in the example.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from tirun import embeddings
from tirun.embeddings import LearnedWord
from tirun.files import atomic_write, write_json
from tirun.models import Components
from tirun.outputs import export_path, snapshot_path


def _pixels(image: Image.Image, size: int, flip: bool) -> torch.Tensor:
    image = image.resize((size, size), resample=Image.Resampling.BICUBIC)
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    array = (np.array(image).astype(np.uint8) / 127.5 - 1.0).astype(np.float32)
    return torch.from_numpy(array).permute(2, 0, 1)


def train(cfg: DictConfig, run_dir: Path, keep_tracking: bool = False) -> tuple[dict, dict]:
    """The example's loop on ``cfg``; writes the word, its snapshots and `metrics.json` as
    `tirun.train.train` does, and returns (metrics, {})."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    tc = cfg.train
    torch.manual_seed(tc.seed)
    random.seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    components: Components = instantiate(cfg.model)
    components.freeze()
    tokenizer, encoder = components.tokenizers[0], components.text_encoders[0]
    images = instantiate(cfg.dataset.images)
    templates = instantiate(cfg.template)
    token = cfg.word.token
    # 1. the placeholder added: the table grown to the tokenizer, its row the initializer's
    tokenizer.add_tokens([token])
    new_id = tokenizer.convert_tokens_to_ids(token)
    init_id = tokenizer.encode(cfg.word.initializer, add_special_tokens=False)[0]
    encoder.resize_token_embeddings(len(tokenizer))
    table = encoder.get_input_embeddings()
    with torch.no_grad():
        table.weight[new_id] = table.weight[init_id].clone()
    table.requires_grad_(True)
    original = table.weight.data.clone()
    keep = torch.ones(len(tokenizer), dtype=torch.bool)
    keep[new_id] = False
    # 2. the whole table under AdamW (the example's defaults), the encoder in train mode
    optimizer = torch.optim.AdamW(
        table.parameters(), lr=cfg.optimizer.lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8
    )
    encoder.train()
    atomic_write(
        run_dir / "config.yaml", lambda t: t.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    )

    def learned(step: int) -> LearnedWord:
        return LearnedWord(
            token, [table.weight[new_id : new_id + 1].detach().clone()], step, components.name
        )

    snapshots, losses = [], []
    order = [i for _ in range(cfg.dataset.repeats) for i in range(len(images))]
    queue: list[int] = []
    for step in range(1, tc.max_steps + 1):
        # 3. a batch read and encoded anew, a template per sample
        if len(queue) < tc.batch_size:
            queue += random.sample(order, len(order))
        picked, queue = queue[: tc.batch_size], queue[tc.batch_size :]
        pixels = torch.stack(
            [
                _pixels(images[i], cfg.dataset.resolution, rng.random() < cfg.dataset.flip_p)
                for i in picked
            ]
        )
        sentences = [random.choice(templates).format(token) for _ in picked]
        ids = tokenizer(sentences, padding="max_length", truncation=True,
                        max_length=tokenizer.model_max_length, return_tensors="pt").input_ids  # fmt: skip
        with torch.no_grad():
            latents = (
                components.vae.encode(pixels).latent_dist.sample()
                * components.vae.config.scaling_factor
            )
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0, components.scheduler.config.num_train_timesteps, (len(picked),)
        )
        noisy = components.scheduler.add_noise(latents, noise, timesteps)
        pred = components.unet(noisy, timesteps, encoder(ids)[0]).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():  # 4. every row but the placeholder's copied back
            table.weight[keep] = original[keep]
        losses.append(loss.item())
        if tc.snapshot_every and step % tc.snapshot_every == 0:
            seconds = time.perf_counter() - started
            path = embeddings.save(learned(step), snapshot_path(run_dir, step), "diffusers")
            snapshots.append({"step": step, "seconds": seconds, "file": str(path[0])})
    files = [
        str(p)
        for p in embeddings.save(
            learned(tc.max_steps), export_path(run_dir, "diffusers", learned(0)), "diffusers"
        )
    ]
    metrics = {
        "status": "finished",
        "loop": "common",
        "steps": tc.max_steps,
        "first_loss": losses[0],
        "final_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
        "wall_time_s": time.perf_counter() - started,
        "files": files,
        "snapshots": snapshots,
    }
    write_json(run_dir / "metrics.json", metrics)
    return metrics, {}
