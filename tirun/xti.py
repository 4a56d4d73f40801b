"""Extended Textual Inversion (P+, Voynov, Chu, Cohen-Or, Aberman 2023): one token per
cross-attention layer of the UNet, trained jointly (`word.per_layer=true`).

Every cross-attention layer reads the prompt written with its own token: the prompt is encoded
once per layer (one batched text-encoder call) and each layer's attention processor takes its
layer's states from ``cross_attention_kwargs["per_layer_states"]`` [layers, batch, tokens,
width]. A word is saved in a file of its own (`learned_embeds_xti.safetensors`, one row per
layer, the layer names in its metadata), and `load_into_pipeline` makes a stock diffusers
pipeline draw with it: the layer tokens go in through the pipeline's own
`load_textual_inversion`, the processors are installed on its UNet, and
`pipeline_kwargs` turns prompts into `prompt_embeds` and the per-layer states.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "tirun-xti"
FILE_NAME = "learned_embeds_xti.safetensors"


class PerLayerProcessor(AttnProcessor2_0):
    """SDPA attention whose cross-attention reads its own layer's text states when given."""

    def __init__(self, layer: int | None) -> None:
        super().__init__()
        self.layer = layer

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        per_layer_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.layer is not None and per_layer_states is not None:
            encoder_hidden_states = per_layer_states[self.layer]
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def cross_attention_layers(unet) -> list[str]:
    """The UNet's cross-attention layers (`...attn2`), in the order the UNet runs them."""
    return [name.removesuffix(".processor") for name in unet.attn_processors if ".attn2." in name]


@torch.no_grad()
def layer_sizes(unet) -> dict[str, int]:
    """Each cross-attention layer's number of positions (height × width of its feature map),
    read off one forward pass of ``unet`` on zeros."""
    sizes: dict[str, int] = {}
    hooks = [
        module.register_forward_hook(
            lambda mod, args, out, name=name: sizes.setdefault(name, args[0].shape[1])
        )
        for name, module in unet.named_modules()
        if name in set(cross_attention_layers(unet))
    ]
    try:
        side = unet.config.sample_size
        side = side if isinstance(side, int) else side[0]
        param = next(unet.parameters())
        latents = torch.zeros(
            1, unet.config.in_channels, side, side, device=param.device, dtype=param.dtype
        )
        text = torch.zeros(
            1, 77, unet.config.cross_attention_dim, device=param.device, dtype=param.dtype
        )
        added = None
        if unet.config.addition_embed_type == "text_time":  # SDXL's pooled text and size ids
            pooled = (
                unet.config.projection_class_embeddings_input_dim
                - 6 * unet.config.addition_time_embed_dim
            )
            added = {"text_embeds": torch.zeros(1, pooled, device=param.device, dtype=param.dtype),
                     "time_ids": torch.zeros(1, 6, device=param.device, dtype=param.dtype)}  # fmt: skip
        unet(
            latents,
            torch.zeros(1, dtype=torch.long, device=param.device),
            text,
            added_cond_kwargs=added,
        )
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def install(unet) -> list[str]:
    """Per-layer processors on every attention of ``unet``; returns the cross-attention layers."""
    layers = cross_attention_layers(unet)
    index = {name: i for i, name in enumerate(layers)}
    unet.set_attn_processor(
        {
            name: PerLayerProcessor(index.get(name.removesuffix(".processor")))
            for name in unet.attn_processors
        }
    )
    return layers


def layer_tokens(token: str, count: int) -> list[str]:
    """The word's token for each layer: ``<w>`` for the first, ``<w>_l1`` … for the others."""
    return [token] + [f"{token}_l{i}" for i in range(1, count)]


def per_layer_prompts(prompts: list[str], tokens: list[str], count: int) -> list[str]:
    """Layer-major: every prompt with each of ``tokens`` (XTI words of ``count`` layers) written
    as layer 0's token, then as layer 1's, …; a prompt without them is the same in every layer."""
    layered = []
    for layer in range(count):
        for prompt in prompts:
            for token in tokens:
                prompt = prompt.replace(token, layer_tokens(token, count)[layer])
            layered.append(prompt)
    return layered


@dataclass
class XTIWord:
    token: str
    vectors: torch.Tensor  # [layers, width]
    layers: list[str]
    step: int | None = None


def save(word: XTIWord, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "token": word.token, "layers": json.dumps(word.layers)}
    if word.step is not None:
        meta["step"] = str(word.step)
    save_file({word.token: word.vectors.detach().float().cpu().contiguous()}, str(path), meta)
    return path


def is_xti_file(path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except Exception:
        return False


def load(path: str | Path) -> XTIWord:
    """Read an XTI word file, or a one-line ValueError."""
    if not is_xti_file(path):
        raise ValueError(f"{path} is not an XTI word file (safetensors with format={FORMAT})")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        token = meta["token"]
        vectors = f.get_tensor(token)
    layers = json.loads(meta["layers"])
    if vectors.ndim != 2 or vectors.shape[0] != len(layers):
        raise ValueError(f"{path}: {tuple(vectors.shape)} rows for {len(layers)} layers")
    return XTIWord(token, vectors, layers, int(meta["step"]) if "step" in meta else None)


def load_into_pipeline(pipe, path: str | Path, token: str | None = None) -> str:
    """Make a stock SD 1.x/2.x pipeline draw with an XTI word; returns its token. Prompts then
    go through `pipeline_kwargs`."""
    word = load(path)
    if getattr(pipe, "text_encoder_2", None) is not None:
        raise ValueError("XTI words load into SD 1.x/2.x pipelines (one text encoder)")
    layers = cross_attention_layers(pipe.unet)
    if layers != word.layers:
        raise ValueError(
            f"{path} was learned for {len(word.layers)} cross-attention layers; this UNet has "
            f"{len(layers)}: load it into the model it was learned on"
        )
    token = token or word.token
    names = layer_tokens(token, len(layers))
    pipe.load_textual_inversion(
        [{name: row} for name, row in zip(names, word.vectors, strict=True)],
        token=names,
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
    )
    install(pipe.unet)
    pipe.tirun_xti = {**getattr(pipe, "tirun_xti", {}), token: len(layers)}
    return token


def _encode(pipe, prompts: list[str]) -> torch.Tensor:
    ids = pipe.tokenizer(
        prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    ).input_ids.to(pipe.text_encoder.device)  # fmt: skip
    return pipe.text_encoder(ids)[0]


@torch.no_grad()
def pipeline_kwargs(pipe, prompts: list[str], guidance: float, negative: str = "") -> dict:
    """`prompt_embeds`, `negative_prompt_embeds` and the per-layer states for ``prompts`` on a
    pipeline with XTI words loaded (the classifier-free batch order is the pipeline's:
    negative first)."""
    words = getattr(pipe, "tirun_xti", {})
    count = len(cross_attention_layers(pipe.unet))
    layered = per_layer_prompts(prompts, list(words), count)
    states = _encode(pipe, layered).view(
        count, len(prompts), -1, pipe.text_encoder.config.hidden_size
    )
    negative_states = _encode(pipe, [negative] * len(prompts))
    per_layer = states
    if guidance > 1:
        per_layer = torch.cat(
            [negative_states.expand(count, *negative_states.shape), states], dim=1
        )
    return {
        "prompt_embeds": states[0],
        "negative_prompt_embeds": negative_states,
        "cross_attention_kwargs": {"per_layer_states": per_layer},
    }
