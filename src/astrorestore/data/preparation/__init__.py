"""Preparing a FITS folder once: manifest, split, tile cache, whole-frame statistics, QC."""
