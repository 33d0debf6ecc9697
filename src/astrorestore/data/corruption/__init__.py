"""Noise models and detector artefacts applied to whole batches of clean images."""
