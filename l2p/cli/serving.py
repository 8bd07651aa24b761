"""Options shared by ``l2p triton-repo`` and ``l2p serve``: the repository settings."""

from __future__ import annotations

import argparse

from ..sampling.settings import METHOD_CHOICES


def add_repo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", metavar="BUNDLE", help="the bundle folder to serve")
    p.add_argument("--method", default="full", metavar="METHOD",
                   help=f"default method of requests that name none ({', '.join(METHOD_CHOICES)})")
    p.add_argument("--full-steps", type=int, metavar="M", help="default budget of the default method")
    p.add_argument("--steps", type=int, metavar="N", help="default step count (the predictor's for l2p:NAME, else 50)")
    p.add_argument("--backend", default="onnxruntime",
                   help="onnxruntime (CPU instances), or onnxruntime-cuda / tensorrt (GPU instances)")
    p.add_argument("--instances", type=int, default=1, metavar="N",
                   help="model instances per device (instance group count)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="requests Triton batches into one execute call")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads per engine (default: all cores)")
    p.add_argument("--guidance", type=float, default=3.5, help="FLUX guidance embedding (guidance-distilled models)")


def repo_settings(a: argparse.Namespace) -> object:
    """The parsed options -> :class:`~l2p.serve.repository.RepoSettings` (validated there)."""
    from ..serve.repository import RepoSettings

    return RepoSettings(method=a.method, full_steps=a.full_steps, steps=a.steps, backend=a.backend,
                        instances=a.instances, max_batch=a.max_batch, threads=a.threads, guidance=a.guidance)
