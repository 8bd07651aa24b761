"""Serving bundles on NVIDIA Triton Inference Server. Torch-free.

- :mod:`.contract`: the served model ``l2p``'s inputs and outputs, derived from a bundle.
- :mod:`.jobs`: one request's arrays -> a validated job -> one sampling run (the only call into
  :mod:`l2p.sampling`).
- :mod:`.backend`: the Python-backend model class that runs inside Triton's stub process.
- :mod:`.triton_model`: the ``model.py`` file written into the repository (finds l2p, delegates).
- :mod:`.repository`: ``l2p triton-repo``: writes a Triton model repository.
- :mod:`.stubenv`: the Python environment the backend stub runs in under ``l2p serve``.
- :mod:`.tritonserver`: finds the ``tritonserver`` binary, starts and stops it (``l2p serve``).
"""
