"""The latent diffusion objective a word is trained on (and the toy model pretrained on): the
UNet's error in predicting the scheduler's target from the noised latents, under the prompts'
conditioning."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr

from tirun.models import Components


def ldm_loss(
    components: Components,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    input_ids: list[torch.Tensor],
    weight_dtype: torch.dtype,
    min_snr_gamma: float | None = None,
    weights: torch.Tensor | None = None,
    layers: int = 0,
) -> torch.Tensor:
    """The latent diffusion loss of the prompts' conditioning: MSE of the UNet's prediction to
    the scheduler's target, per sample (over the mask where ``weights`` [B, 1, h, w] are given,
    so the word learns the object and not its background; min-SNR weighted if asked),
    averaged over the batch. With ``layers`` (XTI) the ids are layer-major, one prompt per
    layer per sample, and each cross-attention layer reads its own."""
    noisy = components.scheduler.add_noise(latents, noise, timesteps).to(weight_dtype)
    hidden, added = components.encode_prompt(input_ids)
    extra = {}
    if layers:
        batch = len(latents)
        extra = {"per_layer_states": hidden.view(layers, batch, *hidden.shape[1:])}
        hidden = hidden[:batch]
        added = {k: v[:batch] for k, v in added.items()} if added else None
    pred = components.unet(
        noisy, timesteps, hidden, added_cond_kwargs=added, cross_attention_kwargs=extra or None
    ).sample
    target = diffusion_target(components, latents, noise, timesteps)
    error = F.mse_loss(pred.float(), target.float(), reduction="none")
    if weights is None:
        loss = error.mean(dim=(1, 2, 3))
    else:
        weights = weights.to(error.dtype)
        covered = (weights.sum(dim=(1, 2, 3)) * error.shape[1]).clamp(min=1e-8)
        loss = (error * weights).sum(dim=(1, 2, 3)) / covered
    if min_snr_gamma:
        loss = loss * min_snr_weights(
            components.scheduler, timesteps, min_snr_gamma, components.prediction_type
        )
    return loss.mean()


def diffusion_target(
    components: Components, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet is trained to predict: the noise, or v = α_t·ε − σ_t·x0."""
    if components.prediction_type == "v_prediction":
        return components.scheduler.get_velocity(latents, noise, timesteps)
    return noise


def min_snr_weights(
    scheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023): min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR+1) for v."""
    snr = compute_snr(scheduler, timesteps)
    if prediction_type == "v_prediction":
        return snr.clamp(max=gamma) / (snr + 1)
    return snr.clamp(max=gamma) / snr
