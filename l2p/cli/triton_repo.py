"""``l2p triton-repo``: a Triton Inference Server model repository for a bundle."""

from __future__ import annotations

import argparse

from .serving import add_repo_options, repo_settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("triton-repo", help="write a Triton Inference Server model repository for a bundle",
                       description="Write REPO/l2p (config.pbtxt, a Python-backend model.py running the torch-free "
                       "loop, the bundle) to mount into NVIDIA's Triton container.")
    add_repo_options(r)
    r.add_argument("--out", required=True, metavar="DIR", help="repository folder to write")
    r.add_argument("--reference", action="store_true",
                   help="reference the bundle by absolute path instead of linking/copying it into the repository")
    r.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..serve.repository import write_repository

    out = write_repository(a.bundle, a.out, repo_settings(a), copy_bundle=not a.reference)  # type: ignore[arg-type]
    print(f"wrote Triton model repository {out} (model 'l2p')")
    return 0
