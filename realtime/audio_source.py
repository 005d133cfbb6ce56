"""What the live path reads from: the :class:`AudioSource` protocol.

A source delivers mono float32 blocks at one sample rate. The rate is a fact of the stream: a file or an array
knows it from the start, a microphone once it is open (``rate`` is None before). A detector is built for that
rate (``DetectorConfig.from_model(engine.config).override(input_rate=source.rate)``); the runner never adapts
the detector to the source. :class:`~realtime.capture.MicrophoneCapture`, :class:`~realtime.sources.ArraySource`
and :class:`~realtime.sources.FileSource` are sources; so is any object with these members.

Optional members, used where a source has them:
    ``start()``: open the stream (a microphone); called by :class:`~realtime.pipeline.LiveRunner` when ``rate``
        is still None.
    ``take_gaps()``: the lost-audio spans (:class:`~realtime.ring.Gap`) the reader has reached, collected after
        each block, in stream order.
    ``overruns``, ``dropped_samples``, ``input_overflows``, ``lost_s``, ``stalls``: loss counters for the summary
        (0 where a source has none).

Example:
    >>> import numpy as np
    >>> from realtime.sources import ArraySource
    >>> isinstance(ArraySource(np.zeros(1600, np.float32), 16000), AudioSource)
    True
"""
from __future__ import annotations

from typing import Iterable, Protocol, runtime_checkable

import numpy as np

__all__ = ["AudioSource"]


@runtime_checkable
class AudioSource(Protocol):
    """Mono float32 audio in blocks at ``rate`` Hz.

    Attributes:
        rate: the sample rate in Hz; None until the source is started (a microphone opens at its device's rate).
    """

    rate: int | None

    def blocks(self) -> Iterable[np.ndarray]:
        """Mono float32 blocks ``(n,)`` in stream order, until the source ends or is stopped. A live source may
        yield empty blocks while it waits for audio, so that its reader can check for a stop request."""
        ...

    def stop(self) -> object:
        """End the stream; the blocks end soon after. Safe to call more than once, from any thread."""
        ...
