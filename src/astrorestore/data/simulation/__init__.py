"""Simulated deep fields: scenes of stars and galaxies, and their PSFs."""
