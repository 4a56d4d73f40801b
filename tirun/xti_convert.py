"""From an XTI word (one token per cross-attention layer, a file only tirun reads) to a word of
a few vectors that every TI tool reads.

    python -m tirun.xti_convert WORD_XTI IMAGES OUT [--vectors 3] [--kind object] [--model toy]

The model stays frozen and the vectors are fitted so that every cross-attention layer gives
what the XTI word makes it give. The UNet denoises the training images (``IMAGES``, noised at
random timesteps) once, on the training templates' sentences under the XTI word, and each
cross-attention layer's input is kept. The fit then runs only the text encoder and those
layers: it moves the vectors until each layer's output on its kept inputs, reading the
sentence with the new word, matches the output it gives reading the sentence with its own XTI
token (the squared error relative to the target's mean square, averaged over layers). OUT is
written in diffusers' format (`learned_embeds.safetensors`, [vectors, width]).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from tirun import embeddings, xti
from tirun.data import LatentCache, TrainingViews, training_images
from tirun.embeddings import LearnedWord
from tirun.loading import pipeline_with_words
from tirun.models import Components, load_pretrained
from tirun.templates import builtin
from tirun.word import Word


def _cross_attention(unet) -> list[torch.nn.Module]:
    """The UNet's cross-attention layers, in the order XTI gives them their tokens."""
    modules = dict(unet.named_modules())
    return [modules[name] for name in xti.cross_attention_layers(unet)]


@torch.no_grad()
def _targets(
    components: Components, xti_file: Path, latents: torch.Tensor, sentences: list[str],
    seed: int,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # fmt: skip
    """Each cross-attention layer's inputs and outputs while the UNet denoises ``latents``
    (noised at random timesteps) on ``sentences`` ("{}" for the word) under the XTI word."""
    unet = components.unet
    layers = _cross_attention(unet)
    kept: dict[int, torch.Tensor] = {}

    def keep(index: int):
        def hook(module, args, kwargs) -> None:
            kept[index] = (args[0] if args else kwargs["hidden_states"]).detach()

        return hook

    hooks = [
        layer.register_forward_pre_hook(keep(index), with_kwargs=True)
        for index, layer in enumerate(layers)
    ]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=generator)
    steps = components.scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (len(latents),), generator=generator)
    with pipeline_with_words(components, [xti_file]) as (pipe, tokens):
        prompts = [s.format(tokens[0]) for s in sentences]
        kwargs = xti.pipeline_kwargs(pipe, prompts, guidance=1.0)
        per_layer = kwargs["cross_attention_kwargs"]["per_layer_states"]
        param = next(unet.parameters())
        noisy = components.scheduler.add_noise(latents, noise, timesteps)
        try:
            unet(noisy.to(param.device, param.dtype), timesteps.to(param.device),
                 kwargs["prompt_embeds"], cross_attention_kwargs=kwargs["cross_attention_kwargs"])  # fmt: skip
        finally:
            for hook in hooks:
                hook.remove()
        inputs = [kept[index] for index in range(len(layers))]
        outputs = [
            layer(hidden, encoder_hidden_states=states)
            for layer, hidden, states in zip(layers, inputs, per_layer, strict=True)
        ]
    return inputs, outputs


def fit(
    components: Components,
    xti_file: str | Path,
    images: list,
    templates: list[str],
    num_vectors: int = 3,
    steps: int = 300,
    lr: float = 1e-2,
    samples: int = 32,
    seed: int = 0,
) -> tuple[LearnedWord, dict[str, float]]:
    """The few-vector word whose every cross-attention layer matches the XTI word's, and the
    relative error of that match at the start and the end.

    Args:
        components: the model the XTI word was learned on (SD 1.x/2.x or the toy model).
        xti_file: the XTI word (`learned_embeds_xti.safetensors`).
        images: the training images the word was learned from.
        templates: the training sentences, each with one "{}" for the word.
        num_vectors: vectors of the new word; each starts at the mean of the XTI word's rows.
        steps, lr: Adam's steps and learning rate.
        samples: (image, sentence, timestep) draws the layers are matched on.
        seed: seeds the draws (the same seed gives the same word).
    """
    source = xti.load(xti_file)
    if components.is_sdxl:
        raise ValueError("XTI words convert on SD 1.x/2.x models (one text encoder)")
    resolution = components.resolution
    views = TrainingViews(images, resolution, "center", flip_p=0.0, seed=seed)
    cache = LatentCache(components.vae, views)
    generator = torch.Generator().manual_seed(seed)
    view = torch.arange(samples) % len(views)
    latents = cache.sample(view, torch.zeros_like(view), generator)
    sentences = [
        templates[i] for i in torch.randint(0, len(templates), (samples,), generator=generator)
    ]
    inputs, targets = _targets(components, Path(xti_file), latents, sentences, seed)
    scales = [t.float().pow(2).mean() for t in targets]

    # the initializer only has to be a word the tokenizer knows: the start is set right after
    word = Word(components, f"{source.token}_fit", "a", num_vectors)
    try:
        with torch.no_grad():
            word.vectors[0].copy_(source.vectors.mean(0).expand(num_vectors, -1))
        tokenizer = components.tokenizers[0]
        ids = tokenizer(
            [s.format(word.text()) for s in sentences], padding="max_length",
            max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt",
        ).input_ids.to(next(components.unet.parameters()).device)  # fmt: skip
        layers = _cross_attention(components.unet)
        optimizer = torch.optim.Adam(word.parameters(), lr=lr)

        def error() -> torch.Tensor:
            states = components.text_encoders[0](ids)[0]
            return torch.stack([
                (layer(hidden, encoder_hidden_states=states).float() - target).pow(2).mean()
                / scale
                for layer, hidden, target, scale in zip(layers, inputs, targets, scales, strict=True)
            ]).mean()  # fmt: skip

        with torch.no_grad():
            start = float(error())
        for _ in range(steps):
            loss = error()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            end = float(error())
        learned = word.learned()
    finally:
        word.remove()
    return replace(learned, token=source.token), {
        "relative_error_start": start,
        "relative_error_end": end,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tirun.xti_convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("word", type=Path, help="the XTI word (learned_embeds_xti.safetensors)")
    parser.add_argument("images", help="the folder of training images it was learned from")
    parser.add_argument("out", type=Path, help="the word to write (diffusers' .safetensors)")
    parser.add_argument("--vectors", type=int, default=3)
    parser.add_argument("--kind", default="object", help="object or style: the templates")
    parser.add_argument("--model", default="toy", help="the model the word was learned on")
    parser.add_argument("--resolution", type=int, help="the model's image size (toy: 32)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.vectors < 1:
            raise ValueError(f"--vectors={args.vectors} must be at least 1")
        xti.load(args.word)  # before the model: a wrong file is told at once
        if args.resolution is None and args.model != "toy":
            raise ValueError("give --resolution: 512 for SD 1.x, 768 for SD 2.x")
        resolution = args.resolution or 32
        components = load_pretrained(args.model, resolution=resolution)
        word, errors = fit(components, args.word, training_images(args.images),
                           builtin(args.kind), args.vectors, args.steps, args.lr, args.samples,
                           args.seed)  # fmt: skip
        embeddings.save(word, args.out, "diffusers")
    except ValueError as error:
        print(f"tirun: error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {args.vectors} vectors; relative error of the layers' outputs "
        f"{errors['relative_error_start']:.3f} -> {errors['relative_error_end']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
