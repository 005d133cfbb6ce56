"""``aed serve``: serve a model on Triton Inference Server (PyTriton), or export a Triton model repository.

Streams stay with the clients (``--engine triton --server URL`` on ``detect``, ``listen``, ``monitor``, ``profile``);
only windows go to the server, which batches them across clients. Needs the ``serve`` extra.

Also runnable as ``python -m apps.cmd_serve ...`` (the same options).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Sequence

from apps.errors import UserError

__all__ = ["register", "run", "main"]


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a model on Triton Inference Server, or export a Triton model repository",
                       description="Start a real Triton Inference Server (PyTriton) for the model on this machine, "
                                   "with dynamic batching; the project's own engine runs every batch. Prints one "
                                   "'ready' line with the URLs when the model is ready; Ctrl-C (SIGINT) or SIGTERM "
                                   "stops it. With --export-repo DIR, write a standard Triton model repository "
                                   "(config.pbtxt + 1/model.onnx) for the official Triton container instead.")
    _add_args(p)
    p.set_defaults(func=run)


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", help="checkpoint directory, .onnx or .plan (default: the shipped model)")
    p.add_argument("--engine", choices=("onnxruntime", "torch", "tensorrt"), default="onnxruntime",
                   help="the engine that runs each batch on the server (default: onnxruntime)")
    p.add_argument("--name", metavar="NAME", help="model name clients ask for (default: from --model, e.g. "
                                                  "aed_default)")
    p.add_argument("--host", default="0.0.0.0", help="address to bind (default: 0.0.0.0, every interface)")
    p.add_argument("--http-port", type=int, default=8000, metavar="N", help="HTTP port (default 8000; 0: a free one)")
    p.add_argument("--grpc-port", type=int, default=8001, metavar="N", help="gRPC port (default 8001; 0: a free one)")
    p.add_argument("--metrics-port", type=int, default=8002, metavar="N",
                   help="Prometheus metrics port (default 8002; 0: a free one)")
    p.add_argument("--max-batch", type=int, default=64, metavar="B", help="most windows per batch (default 64)")
    p.add_argument("--max-queue-delay-ms", type=float, default=5.0, metavar="MS",
                   help="how long the dynamic batcher waits to fill a batch (default 5 ms)")
    p.add_argument("--instances", type=int, default=1, metavar="N",
                   help="model instances running batches concurrently, one engine each (default 1)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per instance's engine (default 1)")
    p.add_argument("--export-repo", metavar="DIR", help="write a Triton model repository to DIR and exit")
    p.add_argument("--overwrite", action="store_true", help="with --export-repo: replace an existing entry")


def run(args: argparse.Namespace) -> int:
    from engines import default_model_path

    model = args.model or default_model_path()
    if args.export_repo:
        return _export(args, model)
    from engines.triton_serve import TritonServer

    try:
        server = TritonServer(model, engine=args.engine, model_name=args.name, host=args.host,
                              http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                              max_batch=args.max_batch, max_queue_delay_ms=args.max_queue_delay_ms,
                              instances=args.instances, threads=args.threads)
    except ValueError as e:
        raise UserError(str(e)) from e
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print("aed serve: ready " + json.dumps({"model": server.model_name, "grpc": server.grpc_url,
                                                "http": server.http_url, "metrics": server.metrics_url,
                                                "max_batch": server.max_batch, "instances": server.instances}),
              flush=True)
        while not stop.wait(0.5):
            if not server.running:
                print("aed serve: error: the Triton server exited", file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        server.stop()
        for s, h in old.items():
            signal.signal(s, h)
        print("aed serve: stopped", flush=True)


def _export(args: argparse.Namespace, model) -> int:
    from engines.triton_repo import export_repository

    try:
        pbtxt = export_repository(model, args.export_repo, model_name=args.name, max_batch=args.max_batch,
                                  max_queue_delay_ms=args.max_queue_delay_ms, instances=args.instances,
                                  overwrite=args.overwrite)
    except ValueError as e:
        raise UserError(str(e)) from e
    print(pbtxt.parent)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m apps.cmd_serve``: the same as ``aed serve`` before the CLI lists it."""
    from apps import cli

    parser = argparse.ArgumentParser(prog="aed serve")
    _add_args(parser)
    args = parser.parse_args(argv)
    args.command, args.verbose, args.func = "serve", 0, run
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (UserError, ValueError) as e:
        print(f"aed serve: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, UserError) else 1
    except (cli.AedError, OSError) as e:
        print(f"aed serve: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
