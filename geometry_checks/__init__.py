"""geometry-checks: layer-by-layer geometry of sentence-embedding models, as pytest checks."""

__version__ = "0.1.0"
