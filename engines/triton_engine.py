"""The ``triton`` engine: inference on a remote Triton Inference Server, through tritonclient (gRPC or HTTP).

The streams stay here (ring, front end, windows, tracker); only ``(B, T, F)`` windows go over the network. The
model's config (labels, front end, input range, detection defaults) comes from the server, as the served model's
``aed_config`` parameter (``aed serve`` and ``aed serve --export-repo`` both put it there), so a client needs no
local copy of the model.

Every request has a timeout. When the server dies mid-stream, the windows it could not score are *lost*: they are
counted (:attr:`TritonEngine.lost_windows`), logged once per outage, and scored as all-zero ("nothing detected"),
so the stream goes on; the engine reconnects (a fresh channel, at most every ``retry_s``) and carries on when the
server is back. ``on_error="raise"`` raises instead.

Example:
    >>> from engines.triton_engine import TritonEngine                                  # doctest: +SKIP
    >>> with TritonEngine("grpc://127.0.0.1:8001/aed_default") as eng:                  # doctest: +SKIP
    ...     scores = eng.infer(np.zeros((4, 100, eng.spec.num_mel_bins), np.float32))   # (4, C)
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from engines.base import EngineBase, EngineError, ModelFileError, missing_dependency
from realtime.config import check_number
from realtime.errors import ConfigError

__all__ = ["TritonEngine", "TritonURL", "parse_url", "ON_ERROR"]

log = logging.getLogger(__name__)

AED_CONFIG_PARAMETER = "aed_config"      # the same key as engines.triton_serve / engines.triton_repo write
INPUT_NAME = "fbank"
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
#: what :meth:`TritonEngine.infer` does with windows the server could not score: count them and score them as
#: all-zero (``"drop"``), or raise :class:`EngineError` (``"raise"``)
ON_ERROR = ("drop", "raise")


@dataclass(frozen=True)
class TritonURL:
    """A parsed ``grpc://host:port/model[/version]`` or ``http://host:port/model[/version]``."""

    scheme: str
    host: str
    port: int
    model: str
    version: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.address}/{self.model}" + (f"/{self.version}" if self.version else "")


def parse_url(url: str) -> TritonURL:
    """Read a server URL; a ConfigError says what is accepted."""
    accepted = "expected grpc://HOST:PORT/MODEL or http://HOST:PORT/MODEL (e.g. grpc://127.0.0.1:8001/aed_default)"
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"Triton server URL {url!r}: {accepted}")
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ConfigError(f"Triton server URL {url!r}: unknown scheme {parts.scheme!r}; {accepted}")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ConfigError(f"Triton server URL {url!r}: the port is not a number from 1 to 65535; {accepted}") from None
    path = [p for p in parts.path.split("/") if p]
    if not parts.hostname or not 1 <= len(path) <= 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError(f"Triton server URL {url!r}: {accepted}")
    return TritonURL(parts.scheme, parts.hostname, int(port), path[0], path[1] if len(path) == 2 else "")


def _import_client(scheme: str) -> Any:
    try:
        if scheme == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
        from tritonclient.utils import InferenceServerException  # noqa: F401 - checked here, used below
    except ImportError as e:
        raise missing_dependency("tritonclient", "the triton engine", e) from e
    return client


def _short(e: BaseException) -> str:
    """An exception as one short line (gRPC and gevent errors carry multi-line debug strings)."""
    msg = getattr(e, "message", None)
    text = msg() if callable(msg) else str(e)
    text = (text or type(e).__name__).strip().splitlines()[0] if (text or "").strip() else type(e).__name__
    return text[:200]


class TritonEngine(EngineBase):
    """Score windows on a remote Triton server; the model config comes from the server.

    Args:
        url: ``grpc://host:port/model`` or ``http://host:port/model`` (optionally ``/version``).
        timeout_s: the most one request may take (connect, inference); a request past it counts as failed.
        connect_timeout_s: the most the checks at start-up and on reconnection may take, per request.
        on_error: one of :data:`ON_ERROR`.
        retry_s: while the server is down, try to reconnect at most this often (windows in between are lost at once,
            so a dead server costs the stream no time).
        max_batch: the most windows per request (default: the server model's ``max_batch_size``).

    Attributes:
        lost_windows: windows the server could not score (counted, scored as zeros), since start.
        outages: times the server went away.
        requests: inference requests sent.
    """

    name = "triton"

    def __init__(self, url: str, *, timeout_s: float = 10.0, connect_timeout_s: float = 3.0, on_error: str = "drop",
                 retry_s: float = 1.0, max_batch: int | None = None, **ignored: Any) -> None:
        self.url = parse_url(url)
        check_number("timeout_s", timeout_s, 0.01, 3600.0, "seconds")
        check_number("connect_timeout_s", connect_timeout_s, 0.01, 3600.0, "seconds")
        check_number("retry_s", retry_s, 0.0, 3600.0, "seconds")
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if ignored:
            log.debug("options %s do not apply to the triton engine", sorted(ignored))
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.on_error = on_error
        self.retry_s = float(retry_s)
        self._mod = _import_client(self.url.scheme)
        from tritonclient.utils import InferenceServerException

        self._server_error = InferenceServerException
        self._local = threading.local()           # one client per thread: the HTTP client is gevent-bound
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self.lost_windows = 0
        self.outages = 0
        self.requests = 0
        self._down_since: float | None = None
        self._next_retry = 0.0
        self._lost_in_outage = 0
        self._frame_counts: dict[int, int] = {}   # T -> T' of the frame head, learnt from answers
        server_cfg = self._connect()
        config, max_b, self._outputs_available = self._read_config(server_cfg)
        if max_batch is not None:
            check_number("max_batch", max_batch, 1, max_b, "windows", integer=True,
                         why=f"the server's model takes at most {max_b} windows per request")
        super().__init__(config, max_batch=max_batch if max_batch is not None else max_b, origin=str(self.url))
        self._frames = "frame_scores" in self._outputs_available
        self._config_json = server_cfg  # what a reconnection must find again
        self._check_spec(server_cfg)
        self.check_output_size(f"model {self.url.model!r} at {self.url}")   # one real request: it answers, it fits

    # -- connection ----------------------------------------------------------------------------
    def _new_client(self) -> Any:
        if self.url.scheme == "grpc":
            c = self._mod.InferenceServerClient(self.url.address)
        else:
            c = self._mod.InferenceServerClient(self.url.address, connection_timeout=self.connect_timeout_s,
                                                network_timeout=self.timeout_s)
        with self._lock:
            self._clients.append(c)
        return c

    def _client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = self._new_client()
        return c

    def _drop_client(self) -> None:
        c = getattr(self._local, "client", None)
        self._local.client = None
        if c is not None:
            with self._lock:
                if c in self._clients:
                    self._clients.remove(c)
            try:
                c.close()
            except Exception:  # noqa: BLE001 - a client of a dead server may fail to close; it is gone either way
                pass

    def _call(self, what: str, fn: str, *args: Any, timeout: float, **kw: Any) -> Any:
        """One request with a timeout; gRPC takes it per call, HTTP from the client's network timeout."""
        c = self._client()
        if self.url.scheme == "grpc":
            kw["client_timeout"] = timeout
        return getattr(c, fn)(*args, **kw)

    def _connect(self) -> dict[str, Any]:
        """Check the server is live and ready and serves the model; return its Triton model config (a dict).

        Raises:
            EngineError: unreachable, not ready, or the model is not ready; one line naming the URL.
            ModelFileError: the server serves no such model, or a model that is not an aed model.
        """
        t = self.connect_timeout_s
        try:
            live = self._call("live", "is_server_live", timeout=t)
        except Exception as e:  # noqa: BLE001 - gRPC/gevent/socket errors: all mean the server is not reachable
            self._drop_client()
            raise EngineError(f"cannot reach the Triton server at {self.url} ({_short(e)}); is 'aed serve' running "
                              "there, and is the port the server's gRPC (8001) or HTTP (8000) one?") from None
        try:
            ready = live and self._call("ready", "is_server_ready", timeout=t)
        except Exception as e:  # noqa: BLE001
            self._drop_client()
            raise EngineError(f"the Triton server at {self.url} is not ready ({_short(e)})") from None
        if not ready:
            self._drop_client()
            raise EngineError(f"the Triton server at {self.url} is up but not ready (still loading, or a model "
                              "failed to load); try again in a moment or read the server's log")
        try:
            model_ready = self._call("model ready", "is_model_ready", self.url.model, self.url.version, timeout=t)
        except Exception as e:  # noqa: BLE001
            self._drop_client()
            raise EngineError(f"the Triton server at {self.url} did not answer whether model {self.url.model!r} "
                              f"is ready ({_short(e)})") from None
        if not model_ready:
            raise ModelFileError(f"the Triton server at {self.url} serves no ready model {self.url.model!r}"
                                 f"{self._served_models()}; check the model name in the URL")
        try:
            cfg = self._call("config", "get_model_config", self.url.model, self.url.version, timeout=t,
                             as_json=True) if self.url.scheme == "grpc" else \
                self._call("config", "get_model_config", self.url.model, self.url.version, timeout=t)
        except Exception as e:  # noqa: BLE001
            raise EngineError(f"cannot read the model config of {self.url.model!r} from {self.url}: "
                              f"{_short(e)}") from None
        return cfg.get("config", cfg) if isinstance(cfg, dict) else cfg

    def _served_models(self) -> str:
        """`` (it serves: a, b)`` where the server lets us list its repository, else ``""``."""
        try:
            index = self._call("index", "get_model_repository_index", timeout=self.connect_timeout_s,
                               **({"as_json": True} if self.url.scheme == "grpc" else {}))
        except Exception:  # noqa: BLE001 - PyTriton restricts the repository endpoint; the list is optional
            return ""
        models = index.get("models", []) if isinstance(index, dict) else index
        names = sorted({m.get("name", "?") for m in models if isinstance(m, dict)})
        return f" (it serves: {', '.join(names)})" if names else ""

    def _read_config(self, cfg: dict[str, Any]) -> tuple[Any, int, set[str]]:
        where = f"model {self.url.model!r} at {self.url}"
        params = cfg.get("parameters") or {}
        entry = params.get(AED_CONFIG_PARAMETER)
        if not isinstance(entry, dict) or "string_value" not in entry:
            raise ModelFileError(f"{where} is not an aed model: its Triton config has no {AED_CONFIG_PARAMETER!r} "
                                 "parameter (serve the model with 'aed serve', or export a repository with "
                                 "'aed serve --export-repo DIR')")
        try:
            config = json.loads(entry["string_value"])
        except (TypeError, json.JSONDecodeError) as e:
            raise ModelFileError(f"{where}: its {AED_CONFIG_PARAMETER!r} parameter is not JSON ({e})") from None
        max_b = int(cfg.get("max_batch_size") or 0)
        if max_b < 1:
            raise ModelFileError(f"{where} does not batch (max_batch_size {max_b}); aed needs a batched model with "
                                 "input (-1, F)")
        outputs = {o.get("name") for o in cfg.get("output", [])}
        if "scores" not in outputs:
            raise ModelFileError(f"{where} has no 'scores' output (outputs: {sorted(outputs)})")
        return config, max_b, outputs

    def _check_spec(self, cfg: dict[str, Any]) -> None:
        where = f"model {self.url.model!r} at {self.url}"
        inputs = cfg.get("input", [])
        names = [i.get("name") for i in inputs]
        if names != [INPUT_NAME]:
            raise ModelFileError(f"{where} takes inputs {names}, not one {INPUT_NAME!r} (T, F) input")
        dims = [int(d) for d in inputs[0].get("dims", [])]
        if len(dims) != 2 or dims[0] != -1 or dims[1] != self.spec.num_mel_bins:
            raise ModelFileError(f"{where} takes {INPUT_NAME!r} of dims {dims}, but its aed config describes "
                                 f"(-1, {self.spec.num_mel_bins}) windows")

    # -- inference -----------------------------------------------------------------------------
    @property
    def has_frames(self) -> bool:
        """Whether the served model has the frame head's ``frame_scores`` output."""
        return self._frames

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Scores ``(B, C)`` for windows ``(B, T, F)``; windows the server could not score are lost (see class)."""
        return self._infer(x, ("scores",))[0]

    def infer_frames(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clip scores ``(B, C)`` and frame scores ``(B, T', C)`` for windows ``(B, T, F)``, in one request."""
        if not self._frames:
            raise ModelFileError(f"model {self.url.model!r} at {self.url} has no 'frame_scores' output: the model "
                                 "has no frame head")
        clip, frames = self._infer(x, ("scores", "frame_scores"))
        return clip, frames

    def _infer(self, x: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
        self._ensure_open()
        x = self.spec.check(x)
        b = x.shape[0]
        if self._down_since is not None and not self._try_reconnect():
            return self._lost(b, x.shape[1], outputs, None)
        inp = self._mod.InferInput(INPUT_NAME, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        req = [self._mod.InferRequestedOutput(n) for n in outputs]
        try:
            self.requests += 1
            res = self._call("infer", "infer", self.url.model, [inp], timeout=self.timeout_s,
                             model_version=self.url.version, outputs=req)
            out = [np.asarray(res.as_numpy(n), dtype=np.float32) for n in outputs]
            if len(out) > 1:
                self._frame_counts[x.shape[1]] = out[1].shape[1]
        except self._server_error as e:
            if not _is_transport_error(e):
                # the server answered with an error about this request: a model failure, not an outage
                raise EngineError(f"the Triton server at {self.url} failed a request of {b} window(s): "
                                  f"{_short(e)}") from None
            return self._lost(b, x.shape[1], outputs, e)
        except Exception as e:  # noqa: BLE001 - socket / gevent / gRPC transport errors: the server went away
            return self._lost(b, x.shape[1], outputs, e)
        if out[0].shape != (b, len(self.labels)):
            raise EngineError(f"the Triton server at {self.url} returned scores of shape {out[0].shape} for {b} "
                              f"window(s) of a {len(self.labels)}-label model")
        return out

    def _lost(self, b: int, t: int, outputs: tuple[str, ...], cause: BaseException | None) -> list[np.ndarray]:
        """Count ``b`` windows as lost, start an outage on a fresh failure, and score them as zeros (or raise)."""
        if cause is not None:
            self._drop_client()
            if self._down_since is None:
                self._down_since = time.monotonic()
                self._lost_in_outage = 0
                self.outages += 1
                log.warning("the Triton server at %s stopped answering (%s); windows are lost until it is back",
                            self.url, _short(cause))
            self._next_retry = time.monotonic() + self.retry_s
        if self.on_error == "raise":
            raise EngineError(f"the Triton server at {self.url} is not answering"
                              f"{' (' + _short(cause) + ')' if cause is not None else ''}; {b} window(s) not scored")
        self.lost_windows += b
        self._lost_in_outage += b
        c = len(self.labels)
        zeros = [np.zeros((b, c), np.float32)]
        if "frame_scores" in outputs:
            zeros.append(np.zeros((b, self._frame_count(t), c), np.float32))
        return zeros

    def _frame_count(self, t: int) -> int:
        """T' of the frame head for windows of T frames (learnt from the server's answers; 1 until then)."""
        return self._frame_counts.get(t, 1)

    def _try_reconnect(self) -> bool:
        """While down: a fresh client and the start-up checks, at most every ``retry_s``; True when back."""
        now = time.monotonic()
        if now < self._next_retry:
            return False
        self._next_retry = now + self.retry_s
        self._drop_client()
        try:
            cfg = self._connect()
        except (EngineError, ModelFileError) as e:
            log.debug("reconnecting to %s: %s", self.url, e)
            return False
        if json.dumps(cfg.get("parameters", {}).get(AED_CONFIG_PARAMETER), sort_keys=True) != json.dumps(
                self._config_json.get("parameters", {}).get(AED_CONFIG_PARAMETER), sort_keys=True):
            self._down_since = None
            raise ModelFileError(f"the Triton server at {self.url} came back with a different model "
                                 f"{self.url.model!r} (its aed config changed); restart the client")
        down = now - (self._down_since or now)
        log.warning("the Triton server at %s is back after %.1f s; %d window(s) were lost meanwhile", self.url,
                    down, self._lost_in_outage)
        self._down_since = None
        return True

    @property
    def connected(self) -> bool:
        """False during an outage (between a failed request and the reconnection)."""
        return self._down_since is None

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - best effort
                pass
        super().close()

    def __repr__(self) -> str:
        return f"TritonEngine(url={str(self.url)!r}, classes={len(self.labels)}, spec={self.spec})"


def _is_transport_error(e: BaseException) -> bool:
    """A tritonclient error that means the server is gone or too slow, not that it refused this request."""
    status = str(getattr(e, "status", lambda: "")() or "")
    text = _short(e).lower()
    return any(s in status for s in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN")) or any(
        s in text for s in ("connection", "timed out", "timeout", "unavailable", "socket closed", "deadline",
                            "broken pipe", "reset by peer", "failed to connect"))
