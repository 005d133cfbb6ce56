"""Serve a model on a real Triton Inference Server through PyTriton, the project's own engine as its backend.

PyTriton (``nvidia-pytriton``, the ``serve`` extra) bundles the ``tritonserver`` binary and its Python backend. The
server process takes HTTP/gRPC requests, batches them (dynamic batching) and hands each batch to an inference
callable that runs here, in this process, on the project's ONNX Runtime (or torch, or TensorRT) engine: one engine
per instance. The aed model config travels with the served model as its Triton model config's ``aed_config``
parameter, so a client (:class:`engines.triton_engine.TritonEngine`) needs no local copy of the model.

Example:
    >>> from engines.triton_serve import TritonServer                                    # doctest: +SKIP
    >>> with TritonServer("models/pretrained/aed_default", http_port=0, grpc_port=0, metrics_port=0) as srv:
    ...     print(srv.grpc_url)       # grpc://127.0.0.1:40123/aed_default                 # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import sysconfig
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from engines.base import EngineError, missing_dependency, resolve_model_path
from realtime.config import check_number
from realtime.errors import ConfigError

__all__ = ["TritonServer", "AED_CONFIG_PARAMETER", "INPUT_NAME", "OUTPUT_NAMES", "model_name_for", "free_port",
           "python_libdir_env"]

log = logging.getLogger(__name__)

#: The Triton model-config parameter that carries the aed model config (JSON of ``ModelConfig.to_dict()``).
AED_CONFIG_PARAMETER = "aed_config"
#: Tensor names on the wire: the exported ONNX graph's own names.
INPUT_NAME = "fbank"
OUTPUT_NAMES = ("scores", "frame_scores")
SERVE_ENGINES = ("onnxruntime", "torch", "tensorrt")


def _import_pytriton() -> Any:
    try:
        import pytriton.triton as pt
    except ImportError as e:
        raise missing_dependency("pytriton", "aed serve", e) from e
    return pt


def model_name_for(model_path: str | Path) -> str:
    """The served model's name: a checkpoint directory's name, or a model file's stem, in Triton's alphabet."""
    p = Path(model_path)
    name = p.name if p.is_dir() else p.stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return name or "aed"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the kernel reports free now (ephemeral); a port given as 0 is resolved through this."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def python_libdir_env() -> Iterator[None]:
    """``LD_LIBRARY_PATH`` with this interpreter's own ``LIBDIR`` first, for as long as the server starts.

    Triton's Python-backend stub links ``libpython3.X.so`` through the loader path; an interpreter built elsewhere
    than the system Python (pyenv, conda) would otherwise get the system library against its own standard library,
    and the stub fails (``'_thread.RLock' object has no attribute '_recursion_count'``). PyTriton copies
    ``os.environ`` when it starts the server, so the variable is set around that and restored after.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    old = os.environ.get("LD_LIBRARY_PATH")
    if libdir:
        os.environ["LD_LIBRARY_PATH"] = libdir + (":" + old if old else "")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = old


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as a server binds: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _check_port(name: str, port: int) -> None:
    check_number(name, port, 0, 65535, "(0: a free ephemeral port)", integer=True)


class TritonServer:
    """A Triton Inference Server serving one aed model, with dynamic batching; started and stopped by this handle.

    Args:
        model_path: a checkpoint directory (with ``model.onnx`` for ONNX Runtime), an ``.onnx`` or a ``.plan`` file.
        engine: the backend the server's inference callable runs: ``onnxruntime`` (default), ``torch``, ``tensorrt``.
        model_name: the name clients ask for (default: from ``model_path``, e.g. ``aed_default``).
        host: the address the HTTP, gRPC and metrics endpoints bind to (``0.0.0.0``: every interface).
        http_port, grpc_port, metrics_port: the ports; 0 picks a free ephemeral port (see :attr:`ports`).
        max_batch: the most windows one batch may hold, whether one request or several batched together.
        max_queue_delay_ms: how long the dynamic batcher holds a request to gather a larger batch.
        instances: model instances, each with its own engine, running batches concurrently.
        threads: CPU threads per engine instance.
        log_verbose: Triton's verbose-log level (0: quiet).
        delay_per_window_s: a test and benchmark hook, off (0) by default: every batch sleeps this many seconds per
            window in it before it is scored, to simulate a slow server (0.15 s per 0.1 s hop is 1.5x slower than
            real time). The attribute :attr:`delay_per_window_s` may be changed while the server runs.
    """

    def __init__(self, model_path: str | Path, *, engine: str = "onnxruntime", model_name: str | None = None,
                 host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002,
                 max_batch: int = 64, max_queue_delay_ms: float = 5.0, instances: int = 1, threads: int = 1,
                 log_verbose: int = 0, delay_per_window_s: float = 0.0) -> None:
        if engine not in SERVE_ENGINES:
            raise ConfigError(f"the served engine must be one of {', '.join(SERVE_ENGINES)}, got {engine!r}")
        for name, port in (("http_port", http_port), ("grpc_port", grpc_port), ("metrics_port", metrics_port)):
            _check_port(name, port)
        check_number("max_batch", max_batch, 1, 4096, "windows", integer=True)
        check_number("max_queue_delay_ms", max_queue_delay_ms, 0.0, 10_000.0, "ms")
        check_number("instances", instances, 1, 64, "", integer=True)
        check_number("threads", threads, 0, 256, "", integer=True)
        check_number("delay_per_window_s", delay_per_window_s, 0.0, 60.0, "seconds")
        self.model_path = resolve_model_path(model_path).path
        self.engine_kind = engine
        self.model_name = model_name or model_name_for(self.model_path)
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.model_name):
            raise ConfigError(f"model name {self.model_name!r} may hold only letters, digits, '.', '_' and '-'")
        self.host = host
        self.max_batch = int(max_batch)
        self.max_queue_delay_ms = float(max_queue_delay_ms)
        self.instances = int(instances)
        self.threads = int(threads)
        self.log_verbose = int(log_verbose)
        self.delay_per_window_s = float(delay_per_window_s)   # test/benchmark hook: a slow server (0: off)
        self._requested_ports = {"http": int(http_port), "grpc": int(grpc_port), "metrics": int(metrics_port)}
        self.ports: dict[str, int] = {}
        self.engines: list[Any] = []
        self.config = None
        self.batches = 0            # batches the inference callables ran (all instances)
        self.windows = 0            # windows in them
        self._count_lock = threading.Lock()
        self._triton = None

    # -- URLs ----------------------------------------------------------------------------------
    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self._client_host}:{self.ports['grpc']}/{self.model_name}"

    @property
    def http_url(self) -> str:
        return f"http://{self._client_host}:{self.ports['http']}/{self.model_name}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.ports['metrics']}/metrics"

    @property
    def running(self) -> bool:
        return self._triton is not None and self._triton.is_alive()

    # -- life cycle ----------------------------------------------------------------------------
    def _make_engines(self) -> None:
        from engines import create_engine

        for _ in range(self.instances):
            self.engines.append(create_engine(self.engine_kind, self.model_path, threads=self.threads,
                                              max_batch=self.max_batch))
        first = self.engines[0]
        self.config = first.config
        self.has_frames = bool(getattr(first, "has_frames", False))

    def _infer_fn(self, engine: Any):
        from pytriton.decorators import batch

        frames = self.has_frames

        @batch
        def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
            x = inputs[INPUT_NAME]                           # (B, T, F): the requests of one batch, stacked
            with self._count_lock:
                self.batches += 1
                self.windows += int(x.shape[0])
            if self.delay_per_window_s > 0:                 # the slow-server hook; off unless asked for
                time.sleep(self.delay_per_window_s * int(x.shape[0]))
            if frames:
                clip, frame_scores = engine.infer_frames(x)  # (B, C), (B, T', C)
                return {"scores": clip, "frame_scores": frame_scores}
            return {"scores": engine.infer(x)}

        return infer

    def start(self) -> "TritonServer":
        """Load the engines, start ``tritonserver`` and wait until the model is ready.

        Raises:
            MissingDependencyError: PyTriton is not installed (the ``serve`` extra).
            EngineError: the server did not come up (a port in use, a broken install); the message says which.
        """
        if self._triton is not None:
            return self
        pt = _import_pytriton()
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

        self.ports = {k: (v or free_port(self._client_host)) for k, v in self._requested_ports.items()}
        busy = [f"{k} port {v}" for k, v in self.ports.items() if _port_in_use(self.host, v)]
        if busy:   # tritonserver would exit at once, and PyTriton wait two minutes for it to get ready
            raise EngineError(f"cannot serve {self.model_name!r} on {self.host}: {', '.join(busy)} already in use "
                              "(another server?); choose other ports (0: a free one)")
        self._make_engines()
        cfg = pt.TritonConfig(http_address=self.host, http_port=self.ports["http"], grpc_address=self.host,
                              grpc_port=self.ports["grpc"], metrics_address=self.host,
                              metrics_port=self.ports["metrics"], allow_gpu_metrics=False,
                              log_verbose=self.log_verbose, exit_timeout_secs=5, strict_readiness=True)
        triton = pt.Triton(config=cfg)
        c = len(self.config.labels)
        outputs = [Tensor(name="scores", dtype=np.float32, shape=(c,))]
        if self.has_frames:
            outputs.append(Tensor(name="frame_scores", dtype=np.float32, shape=(-1, c)))
        delay_us = int(round(self.max_queue_delay_ms * 1000))
        try:
            triton.bind(model_name=self.model_name, infer_func=[self._infer_fn(e) for e in self.engines],
                        inputs=[Tensor(name=INPUT_NAME, dtype=np.float32, shape=(-1, self.config.num_mel_bins))],
                        outputs=outputs,
                        config=ModelConfig(max_batch_size=self.max_batch,
                                           batcher=DynamicBatcher(max_queue_delay_microseconds=delay_us)))
            self._add_parameter(triton, AED_CONFIG_PARAMETER, json.dumps(self.config.to_dict()))
            with python_libdir_env():
                triton.run()
        except Exception as e:  # noqa: BLE001 - PyTriton raises its own and sh's types; one line names the ports
            try:
                triton.stop()
            finally:
                self._close_engines()
            raise EngineError(f"the Triton server for {self.model_name!r} did not start on {self.host} (http "
                              f"{self.ports['http']}, grpc {self.ports['grpc']}, metrics {self.ports['metrics']}): "
                              f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") \
                from e
        self._triton = triton
        log.info("Triton serves %r at %s and %s", self.model_name, self.grpc_url, self.http_url)
        return self

    def _add_parameter(self, triton: Any, key: str, value: str) -> None:
        """Put ``key: value`` into the bound model's Triton config ``parameters`` (PyTriton has no public way)."""
        models = list(triton._model_manager.models)          # noqa: SLF001 - PyTriton 0.7: no public hook
        for m in models:
            m._get_triton_model_config().backend_parameters[key] = value  # noqa: SLF001

    def wait(self, timeout: float | None = None) -> bool:
        """Block while the server runs (at most ``timeout`` seconds); True when it has stopped."""
        ev = threading.Event()
        step = 0.5
        waited = 0.0
        while self.running:
            if timeout is not None and waited >= timeout:
                return False
            ev.wait(step)
            waited += step
        return True

    def stop(self) -> None:
        """Stop the server (in-flight requests get a few seconds) and close the engines; safe to call twice."""
        triton, self._triton = self._triton, None
        try:
            if triton is not None:
                triton.stop()
        finally:
            self._close_engines()

    def _close_engines(self) -> None:
        for e in self.engines:
            try:
                e.close()
            except Exception:  # noqa: BLE001 - closing is best effort; the server is already down
                log.debug("closing an engine failed", exc_info=True)
        self.engines = []

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"grpc {self.ports.get('grpc')}, http {self.ports.get('http')}" if self.ports else "not started"
        return f"TritonServer(model={self.model_name!r}, engine={self.engine_kind}, {where})"

