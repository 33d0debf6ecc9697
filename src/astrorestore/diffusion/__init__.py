"""Diffusion pieces kept apart, as diffusers does: the noise schedule, the sampler loop."""
