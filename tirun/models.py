"""Load or build the frozen latent diffusion model a word is learned on.

Every model, real or tiny, comes out as one `Components`: tokenizer(s), text encoder(s), VAE,
UNet and the training noise scheduler. SD 1.x/2.x have one text encoder; SDXL has two, and a
word gets one set of vectors per encoder.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from huggingface_hub import is_offline_mode, snapshot_download
from huggingface_hub.constants import HF_HUB_CACHE
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)
from transformers.utils import logging as transformers_logging

from tirun.choices import CHOICES, SCHEDULERS
from tirun.packaged import ASSETS, PACKAGED_MODELS

TOKENIZER_DIR = ASSETS / "tokenizer"

log = logging.getLogger(__name__)
ATTENTION = CHOICES["train.attention"]


def _no_weight_loading_bar(factory: Callable, args: tuple, kwargs: dict) -> object:
    """Draw every transformers progress bar but its "Loading weights" one, which each text encoder
    load prints (a few times a toy run) and which says nothing about the run. Download bars stay."""
    if kwargs.get("desc") == "Loading weights":
        kwargs = {**kwargs, "disable": True}
    return factory(*args, **kwargs)


transformers_logging.set_tqdm_hook(_no_weight_loading_bar)


class SDPAProcessor(AttnProcessor2_0):
    """diffusers' SDPA attention processor, with its call signature computed once.

    `Attention.forward` runs `inspect.signature` on its processor at every call, to filter
    keyword arguments: 14 calls and about 1.3 ms a step on the toy model, a twentieth of its
    training step. The signature is the parent's, so the same arguments get through.
    """

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return super().__call__(*args, **kwargs)

    __call__.__signature__ = inspect.signature(AttnProcessor2_0.__call__)


@dataclass
class Components:
    """The parts of a Stable Diffusion model that Textual Inversion touches."""

    tokenizers: list[CLIPTokenizer]
    text_encoders: list[CLIPTextModel]
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler: DDPMScheduler
    resolution: int
    name: str

    @property
    def is_sdxl(self) -> bool:
        return len(self.text_encoders) == 2

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type

    @property
    def widths(self) -> list[int]:
        return [enc.get_input_embeddings().embedding_dim for enc in self.text_encoders]

    def freeze(self) -> None:
        """Frozen and in eval mode: only the new word's vectors are ever trained."""
        for module in (self.vae, self.unet, *self.text_encoders):
            module.requires_grad_(False)
            module.eval()

    def prepare(
        self,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        attention: str = "sdpa",
        gradient_checkpointing: bool = False,
    ) -> None:
        """Frozen, on ``device`` in ``dtype``, with the attention kernel and (to trade compute
        for memory) gradient checkpointing asked for: the model as the trainer uses it."""
        self.freeze()
        for module in (self.vae, self.unet, *self.text_encoders):
            module.to(device)
            if dtype != torch.float32:
                module.to(dtype=dtype)
        self.set_attention(attention)  # after the move: xformers checks the device
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            for encoder in self.text_encoders:
                encoder.gradient_checkpointing_enable()

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along a side (8 for Stable Diffusion)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def set_attention(self, kind: str) -> None:
        """`sdpa` (PyTorch scaled dot product), `xformers` (CUDA only) or `eager`."""
        if kind not in ATTENTION:
            raise ValueError(f"train.attention={kind!r} is unknown; use one of {ATTENTION}")
        if kind == "xformers":
            check_xformers(self.unet.device)
            self.unet.enable_xformers_memory_efficient_attention()
            self.vae.enable_xformers_memory_efficient_attention()
            return
        processor = SDPAProcessor if kind == "sdpa" else AttnProcessor
        self.unet.set_attn_processor(processor())
        self.vae.set_attn_processor(processor())
        for encoder in self.text_encoders:
            encoder.set_attn_implementation(kind)

    def encode_prompt(
        self, input_ids: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """Text conditioning for the UNet, as the diffusers pipelines compute it.

        Returns the encoder hidden states and, for SDXL, the added conditions (pooled text
        embeds of the second encoder and the size/crop time ids).
        """
        if not self.is_sdxl:
            return self.text_encoders[0](input_ids[0])[0], None
        states = []
        for encoder, ids in zip(self.text_encoders, input_ids, strict=True):
            out = encoder(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
        pooled = out.text_embeds
        size = self.resolution
        time_ids = torch.tensor([size, size, 0, 0, size, size], device=pooled.device)
        added = {
            "text_embeds": pooled,
            "time_ids": time_ids.to(pooled.dtype).repeat(pooled.shape[0], 1),
        }
        return torch.cat(states, dim=-1), added

    def pipeline(self, scheduler: str = "ddim"):
        """A diffusers pipeline over these very modules (no copies), for sampling."""
        sampler = make_sampler(self.scheduler, scheduler)
        if self.is_sdxl:
            return StableDiffusionXLPipeline(
                vae=self.vae,
                text_encoder=self.text_encoders[0],
                text_encoder_2=self.text_encoders[1],
                tokenizer=self.tokenizers[0],
                tokenizer_2=self.tokenizers[1],
                unet=self.unet,
                scheduler=sampler,
            )
        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoders[0],
            tokenizer=self.tokenizers[0],
            unet=self.unet,
            scheduler=sampler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    def save(self, folder: str | Path) -> Path:
        """Write a diffusers folder that `from_pretrained` (and `load_pretrained`) reads."""
        pipe = self.pipeline(scheduler="ddpm")
        pipe.save_pretrained(str(folder), safe_serialization=True)
        return Path(folder)


def make_sampler(train_scheduler: DDPMScheduler, kind: str):
    """A sampling scheduler sharing the training noise schedule (`ddim` or `ddpm`)."""
    samplers = dict(zip(SCHEDULERS, (DDIMScheduler, DDPMScheduler), strict=True))
    if kind not in samplers:
        raise ValueError(f"scheduler {kind!r} is unknown; use one of {sorted(samplers)}")
    return samplers[kind].from_config(train_scheduler.config)


def check_xformers(device: torch.device) -> None:
    try:
        import xformers  # noqa: F401
    except ImportError:
        raise ValueError(
            "train.attention=xformers needs the xformers package (pip install 'tirun[xformers]'); "
            "use train.attention=sdpa instead"
        ) from None
    if device.type != "cuda":
        raise ValueError(
            f"train.attention=xformers runs on CUDA only, and the model is on {device.type}; "
            "use train.attention=sdpa"
        )


def _arch_folder(arch_dir: str) -> Path:
    folder = Path(arch_dir)
    if not folder.is_absolute() and not folder.exists():
        folder = ASSETS / "arch" / arch_dir
    if not (folder / "unet" / "config.json").is_file():
        raise ValueError(
            f"model.arch_dir={arch_dir!r} has no unet/config.json; give a folder with "
            f"unet/ vae/ text_encoder/ scheduler/ configs or one of {sorted(p.name for p in (ASSETS / 'arch').iterdir())}"
        )
    return folder


def _read(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def build_part(
    arch_dir: str,
    part: str,
    tokenizer: CLIPTokenizer | None = None,
    widths: Sequence[int] | None = None,
):
    """One component of an architecture folder with fresh random weights (from the current
    torch seed): ``vae``, ``unet``, ``scheduler``, or ``text_encoder``/``text_encoder_2`` sized
    to ``tokenizer`` (its vocabulary and special ids). The one builder for every architecture:
    the tiny test models, real shapes for timing, and the toy model before pretraining.
    ``widths`` replaces a UNet's ``block_out_channels`` (the toy model's capacity probes).
    """
    folder = _arch_folder(arch_dir)
    if part == "scheduler":
        return DDPMScheduler.from_config(_read(folder / "scheduler" / "scheduler_config.json"))
    config = _read(folder / part / "config.json")
    if part == "vae":
        return AutoencoderKL.from_config(config)
    if part == "unet":
        if widths:
            config["block_out_channels"] = list(widths)
        return UNet2DConditionModel.from_config(config)
    if tokenizer is None:
        raise ValueError(f"{part} needs the tokenizer it reads ids from")
    config.pop("architectures", None)
    config["vocab_size"] = max(config.get("vocab_size", 0), len(tokenizer))
    config.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model_class = CLIPTextModelWithProjection if part == "text_encoder_2" else CLIPTextModel
    return model_class(CLIPTextConfig(**config))


def build_random(
    arch_dir: str,
    seed: int = 0,
    resolution: int = 32,
    prediction_type: str = "epsilon",
    name: str | None = None,
) -> Components:
    """Build a model from architecture configs with random weights, offline.

    Used for the tiny test models and for timing real architectures (timing does not depend on
    the weights). The tokenizer is the small CLIP-format one the project ships.

    Args:
        arch_dir: a folder with `unet/`, `vae/`, `text_encoder/` (and `text_encoder_2/` for
            SDXL) and `scheduler/` configs, or the name of one under `tirun/assets/arch`.
        seed: weights are drawn from this seed, so the same seed gives the same model.
        resolution: image size in pixels the model is used at.
        prediction_type: `epsilon` or `v_prediction` (what the UNet is taken to predict).
    """
    folder = _arch_folder(arch_dir)
    torch.manual_seed(seed)
    encoder_dirs = [d for d in ("text_encoder", "text_encoder_2") if (folder / d).is_dir()]
    tokenizers = [CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR)) for _ in encoder_dirs]
    encoders = [build_part(arch_dir, d, t) for d, t in zip(encoder_dirs, tokenizers, strict=True)]
    scheduler = build_part(arch_dir, "scheduler")
    scheduler.register_to_config(prediction_type=prediction_type)
    return Components(
        tokenizers=tokenizers,
        text_encoders=encoders,
        vae=build_part(arch_dir, "vae"),
        unet=build_part(arch_dir, "unet"),
        scheduler=scheduler,
        resolution=resolution,
        name=name or f"random:{folder.name}",
    )


def load_pretrained(
    path: str,
    resolution: int,
    revision: str | None = None,
    variant: str | None = None,
) -> Components:
    """Load a Stable Diffusion 1.x/2.x/XL model from the hub, the HF cache or a local folder.

    Args:
        path: a hub id (e.g. `stable-diffusion-v1-5/stable-diffusion-v1-5`), a local diffusers
            folder (`tokenizer/ text_encoder/ vae/ unet/ scheduler/`, plus `tokenizer_2/
            text_encoder_2/` for SDXL), or `toy` for the packaged toy-world model.
        resolution: image size in pixels the model is used at (512 SD1, 768 SD2.1, 1024 SDXL).
        revision: hub revision.
        variant: weight variant such as `fp16`.
    """
    source = str(PACKAGED_MODELS.get(path, Path(path).expanduser()))
    hub_id = not Path(source).exists()
    if hub_id:
        if path.startswith(("/", ".", "~")) or path.count("/") > 1:  # a path, not a hub id
            raise ValueError(
                f"model.path={path!r} is not a folder: point it at a local diffusers folder "
                "with tokenizer/ text_encoder/ vae/ unet/ scheduler/"
            )
        source = path
        if is_offline_mode():  # the cache's folder, so no loader asks the Hub again
            source, revision = str(cached_snapshot(path, revision)), None
    kwargs = {"revision": revision}
    try:
        sdxl = _has_subfolder(source, "text_encoder_2", revision)
        tokenizers = [CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)]
        encoders = [
            CLIPTextModel.from_pretrained(
                source, subfolder="text_encoder", variant=variant, **kwargs
            )
        ]
        if sdxl:
            tokenizers.append(
                CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2", **kwargs)
            )
            encoders.append(
                CLIPTextModelWithProjection.from_pretrained(
                    source, subfolder="text_encoder_2", variant=variant, **kwargs
                )
            )
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", variant=variant, **kwargs)
        unet = UNet2DConditionModel.from_pretrained(
            source, subfolder="unet", variant=variant, **kwargs
        )
        scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **kwargs)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"model.path={path!r} could not be loaded ({str(error).splitlines()[0][:160]}); "
            "with no hub access download it once elsewhere into the HF cache, or point "
            "model.path=/a/local/folder with tokenizer/ text_encoder/ vae/ unet/ scheduler/"
        ) from None
    if hub_id:  # which files these are, in one line (online the loaders cached them)
        folder = source if source != path else cached_snapshot(path, revision)
        log.info("model %s: loaded the cached snapshot %s", path, folder)
    return Components(
        tokenizers=tokenizers,
        text_encoders=encoders,
        vae=vae,
        unet=unet,
        scheduler=scheduler,
        resolution=resolution,
        name=path,
    )


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The folder of ``repo_id`` at ``revision`` (default: main) in the local Hugging Face cache
    (``models--ORG--NAME/snapshots/<commit>``), found without asking the Hub.

    Given this folder, diffusers and transformers read files and never resolve the id again:
    offline, every resolution would warn "Could not reach the Hub" (four a run).
    """
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (OSError, ValueError) as error:  # not cached (LocalEntryNotFoundError), a bad id
        why = (
            f"it is not in the Hugging Face cache {HF_HUB_CACHE}"
            if isinstance(error, LocalEntryNotFoundError)
            else str(error).splitlines()[0][:160]
        )
        raise ValueError(
            f"model.path={repo_id!r} could not be loaded ({why}); with no hub access download "
            "it once elsewhere into the HF cache, or point model.path=/a/local/folder with "
            "tokenizer/ text_encoder/ vae/ unet/ scheduler/"
        ) from None


def _has_subfolder(source: str, subfolder: str, revision: str | None) -> bool:
    local = Path(source)
    if local.is_dir():
        return (local / subfolder).is_dir()
    from huggingface_hub import hf_hub_download

    try:
        index = hf_hub_download(source, "model_index.json", revision=revision)
    except Exception as error:  # any hub or cache failure ends in the one-line error above
        raise OSError(str(error)) from None
    return subfolder in json.loads(Path(index).read_text())
