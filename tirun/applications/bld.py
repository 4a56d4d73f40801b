"""Blended Latent Diffusion (Avrahami et al.): repaint only a masked region of a source image so
it shows the learned word, and keep the rest the source's.

The source is encoded once; denoising starts from it noised to `strength`; before every step
the latents outside the mask (resized to latent resolution, nearest) are replaced by the source
noised to that step. The VAE cannot reproduce the background exactly, so the decoder can be
fine-tuned per edit to keep it (the paper's background fix) and the final image blended with
the source in pixel space.

A small region can be edited "only masked" (diffusers' `padding_mask_crop`, AUTOMATIC1111's
inpaint area): the edit runs on a crop around the mask, upscaled to the model's resolution, so
the new object is drawn at the size the model draws objects, and the crop is pasted back.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from tirun import xti
from tirun.applications.context import Context, check_templates, with_baseline
from tirun.data import to_rgb
from tirun.metrics.background import background_mse, background_psnr
from tirun.metrics.clip import without_words
from tirun.metrics.images import mask_crop, to_float, to_pil
from tirun.sampling import Sampling
from tirun.toyworld.scenes import editing_scene


@dataclass(frozen=True)
class Source:
    """An image to edit at the model's resolution and its mask (H×W bool, True = repaint)."""

    image: Image.Image
    mask: np.ndarray
    name: str


def check_mask(mask: np.ndarray, size: tuple[int, int], what: str = "application.mask") -> None:
    """Refuse a mask of the wrong size, an empty one, or one that leaves no background."""
    if mask.shape != (size[1], size[0]):
        raise ValueError(
            f"{what} is {mask.shape[1]}x{mask.shape[0]} but the image is {size[0]}x{size[1]}: "
            "give a mask of the image's size"
        )
    if not mask.any():
        raise ValueError(f"{what} is empty (no pixel above 50%): paint the region to edit white")
    if mask.all():
        raise ValueError(f"{what} covers the whole image: leave some background black to keep")


def load_source(image: str | Path, mask: str | Path, resolution: int) -> Source:
    """A source image and its mask from files (mask: white = repaint, binarised at 50%).

    Args:
        image: the source image file.
        mask: a grayscale (or RGB) image of the same size.
        resolution: the model's side in pixels; both are resized to it (the mask nearest).
    """
    pictures = []
    for key, path in (("image", image), ("mask", mask)):
        try:
            with Image.open(Path(path).expanduser()) as picture:
                picture.load()
                pictures.append(to_rgb(picture))
        except (OSError, SyntaxError) as error:
            raise ValueError(f"application.{key}={str(path)!r} cannot be read: {error}") from None
    source, mask_picture = pictures
    pixels = np.asarray(mask_picture.convert("L")) > 127
    check_mask(pixels, source.size)
    size = (resolution, resolution)
    resized = Image.fromarray(pixels).resize(size, Image.Resampling.NEAREST)
    return Source(
        source.resize(size, Image.Resampling.BICUBIC), np.asarray(resized), Path(image).stem
    )


def toy_sources(scenes: int, objects: int, seed: int, region: str) -> list[Source]:
    """The toy world's editing scenes: side-by-side objects, the mask on one of them.

    Args:
        scenes: how many scenes (seeds `seed`, `seed + 1`, …).
        objects: objects per scene.
        seed: the first scene's seed.
        region: `footprint` (the object's silhouette, grown a pixel: the new object must fit
            the old outline) or `box` (its bounding box, grown a pixel: room for a new shape).
    """
    if region not in ("footprint", "box"):
        raise ValueError(f"application.region={region!r} is unknown; use footprint or box")
    sources = []
    for i in range(scenes):
        scene = editing_scene(seed + i, objects)
        mask = scene.mask
        if region == "box":
            ys, xs = np.nonzero(mask)
            mask = np.zeros_like(mask)
            mask[max(ys.min() - 1, 0) : ys.max() + 2, max(xs.min() - 1, 0) : xs.max() + 2] = True
        check_mask(mask, scene.image.size, f"toy scene {seed + i}'s mask")
        sources.append(Source(scene.image, mask, f"scene{seed + i}"))
    return sources


def latent_masks(
    mask: np.ndarray, size: tuple[int, int], dilations: list[int]
) -> list[torch.Tensor]:
    """The mask at latent resolution (nearest), one per dilation kernel (odd; 0 or 1: none).

    The official LDM code shrinks the mask as denoising goes (dilations 7→5→3→none), so the
    object may first form larger than the region, then fit it.
    """
    small = F.interpolate(torch.tensor(mask)[None, None].float(), size=size, mode="nearest")
    if not small.any():
        raise ValueError(
            f"the mask vanishes at latent resolution {size[0]}x{size[1]}: make the region larger"
        )
    masks = []
    for k in dilations:
        if k > 1 and k % 2 == 0:
            raise ValueError(f"application.dilation has {k}: kernel sizes must be odd")
        masks.append(F.max_pool2d(small, k, 1, k // 2) if k > 1 else small)
    return masks


@torch.no_grad()
def blend(
    pipe,
    prompt: str,
    source: torch.Tensor,
    mask: np.ndarray,
    *,
    samples: int,
    steps: int,
    guidance: float,
    strength: float,
    blend_start: float,
    dilations: list[int],
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edited latents for `samples` seeds, and the (undilated) latent mask.

    Args:
        pipe: an SD 1.x/2.x pipeline with the words loaded.
        prompt: the edit's prompt (the word written in).
        source: [1, 3, H, W] in [0, 1].
        mask: H×W bool, True = repaint.
        samples: edits, sample j on seed `seed + j`.
        steps: DDIM steps of the full schedule; the run takes the last `strength` of them.
        guidance: classifier-free guidance scale.
        strength: how noised the source is at the start (1: pure noise).
        blend_start: fraction of the run's steps before blending begins.
        dilations: latent mask dilation per equal segment of the run (`[0]`: none).
        seed: base seed.
    """
    vae, unet = pipe.vae, pipe.unet
    device, dtype = unet.device, unet.dtype
    scale = vae.config.scaling_factor
    generators = [torch.Generator().manual_seed(seed + j) for j in range(samples)]

    # 1. Text conditioning as the pipeline computes it (it expands multi-vector words); an XTI
    #    word's layers each read the prompt written with their own token.
    attention = None
    if getattr(pipe, "tirun_xti", None):
        per_layer = xti.pipeline_kwargs(pipe, [prompt] * samples, guidance)
        cond, uncond = per_layer["prompt_embeds"], per_layer["negative_prompt_embeds"]
        attention = per_layer["cross_attention_kwargs"]
    else:
        cond, uncond = pipe.encode_prompt(prompt, device, samples, guidance > 1, None)
    embeds = torch.cat([uncond, cond]) if guidance > 1 else cond

    # 2. The source's latents (posterior mean) and the mask at their resolution.
    z0 = vae.encode((source * 2 - 1).to(device, vae.dtype)).latent_dist.mean * scale
    z0 = z0.to(dtype).repeat(samples, 1, 1, 1)
    masks = [m.to(device, dtype) for m in latent_masks(mask, tuple(z0.shape[-2:]), dilations)]

    # 3. The last `strength` of a DDIM schedule, starting from the noised source.
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps, device=device)
    first = steps - max(1, round(steps * strength))
    timesteps = scheduler.timesteps[first:]
    blend_from = int(len(timesteps) * blend_start)

    def noise() -> torch.Tensor:
        return torch.stack([torch.randn(z0.shape[1:], generator=g) for g in generators]).to(
            device, dtype
        )

    z = scheduler.add_noise(z0, noise(), timesteps[:1])

    # 4. Blend before every step: outside the mask, the source noised to this step.
    for i, t in enumerate(timesteps):
        if i >= blend_from:
            m = masks[i * len(masks) // len(timesteps)]
            z = scheduler.add_noise(z0, noise(), t.reshape(1)) * (1 - m) + z * m
        z_in = scheduler.scale_model_input(torch.cat([z, z]) if guidance > 1 else z, t)
        eps = unet(z_in, t, encoder_hidden_states=embeds, cross_attention_kwargs=attention).sample
        if guidance > 1:
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + guidance * (eps_cond - eps_uncond)
        z = scheduler.step(eps, t, z).prev_sample

    # 5. The background is the source's latents exactly; only the decoder can still change it.
    return z0 * (1 - masks[-1]) + z * masks[-1], masks[-1]


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] from latents."""
    return ((vae.decode(latents / vae.config.scaling_factor).sample.float() + 1) / 2).clamp(0, 1)


def fit_decoder(
    vae,
    latents: torch.Tensor,
    edited: torch.Tensor,
    source: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    lr: float,
    background_weight: float,
):
    """A copy of the VAE whose decoder is fine-tuned to keep the source's background.

    Loss (the paper's background fix): MSE to the plain decode inside the mask +
    `background_weight` · MSE to the source outside it, Adam, `steps` steps.

    Args:
        vae: the model's VAE (left untouched).
        latents: [1, C, h, w] edited latents.
        edited: [1, 3, H, W] their plain decode in [0, 1].
        source: [1, 3, H, W] the source in [0, 1].
        mask: [H, W] bool, True = edited region.
        steps: optimisation steps (the paper: 75).
        lr: Adam learning rate (the paper: 1e-4).
        background_weight: weight of the background term (the paper: 100).
    """
    fixed = copy.deepcopy(vae).float()
    fixed.requires_grad_(False)
    params = list(fixed.decoder.parameters())
    if getattr(fixed, "post_quant_conv", None) is not None:
        params += list(fixed.post_quant_conv.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    inside = mask.float()[None, None].to(latents.device)
    outside = 1 - inside
    latents = latents.float()
    with torch.enable_grad():
        for _ in range(steps):
            out = decode(fixed, latents)
            loss = ((out - edited) ** 2 * inside).sum() / (inside.sum() * 3) + background_weight * (
                (out - source) ** 2 * outside
            ).sum() / (outside.sum() * 3)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    fixed.requires_grad_(False)
    return fixed.eval()


@dataclass(frozen=True)
class Options:
    """The method's options (see `run`)."""

    strength: float
    blend_start: float
    dilations: list[int]
    pixel_blend: bool
    decoder_fix: dict
    crop_padding: int | None


def edit_window(source: Source, padding: int | None) -> tuple[Source, tuple[int, int, int, int]]:
    """The part of `source` an edit runs on, at the source's size, and its box in the source.

    With `padding` (pixels), a crop around the mask's bounding box grown by `padding` and widened
    to a square (diffusers' own crop region), upscaled; without it, the whole source.
    """
    width, height = source.image.size
    if padding is None:
        return source, (0, 0, width, height)
    box = VaeImageProcessor.get_crop_region(_mask_picture(source.mask), width, height, padding)
    image = source.image.crop(box).resize((width, height), Image.Resampling.BICUBIC)
    mask = Image.fromarray(source.mask).crop(box).resize((width, height), Image.Resampling.NEAREST)
    return Source(image, np.asarray(mask), source.name), box


def paste(edit: torch.Tensor, source: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """`source` [1, 3, H, W] with `box` replaced by `edit` [1, 3, H, W] resized to fit it."""
    left, top, right, bottom = box
    if (right - left, bottom - top) == tuple(source.shape[-1:-3:-1]):
        return edit
    out = source.clone()
    out[..., top:bottom, left:right] = F.interpolate(
        edit, size=(bottom - top, right - left), mode="bicubic", antialias=True
    ).clamp(0, 1)
    return out


def edit_sources(
    pipe, prompt: str, sources: list[Source], settings: Sampling, options: Options, fit: bool
) -> dict:
    """Edit every source `settings.samples` times; background scores before any pixel blend.

    Returns grids (`final`, `raw`: per source its image, its mask, the edits) and per-edit
    background PSNR/MSE with the plain decoder and, when `fit`, with the fine-tuned one. With
    `options.crop_padding` the scores are those of the edited crop against the source's crop (the
    rest of the image is the source's pixels, pasted).
    """
    fix = options.decoder_fix
    result = {"final": [], "raw": [], "psnr": [], "mse": [], "psnr_fix": [], "mse_fix": []}
    for whole in sources:
        src, box = edit_window(whole, options.crop_padding)
        x, source = to_float(src.image), to_float(whole.image)
        pixel_mask, source_mask = torch.tensor(src.mask), torch.tensor(whole.mask)
        latents, _ = blend(
            pipe, prompt, x, src.mask, samples=settings.samples, steps=settings.steps,
            guidance=settings.guidance, strength=options.strength, blend_start=options.blend_start,
            dilations=options.dilations, seed=settings.seed,
        )  # fmt: skip
        with torch.no_grad():
            raw = decode(pipe.vae, latents).cpu()
        finals = []
        for j in range(len(raw)):
            result["psnr"].append(background_psnr(raw[j], x[0], pixel_mask))
            result["mse"].append(background_mse(raw[j], x[0], pixel_mask))
            out = raw[j : j + 1]
            if fit and fix["steps"]:
                fixed = fit_decoder(
                    pipe.vae, latents[j : j + 1], out, x, pixel_mask,
                    fix["steps"], fix["lr"], fix["background_weight"],
                )  # fmt: skip
                with torch.no_grad():
                    out = decode(fixed, latents[j : j + 1].float()).cpu()
                result["psnr_fix"].append(background_psnr(out[0], x[0], pixel_mask))
                result["mse_fix"].append(background_mse(out[0], x[0], pixel_mask))
            out = paste(out, source, box)
            if options.pixel_blend:
                out = out * source_mask + source * ~source_mask
            finals += to_pil(out)
        pasted = torch.cat([paste(raw[j : j + 1], source, box) for j in range(len(raw))])
        result["raw"].append([whole.image, _mask_picture(whole.mask), *to_pil(pasted)])
        result["final"].append([whole.image, _mask_picture(whole.mask), *finals])
    return result


def run(
    ctx: Context,
    *,
    prompt: str,
    image: str | None,
    mask: str | None,
    scenes: int,
    objects: int,
    region: str,
    strength: float,
    blend_start: float,
    dilation: list[int],
    pixel_blend: bool,
    crop_padding: int | None,
    decoder_fix: dict,
    sampling: dict,
) -> dict:
    """Edit each source's masked region with the learned word and with the plain initializer word.

    Writes `word.png` (per source: source, mask, final edits), `raw.png` (plain decodes, before
    fix and blend), `baseline.png`; metrics: background PSNR/MSE outside the mask before any
    pixel blend (plain decoder, and fine-tuned decoder) and the concept inside the mask.

    Args:
        ctx: the application's context (model, saved word, scorers).
        prompt: the edit's sentence with one "{}" for the word.
        image: a source image file (null: the toy world's editing scenes).
        mask: its mask file, white = repaint (needed with `image`).
        scenes: toy scenes to edit when `image` is null (seeds `sampling.seed`, +1, …).
        objects: objects per toy scene.
        region: toy scenes' region to repaint: `box` (the object's bounding box) or `footprint`.
        strength: how noised the source is at the start (1: pure noise).
        blend_start: fraction of the steps run before blending begins.
        dilation: latent mask dilation kernels over equal segments of the steps (`[0]`: none).
        pixel_blend: paste the edit into the source through the pixel mask at the end.
        crop_padding: edit only a square crop around the mask grown by this many pixels,
            upscaled to the model's resolution, then pasted back (null: the whole image).
        decoder_fix: `steps` (0: off), `lr`, `background_weight` of the background fix.
        sampling: `application.sampling` (samples = edits per source).
    """
    settings = Sampling(**sampling)
    check_templates([prompt], "prompt")
    if not 0 < strength <= 1 or not 0 <= blend_start < 1:
        raise ValueError(
            f"application.strength={strength} must be in (0, 1] and blend_start={blend_start} in [0, 1)"
        )
    if crop_padding is not None and crop_padding < 0:
        raise ValueError(f"application.crop_padding={crop_padding} must be >= 0 (null: no crop)")
    if ctx.components.is_sdxl:
        raise ValueError("bld runs on SD 1.x/2.x models (one text encoder); this model is SDXL")
    if image is not None:
        if mask is None:
            raise ValueError(
                "application.image needs application.mask (white = the region to edit)"
            )
        sources = [load_source(image, mask, ctx.components.resolution)]
    else:
        sources = toy_sources(scenes, objects, settings.seed, region)
    options = Options(
        strength, blend_start, list(dilation), pixel_blend, dict(decoder_fix), crop_padding
    )
    with ctx.pipeline("ddim", ctx.sources[:1]) as (pipe, tokens):
        word = edit_sources(pipe, prompt.format(tokens[0]), sources, settings, options, fit=True)
        base = edit_sources(
            pipe, prompt.format(ctx.initializer), sources, settings, options, fit=False
        )
    titles = [f"{s.name}: source, mask, edits" for s in sources]
    ctx.save_comparison(word["final"], base["final"], titles)
    ctx.save_grid(word["raw"], "raw", titles)

    # Concept inside the mask: the edited region alone, cropped and framed like a single object.
    labels = [s.name for s in sources]
    expected = [ctx.concept.attributes] * len(sources) if ctx.concept else None
    texts = [without_words(prompt)] * len(sources)

    def crops(rows: list[list[Image.Image]]) -> list[list[Image.Image]]:
        return [
            [mask_crop(im, s.mask, isolate=True) for im in row[2:]]
            for row, s in zip(rows, sources, strict=True)
        ]

    metrics = {
        "sources": len(sources),
        "edits": len(word["psnr"]),
        "crop_padding": crop_padding,
        "background_psnr": statistics.fmean(word["psnr"]),
        "background_mse": statistics.fmean(word["mse"]),
        **with_baseline(
            ctx.scores(crops(word["final"]), labels, expected, texts),
            ctx.scores(crops(base["final"]), labels, expected, texts),
        ),
    }
    if word["psnr_fix"]:
        metrics["background_psnr_decoder_fix"] = statistics.fmean(word["psnr_fix"])
        metrics["background_mse_decoder_fix"] = statistics.fmean(word["mse_fix"])
    return metrics


def _mask_picture(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB")
