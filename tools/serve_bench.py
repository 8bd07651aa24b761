#!/usr/bin/env python
"""Throughput and latency of the served model ``l2p``: full compute vs. a cached method.

    l2p serve BUNDLE &                                              # or tritonserver on a repository
    python tools/serve_bench.py --url 127.0.0.1:8001 --protocol grpc --method l2p:default --full-steps 10
    python tools/serve_bench.py --bundle BUNDLE --method taylorseer2 --full-steps 10   # starts its own server

Per method and concurrency (1, 4, 16 clients, each with its own connection, sending requests
back to back): images/s over the whole level and p50/p95 of the request latency as the client
sees it. Each level sends ``--requests`` requests (at least two per client) after one warm-up
request per method. Conditioning: prompts (``--prompts FILE``, or the built-in captions) for
bundles with text encoders, rows of ``--conditioning COND.npz`` otherwise; seeds 0, 1, 2...
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from l2p.serve.client import infer_inputs, request_arrays  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server's HTTP (8000) or gRPC (8001) address, host:port")
    where.add_argument("--bundle", help="start a server for this bundle on free loopback ports for the run")
    p.add_argument("--protocol", default="grpc", choices=["http", "grpc"])
    p.add_argument("--method", default="taylorseer2", help="the cached method to compare with full compute")
    p.add_argument("--full-steps", type=int, help="its budget (presets need one)")
    p.add_argument("--steps", type=int, help="steps per image (default: the server's)")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    p.add_argument("--prompts", help="text file, one prompt per line (bundles with text encoders)")
    p.add_argument("--conditioning", help="COND.npz (bundles without text encoders)")
    p.add_argument("--instances", type=int, default=1, help="with --bundle: model instances")
    return p.parse_args(argv)


def request_pool(meta: dict[str, Any], args: argparse.Namespace) -> list[dict[str, np.ndarray]]:
    """One request's conditioning per entry (a prompt or a condition row)."""
    names = [t["name"] for t in meta["inputs"]]
    if "prompt" in names:
        if args.prompts:
            prompts = [ln.strip() for ln in Path(args.prompts).read_text().splitlines() if ln.strip()]
        else:
            from l2p.tinymodel.data import all_captions

            prompts = all_captions()[:16]
        return [{"prompt": p} for p in prompts]
    if not args.conditioning:
        sys.exit(f"this model takes conditioning arrays {names[:names.index('seed')]}: give --conditioning COND.npz")
    from l2p.atomic import load_npz

    cond = load_npz(args.conditioning)
    rows = len(next(iter(cond.values())))
    return [{"cond": {k: v[r:r + 1].astype(np.float32) for k, v in cond.items()}} for r in range(rows)]


def run_level(mod: Any, url: str, pool: list[dict[str, Any]], options: dict[str, Any], clients: int,
              requests: int) -> tuple[float, list[float]]:
    """``requests`` requests from ``clients`` threads; returns (wall seconds, latencies)."""
    work: queue.Queue[int] = queue.Queue()
    for i in range(requests):
        work.put(i)
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        c = mod.InferenceServerClient(url)
        try:
            while True:
                try:
                    i = work.get_nowait()
                except queue.Empty:
                    return
                inputs = infer_inputs(mod, request_arrays(i, **pool[i % len(pool)], **options))
                t0 = time.perf_counter()
                c.infer("l2p", inputs)
                with lock:
                    latencies.append(time.perf_counter() - t0)
        except BaseException as e:  # reported by the caller
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"a request failed: {errors[0]}")
    return wall, latencies


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    mod = grpc if args.protocol == "grpc" else http
    levels = [int(c) for c in args.concurrency.split(",")]
    with ExitStack() as stack:
        url = args.url
        if args.bundle:
            from l2p.serve.local import local_server
            from l2p.serve.repository import RepoSettings
            from l2p.serve.tritonserver import Ports, free_ports

            server = stack.enter_context(local_server(args.bundle, RepoSettings(instances=args.instances,
                                                                                 max_batch=max(levels)),
                                                      Ports(*free_ports()), log=lambda s: None))
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
        probe = mod.InferenceServerClient(url)
        meta = probe.get_model_metadata("l2p", as_json=True) if mod is grpc else probe.get_model_metadata("l2p")
        probe.close()
        pool = request_pool(meta, args)
        steps = {"steps": args.steps} if args.steps else {}
        cached = {"method": args.method, **({"full_steps": args.full_steps} if args.full_steps else {}), **steps}
        methods = [("full", {"method": "full", **steps}), (args.method, cached)]
        print(f"{'method':<16} {'clients':>7} {'requests':>8} {'images/s':>9} {'p50 ms':>9} {'p95 ms':>9}")
        for name, options in methods:
            run_level(mod, url, pool, options, 1, 1)  # warm-up: engines, forecaster
            for clients in levels:
                n = max(args.requests, 2 * clients)
                wall, lat = run_level(mod, url, pool, options, clients, n)
                ms = np.percentile(np.array(lat) * 1000, [50, 95])
                print(f"{name:<16} {clients:>7} {n:>8} {n / wall:>9.2f} {ms[0]:>9.1f} {ms[1]:>9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
