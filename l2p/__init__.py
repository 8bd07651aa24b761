"""l2p: deployable diffusion-transformer sampling with a learned linear feature predictor."""

__version__ = "0.1.0"
