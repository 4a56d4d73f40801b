"""Pretrain the toy latent diffusion model and its oracle on the toy world.

    python -m tirun.toyworld.pretrain --stage all --out tirun/assets/toy

Stages, each reading what the earlier ones wrote under ``--out``:
  oracle    attribute classifier → oracle/
  vae       AutoencoderKL alone (L1 + 0.5·MSE + 1e-6·KL) → model/vae/, scaling factor = 1/std
  denoiser  UNet + text encoder together on cached latents → model/ (a diffusers folder), its
            captions naming the unnamed values by words that are then retired: the shipped
            tokenizer lacks them and their embedding rows go to model/retired_words.safetensors
Several stages may be named (``--stage vae denoiser``). Everything is seeded: the same command
writes the same weights on the same machine as long as the step budgets, not the wall-clock caps
(``--*-minutes``, there for a shared machine), end the stages; the log says which did.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionPipeline
from diffusers.training_utils import EMAModel
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

from tirun.loss import min_snr_weights
from tirun.models import build_part
from tirun.toyworld import oracle as oracle_lib
from tirun.toyworld.budget import Budget
from tirun.toyworld.render import Attributes, render_array
from tirun.toyworld.tokenizer import template_words, write_tokenizer
from tirun.toyworld.world import (
    pretraining_caption,
    pretraining_words,
    retired_words,
    sample_pretraining,
    toy_words,
)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "assets" / "toy"
ARCH = "toy"  # tirun/assets/arch/toy: the shapes, and why (its README)
MAX_LENGTH = 77  # tokens per caption, as CLIP's
RETIRED_FILE = "retired_words.safetensors"  # in model/: {word: [dim]}, the answer kept aside


class Log:
    """Print and append to ``pretrain_log.txt`` (the committed record of the run)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()

    def __call__(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} +{time.time() - self.t0:6.0f}s] {message}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


@lru_cache(maxsize=2)  # the vae and denoiser stages of one run share the renders
def pretraining_pool(
    count: int, seed: int
) -> tuple[torch.Tensor, list[Attributes], list[str | None]]:
    """``count`` pretraining renders (held-out combinations excluded) with attributes and nouns."""
    rng = np.random.default_rng(seed)
    drawn = [sample_pretraining(rng) for _ in range(count)]
    seeds = rng.integers(0, 2**31, count)
    arrays = np.stack([render_array(a, int(s)) for (a, _), s in zip(drawn, seeds, strict=True)])
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
    return images, [a for a, _ in drawn], [n for _, n in drawn]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / F.mse_loss(a.clamp(0, 1), b)))


def stage_oracle(out: Path, args: argparse.Namespace, log: Log) -> None:
    oracle = oracle_lib.train(
        steps=args.oracle_steps, minutes=args.oracle_minutes, seed=args.seed + 1, log=log
    )
    oracle.save(out / "oracle")
    images, truth = oracle_lib.render_set(2000, seed=args.seed + 99)
    predictions = oracle.predict(images)
    acc = oracle_lib.accuracy(predictions, truth)
    log(
        "oracle accuracy on 2000 fresh renders: "
        + ", ".join(f"{k} {v:.4f}" for k, v in acc.items())
    )
    for key, classes in oracle_lib.class_accuracy(predictions, truth).items():
        log(f"oracle {key} by class: " + ", ".join(f"{c} {v:.3f}" for c, v in classes.items()))


def stage_vae(out: Path, args: argparse.Namespace, log: Log) -> None:
    # 1. data: a fixed pool of pretraining renders (flipped at random)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    images, _, _ = pretraining_pool(args.pool, args.seed)
    log(f"vae: pool of {len(images)} renders")
    vae = build_part(ARCH, "vae")
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    # 2. loop
    vae.train()
    t0 = time.time()
    budget = Budget(args.vae_steps, args.vae_minutes)
    for step in range(1, args.vae_steps + 1):
        for group in opt.param_groups:
            group["lr"] = budget.cosine(step, 1e-3, warmup=100, floor=0.05)
        idx = torch.randint(0, len(images), (args.vae_batch,), generator=gen)
        x = images[idx]
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        posterior = vae.encode(x * 2 - 1).latent_dist
        recon = (vae.decode(posterior.sample(gen)).sample + 1) / 2
        l1, mse, kl = (recon - x).abs().mean(), F.mse_loss(recon, x), posterior.kl().mean()
        loss = l1 + 0.5 * mse + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.vae_steps:
            log(
                f"vae step {step}/{args.vae_steps} l1 {l1.item():.4f} mse {mse.item():.5f} kl {kl.item():.1f} ({time.time() - t0:.0f}s)"
            )
        if budget.over():
            log(
                f"vae: stopped at step {step} of {args.vae_steps}: --vae-minutes {args.vae_minutes} reached"
            )
            break
    # 3. evaluate on fresh renders; the latent scale makes latents unit-variance for the UNet
    vae.eval()
    fresh, _, _ = pretraining_pool(512, args.seed + 7)
    with torch.no_grad():
        latents = vae.encode(fresh * 2 - 1).latent_dist.mean
        recon = ((vae.decode(latents).sample + 1) / 2).clamp(0, 1)
    std = float(latents.std())
    vae.register_to_config(scaling_factor=1.0 / std)
    log(
        f"vae eval on 512 fresh renders: l1 {(recon - fresh).abs().mean():.4f} psnr {psnr(recon, fresh):.2f} dB; latent std {std:.3f} -> scaling_factor {1 / std:.4f}"
    )
    vae.save_pretrained(out / "model" / "vae", safe_serialization=True)


def retire_words(
    text_encoder: CLIPTextModel, full: CLIPTokenizer, shipped: CLIPTokenizer, words: list[str]
) -> tuple[CLIPTextModel, dict[str, torch.Tensor]]:
    """The text encoder as ``shipped`` reads it (each of its tokens keeps its trained row; a BPE
    piece only ``shipped`` has, never a whole word, gets the mean row), and the rows of
    ``words``, which ``full`` has as whole words and ``shipped`` lacks."""
    config = text_encoder.config.to_dict()
    config.update(
        vocab_size=len(shipped),
        bos_token_id=shipped.bos_token_id,
        eos_token_id=shipped.eos_token_id,
        pad_token_id=shipped.pad_token_id,
    )
    with torch.random.fork_rng():  # a fresh model's random init must not move training's seed
        encoder = CLIPTextModel(type(text_encoder.config)(**config))
    table = text_encoder.get_input_embeddings().weight.detach()
    state = {k: v for k, v in text_encoder.state_dict().items() if "token_embedding" not in k}
    missing, _ = encoder.load_state_dict(state, strict=False)
    full_vocab = full.get_vocab()
    rows = table.mean(0).repeat(len(shipped), 1)
    for token, index in shipped.get_vocab().items():
        if token in full_vocab:
            rows[index] = table[full_vocab[token]]
    encoder.get_input_embeddings().weight.data.copy_(rows)
    if any("token_embedding" not in k for k in missing):
        raise RuntimeError(f"retire_words left {missing} untrained")
    retired = {}
    for word in words:
        ids = full(word, add_special_tokens=False).input_ids
        if len(ids) != 1 or len(shipped(word, add_special_tokens=False).input_ids) == 1:
            raise ValueError(
                f"{word!r} must be one token of the full tokenizer and none of the shipped"
            )
        retired[word] = table[ids[0]].clone()
    return encoder.eval(), retired


def stage_denoiser(out: Path, args: argparse.Namespace, log: Log) -> None:
    # 1. frozen VAE, new tokenizers (pretraining's names the unnamed values, the shipped one
    # lacks those words), cached latents
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    vae = AutoencoderKL.from_pretrained(out / "model" / "vae").eval()
    shipped = CLIPTokenizer.from_pretrained(
        write_tokenizer(template_words() + toy_words(), out / "model" / "tokenizer", MAX_LENGTH)
    )
    full_dir = Path(tempfile.mkdtemp(prefix="tirun-pretraining-tokenizer-"))
    tokenizer = CLIPTokenizer.from_pretrained(
        write_tokenizer(template_words() + pretraining_words(), full_dir, MAX_LENGTH)
    )
    images, attrs, nouns = pretraining_pool(args.pool, args.seed)
    with torch.no_grad():
        latents = (
            torch.cat(
                [
                    vae.encode(images[i : i + 500] * 2 - 1).latent_dist.mean
                    for i in range(0, len(images), 500)
                ]
            )
            * vae.config.scaling_factor
        )
    log(
        f"denoiser: cached {tuple(latents.shape)} latents, std {latents.std():.3f}; vocab "
        f"{len(tokenizer)} in pretraining, {len(shipped)} shipped (retired: {retired_words()})"
    )
    # 2. models
    text_encoder = build_part(ARCH, "text_encoder", tokenizer)
    unet, scheduler = (
        build_part(ARCH, "unet", widths=args.unet_widths),
        build_part(ARCH, "scheduler"),
    )
    params = list(unet.parameters()) + list(text_encoder.parameters())
    log(
        f"unet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M, text encoder {sum(p.numel() for p in text_encoder.parameters()) / 1e6:.2f} M"
    )
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    ema = EMAModel(params, decay=args.ema_decay)  # the saved weights: smoother samples

    def save() -> None:
        ema.store(params)
        ema.copy_to(params)
        encoder, retired = retire_words(text_encoder, tokenizer, shipped, retired_words())
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=encoder, tokenizer=shipped, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
        pipe.save_pretrained(out / "model", safe_serialization=True)
        save_file(retired, str(out / "model" / RETIRED_FILE))
        # the shipped encoder reads a caption without retired words as pretraining's did
        probe = "a painting of a tiny red star on grass in warm light in the style of mosaic"
        with torch.no_grad():
            ref = text_encoder.eval()(tokenizer([probe], return_tensors="pt").input_ids)[0]
            got = encoder(shipped([probe], return_tensors="pt").input_ids)[0]
        text_encoder.train()
        log(f"saved: shipped encoder matches pretraining's to {(ref - got).abs().max():.1e}")
        ema.restore(params)

    # 3. loop: fresh captions every step, so attribute words are dropped independently
    unet.train()
    text_encoder.train()
    t0, running = time.time(), 0.0
    budget = Budget(args.denoiser_steps, args.denoiser_minutes)
    for step in range(1, args.denoiser_steps + 1):
        idx = torch.randint(0, len(latents), (args.batch,), generator=gen)
        captions = [
            pretraining_caption(attrs[i], nouns[i], rng, args.caption_pair_p, args.caption_empty_p)
            for i in idx.tolist()
        ]
        ids = tokenizer(
            captions,
            padding="max_length",
            max_length=MAX_LENGTH,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        lr = budget.cosine(step, args.lr, warmup=200)
        for group in opt.param_groups:
            group["lr"] = lr
        z0 = latents[idx]
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(z0),), generator=gen)
        pred = unet(scheduler.add_noise(z0, noise, t), t, text_encoder(ids)[0]).sample
        if args.min_snr_gamma:
            error = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
            loss = (error * min_snr_weights(scheduler, t, args.min_snr_gamma)).mean()
        else:
            loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.step(params)
        running += loss.item()
        if step % 100 == 0:
            log(
                f"denoiser step {step}/{args.denoiser_steps} loss {running / 100:.4f} lr {lr:.2e} ({time.time() - t0:.0f}s)"
            )
            running = 0.0
        if step % 1000 == 0:
            save()
        if budget.over():
            log(
                f"denoiser: stopped at step {step} of {args.denoiser_steps}: --denoiser-minutes {args.denoiser_minutes} reached"
            )
            break
    save()
    log(f"denoiser: saved {out / 'model'}")


STAGES: dict[str, Callable[[Path, argparse.Namespace, Log], None]] = {
    "oracle": stage_oracle,
    "vae": stage_vae,
    "denoiser": stage_denoiser,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stage", choices=[*STAGES, "all"], nargs="+", default=["all"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=20_000, help="pretraining renders per stage")
    parser.add_argument("--oracle-steps", type=int, default=4000)
    parser.add_argument("--oracle-minutes", type=float, default=12.0, help="oracle wall-clock cap")
    parser.add_argument("--vae-steps", type=int, default=2300)
    parser.add_argument("--vae-batch", type=int, default=32)
    parser.add_argument("--vae-minutes", type=float, default=20.0, help="vae wall-clock cap")
    # 6000 steps at batch 64 fit 76 minutes on two quiet cores of this project's machines (0.74 s
    # a step in v4), so the step budget, not the clock, ends a quiet run: a function of its seed
    parser.add_argument("--denoiser-steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--unet-widths", type=int, nargs="+", default=None,
        help="the UNet's block_out_channels instead of the architecture folder's (capacity probes)",
    )  # fmt: skip
    parser.add_argument(
        "--min-snr-gamma", type=float, default=None,
        help="min-SNR-γ loss weighting (Hang et al. 2023); none: the plain ε loss",
    )  # fmt: skip
    # A quarter of captions name colour and shape together, binding the two words (with none,
    # the purple star, never drawn, came from its names in 81% of samples).
    parser.add_argument(
        "--caption-pair-p", type=float, default=0.25,
        help="share of captions that name colour and shape together",
    )  # fmt: skip
    parser.add_argument(
        "--caption-empty-p", type=float, default=0.1,
        help="share of empty captions (classifier-free guidance dropout)",
    )  # fmt: skip
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument(
        "--denoiser-minutes", type=float, default=78.0, help="denoiser wall-clock cap"
    )
    # Two threads on a quiet machine; pass 1 when other jobs share the cores: two threads per
    # process then oversubscribe, and a UNet step measured 10× slower than with one.
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = Log(args.out / "pretrain_log.txt")
    log(f"pretrain {vars(args)}")
    for name in STAGES if "all" in args.stage else args.stage:
        start = time.time()
        STAGES[name](args.out, args, log)
        log(f"stage {name} done in {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
