"""Scores for what a learned word generates.

Modules: ``images`` (PIL ↔ tensors), ``oracle`` (toy world: attribute match rates against
ground truth), ``clip`` and ``dino`` (the paper's protocol on real models), ``background``
(Blended Latent Diffusion: is the unmasked region kept), ``fairness`` (bias: attribute
distribution and its KL divergence to uniform).
"""
