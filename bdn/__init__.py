"""bdn: a node-local, tiered, range-streaming cache for ML model weights."""

__version__ = "0.1.0"
