"""Comparisons of a bundle against a reference.

- :mod:`l2p.validation.backends`: a GPU backend (TensorRT, ONNX Runtime CUDA/TensorRT EP) against
  ONNX Runtime CPU on the same graphs (torch-free; ``l2p validate --backend ...``);
- :mod:`l2p.validation.pytorch`: the bundle's graphs and a whole sampling run against the PyTorch
  model and diffusers' pipeline (needs torch; ``l2p validate --model ...``).

The error measures themselves live in :mod:`l2p.metrics` (torch-free code uses them too).
"""
