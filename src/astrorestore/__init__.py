"""astrorestore: deep-learning restoration of astronomical images."""

__version__ = "0.1.0"
