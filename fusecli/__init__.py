"""fusecli: HDR fusion of exposure brackets with a learned per-pixel weighting network."""

__version__ = "0.1.0"
