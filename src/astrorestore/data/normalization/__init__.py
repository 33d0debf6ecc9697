"""Exactly invertible normalisers between physical units and the network's numbers."""
