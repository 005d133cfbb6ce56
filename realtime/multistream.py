"""Many microphones, one engine: windows from several streams batched into one ``infer`` call.

Example:
    >>> import numpy as np
    >>> from realtime.config import FrontEndConfig
    >>> from realtime.detector import DetectorConfig
    >>> class Zero:
    ...     labels = ["x"]
    ...     calls = 0
    ...     def infer(self, x):
    ...         Zero.calls += 1; return np.zeros((x.shape[0], 1), np.float32)
    >>> ms = MultiStreamRunner(Zero(), ["a", "b"], DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64)))
    >>> out = ms.push({"a": np.zeros(17000, np.float32), "b": np.zeros(17000, np.float32)})
    >>> Zero.calls, ms.windows_scored
    (1, 2)
"""
from __future__ import annotations

from typing import Any, Hashable, Iterable, Mapping

import numpy as np

from realtime.config import check_number
from realtime.detector import MAX_BATCH, Detector, DetectorConfig, PendingWindow
from realtime.errors import AedError, ConfigError
from realtime.events import Event

__all__ = ["MultiStreamRunner", "StreamChunkError"]


class StreamChunkError(AedError, ValueError):
    """Some streams' chunks were refused; every other stream's chunk was processed as usual.

    Attributes:
        errors: the refused streams and why, ``{stream_id: exception}``; their state is as before the call.
        events: the events of the streams that were processed, as :meth:`MultiStreamRunner.push` returns them.
    """

    def __init__(self, errors: dict, events: dict):
        self.errors = errors
        self.events = events
        first = next(iter(errors.items()))
        more = f" (and {len(errors) - 1} more stream(s))" if len(errors) > 1 else ""
        super().__init__(f"stream {first[0]!r}: {first[1]}{more}; the other streams were processed")


class MultiStreamRunner:
    """Per-stream detectors sharing one engine; each :meth:`push` makes as few ``infer`` calls as the
    batch limit allows.

    Args:
        engine: shared engine (``infer`` + ``labels``).
        stream_ids: names of the streams.
        config: detector settings for every stream (None: from the model's metadata).
        max_batch: most windows per ``infer`` call (default: the engine's batch limit, else 32).
    """

    def __init__(self, engine: Any, stream_ids: Iterable[Hashable], config: DetectorConfig | None = None,
                 max_batch: int | None = None):
        self.engine = engine
        self.detectors: dict[Hashable, Detector] = {sid: Detector(engine, config) for sid in stream_ids}
        if not self.detectors:
            raise ConfigError("MultiStreamRunner needs at least one stream id")
        self._scorer = next(iter(self.detectors.values()))
        spec = getattr(engine, "spec", None)
        limit = spec.max_batch if spec is not None else MAX_BATCH
        if max_batch is None:
            max_batch = spec.max_batch if spec is not None else 32
        check_number("max_batch", max_batch, 1, limit, "windows", integer=True,
                     why=f"max_batch must fit the engine's limit of {limit} windows per call")
        self.max_batch = int(max_batch)
        self.infer_calls = 0
        self.windows_scored = 0

    def reset(self) -> None:
        for d in self.detectors.values():
            d.reset()

    def push(self, chunks: Mapping[Hashable, np.ndarray]) -> dict[Hashable, list[Event]]:
        """Feed one chunk per stream (any subset of streams); return each stream's new events.

        A stream whose chunk is refused (an unknown id, NaN, the wrong shape) keeps its state, and costs the
        other streams nothing: they are processed, then :class:`StreamChunkError` names the refused ones and
        carries the others' events.
        """
        errors: dict[Hashable, Exception] = {}
        pending: list[tuple[Hashable, PendingWindow]] = []
        spans: dict[Hashable, slice] = {}           # each stream's windows are one run of ``pending``
        for sid, chunk in chunks.items():
            det = self.detectors.get(sid)
            if det is None:
                errors[sid] = KeyError(f"unknown stream id; known: {list(self.detectors)}")
                continue
            try:
                wins = det.feed(chunk)       # checks the chunk before it touches the stream's state
            except (TypeError, ValueError) as e:
                errors[sid] = e
                continue
            spans[sid] = slice(len(pending), len(pending) + len(wins))
            pending += [(sid, w) for w in wins]
        scores = np.zeros((0, len(self.engine.labels)), np.float32)
        if pending:
            parts = []
            for i in range(0, len(pending), self.max_batch):
                batch = np.stack([w.window for _, w in pending[i:i + self.max_batch]])   # (B, T, F)
                parts.append(self._scorer.infer_batch(batch))   # every detector shares the engine and settings
                self.infer_calls += 1
            scores = np.concatenate(parts)
        out: dict[Hashable, list[Event]] = {sid: [] for sid in spans}
        for sid, span in spans.items():
            if span.stop > span.start:
                out[sid] = self.detectors[sid].accept([w for _, w in pending[span]], scores[span])
        self.windows_scored += len(pending)
        if errors:
            raise StreamChunkError(errors, out)
        return out

    def flush(self) -> dict[Hashable, list[Event]]:
        return {sid: d.flush() for sid, d in self.detectors.items()}
