"""Triton Python-backend entry point of the model ``l2p`` (written as ``model.py`` by ``l2p triton-repo``).

The backend stub embeds its own Python and ignores ``PYTHONPATH`` (and a virtualenv), so the
folders named in the ``l2p_sys_path`` parameter (``l2p serve`` sets it to where it found l2p) go
first on ``sys.path`` before l2p is imported. In NVIDIA's Triton containers, install l2p into the
container's Python instead. Everything else lives in :mod:`l2p.serve.backend`.
"""

import json
import os
import sys


def _add_paths(model_config):
    value = model_config.get("parameters", {}).get("l2p_sys_path", {}).get("string_value", "")
    for path in reversed([p for p in value.split(os.pathsep) if p]):
        if path not in sys.path:
            sys.path.insert(0, path)


class TritonPythonModel:
    def initialize(self, args):
        _add_paths(json.loads(args["model_config"]))
        try:
            from l2p.serve.backend import L2PModel
        except ImportError as e:
            raise ImportError(f"the model 'l2p' needs the l2p package in the Python that runs Triton's backend stub "
                              f"({sys.executable}): {e}; install it there (pip install l2p) or serve with `l2p serve`"
                              ) from e
        import triton_python_backend_utils as pb_utils

        self.impl = L2PModel(args, pb_utils)

    def execute(self, requests):
        return self.impl.execute(requests)
