"""Shapes of the toy latent diffusion model: small enough to pretrain on two CPU cores.

The VAE halves the resolution (32×32×3 → 16×16×4) because at f4 the probe lost 5 dB of
reconstruction; its channels (32/64) are half the probe's (64/128): a quarter of the compute,
which buys the step budget a sharp reconstruction needs within the 90-minute pretraining.
The UNet goes down to 4×4 and attends to text at 8×8 and 4×4, where attention is cheap: a
two-level 1 M UNet (attention at 8×8 only) drew the named shape in 29% of samples, as the
shape is a global property of the image that its 8×8 level saw through one block.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

RESOLUTION = 32
LATENT_CHANNELS = 4
TEXT_WIDTH = 64
MAX_LENGTH = 77


def build_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=32,
        sample_size=RESOLUTION,
        force_upcast=False,
    )


def build_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A 2-layer CLIP text encoder whose special ids are the tokenizer's."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=RESOLUTION // 2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def build_scheduler() -> DDPMScheduler:
    """Stable Diffusion's training schedule; samplers (DDIM) are built from its config."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="epsilon",
        steps_offset=1,
    )
