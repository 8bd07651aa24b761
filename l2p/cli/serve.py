"""``l2p serve``: run a real tritonserver on a bundle in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse

from .serving import add_repo_options, repo_settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    v = sub.add_parser("serve", help="serve a bundle with a real tritonserver until Ctrl-C / SIGTERM",
                       description="Write a repository to a temporary folder and run tritonserver in the foreground.")
    add_repo_options(v)
    v.add_argument("--address", default="127.0.0.1", help="address the endpoints listen on")
    v.add_argument("--http-port", type=int, metavar="PORT", default=8000, help="HTTP/REST endpoint port")
    v.add_argument("--grpc-port", type=int, metavar="PORT", default=8001, help="gRPC endpoint port")
    v.add_argument("--metrics-port", type=int, metavar="PORT", default=8002, help="Prometheus metrics port")
    v.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..serve.local import serve
    from ..serve.tritonserver import Ports

    return serve(a.bundle, repo_settings(a), Ports(a.http_port, a.grpc_port, a.metrics_port),  # type: ignore[arg-type]
                 a.address)
