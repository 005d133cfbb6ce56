"""Microphone capture: a PortAudio stream whose callback only copies into a ring buffer.

``sounddevice`` is imported when a capture starts, never at ``import realtime``.

Example (needs an input device):
    >>> cap = MicrophoneCapture(device=None)                     # doctest: +SKIP
    >>> with cap:                                                 # doctest: +SKIP
    ...     block = cap.read(timeout=1.0)                         # (n,) mono float32 at cap.samplerate
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from realtime.errors import AedError
from realtime.ring import RingBuffer

__all__ = ["MicrophoneCapture", "DeviceError", "list_input_devices", "import_sounddevice"]

log = logging.getLogger(__name__)


class DeviceError(AedError, RuntimeError):
    """The audio device failed, vanished or stopped delivering audio."""


def import_sounddevice():
    """Import sounddevice, or say how to get PortAudio and sounddevice."""
    try:
        import sounddevice as sd
    except OSError as e:  # the PortAudio shared library is missing
        raise DeviceError(f"PortAudio is not installed ({e}); on Debian: apt-get install libportaudio2") from e
    except ImportError as e:
        raise DeviceError("microphone capture needs sounddevice: pip install sounddevice") from e
    return sd


def list_input_devices() -> list[dict[str, Any]]:
    """Input-capable devices: index, name, host API, channels, default rate, and which is default."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
    except sd.PortAudioError as e:
        raise DeviceError(f"cannot query audio devices: {e}") from e
    apis = sd.query_hostapis()
    out = []
    for i, d in enumerate(devices):
        if d["max_input_channels"] > 0:
            out.append({"index": i, "name": d["name"], "hostapi": apis[d["hostapi"]]["name"],
                        "channels": d["max_input_channels"], "default_samplerate": d["default_samplerate"],
                        "default": i == default_in})
    return out


class MicrophoneCapture:
    """Capture thread on ``sounddevice.InputStream`` feeding a :class:`RingBuffer`.

    The device runs at its own rate and channel count; :meth:`read` returns mono float32 (the
    channels are averaged on the consumer's side, not in the callback). Input-overflow flags and
    ring overruns are counted. If the device disappears, :meth:`read` raises :class:`DeviceError`
    instead of hanging: a stream that stays dry for ``stall_timeout_s`` is aborted.

    Args:
        device: PortAudio device index or name substring; None for the default input.
        samplerate: device rate; None for the device's default.
        channels: channels to open; None for min(device channels, 2).
        block_s: callback block length in seconds.
        ring_s: ring-buffer capacity in seconds.
        stall_timeout_s: seconds without audio after which the stream is considered dead.
    """

    def __init__(self, device: int | str | None = None, samplerate: float | None = None,
                 channels: int | None = None, block_s: float = 0.02, ring_s: float = 30.0,
                 stall_timeout_s: float = 2.0):
        self.device = device
        self._req_rate = samplerate
        self._req_channels = channels
        self.block_s = block_s
        self.ring_s = ring_s
        self.stall_timeout_s = stall_timeout_s
        self.samplerate: int | None = None
        self.channels: int | None = None
        self.ring: RingBuffer | None = None
        self.input_overflows = 0
        self.callbacks = 0
        self.callback_times: list[float] = []   # perf_counter at each callback, for jitter
        self._stream = None
        self._last_data = 0.0
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._stopping = False

    # -- the callback: copy and count, nothing else -------------------------------------------
    def _callback(self, indata, frames, time_info, status) -> None:
        if status.input_overflow:
            self.input_overflows += 1
        self.ring.write(indata)
        self.callbacks += 1
        t = time.perf_counter()
        self._last_data = t
        if len(self.callback_times) < 200_000:
            self.callback_times.append(t)

    def _finished(self) -> None:
        if self.ring is not None and not self.ring.closed:
            self.ring.close(None if self._stopping else
                            DeviceError("the audio stream ended unexpectedly (device removed or failed)"))

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "MicrophoneCapture":
        sd = import_sounddevice()
        try:
            info = sd.query_devices(self.device, "input")
        except (ValueError, sd.PortAudioError) as e:
            what = "no default input device" if self.device is None else f"no usable input device {self.device!r}"
            raise DeviceError(f"{what} ({e}); pass --device N or a name from `aed devices`, or replay a file "
                              "with --source FILE") from e
        rate = self._req_rate or info["default_samplerate"]
        from realtime.resample import check_rate

        self.samplerate = check_rate(int(round(rate)))
        self.channels = int(self._req_channels or min(int(info["max_input_channels"]), 2))
        if self.channels < 1 or self.channels > info["max_input_channels"]:
            raise DeviceError(f"device {info['name']!r} offers {info['max_input_channels']} input channels, "
                              f"asked for {self.channels}")
        self.ring = RingBuffer(int(self.ring_s * self.samplerate), self.channels)
        try:
            self._stream = sd.InputStream(device=self.device, samplerate=self.samplerate, channels=self.channels,
                                          dtype="float32", blocksize=max(1, int(self.block_s * self.samplerate)),
                                          callback=self._callback, finished_callback=self._finished)
            self._stream.start()
        except sd.PortAudioError as e:
            raise DeviceError(f"cannot open input device {info['name']!r} at {self.samplerate} Hz with "
                              f"{self.channels} channels: {e}") from e
        self._last_data = time.perf_counter()
        log.info("capturing from %r at %d Hz, %d channel(s)", info["name"], self.samplerate, self.channels)
        return self

    def read(self, timeout: float = 0.5) -> np.ndarray:
        """Mono float32 samples captured since the last read (may be empty on a timeout).

        Raises:
            DeviceError: the device vanished or the stream has been dry for ``stall_timeout_s``.
        """
        if self.ring is None:
            raise RuntimeError("capture not started")
        try:
            block = self.ring.read(timeout=timeout)
        except DeviceError:
            raise
        if block.shape[0] == 0 and self._stream is not None:
            dry = time.perf_counter() - self._last_data
            active = self._stream.active
            if not active or dry > self.stall_timeout_s:
                self.abort()
                raise DeviceError(f"no audio from the input device for {dry:.1f} s; the device may have been "
                                  f"removed (stream active={active})")
        # (n, channels) -> (n,)
        return block[:, 0].copy() if self.channels == 1 else block.mean(axis=1, dtype=np.float32)

    def _close_stream(self, abort: bool) -> None:
        self._stopping = True
        with self._lock:
            if self._stream is not None:
                try:
                    if abort:
                        self._stream.abort(ignore_errors=True)
                    else:
                        self._stream.stop(ignore_errors=True)
                    self._stream.close(ignore_errors=True)
                finally:
                    self._stream = None
            if self.ring is not None and not self.ring.closed:
                self.ring.close()

    def abort(self) -> None:
        """Stop at once, dropping what PortAudio still holds (for a dead or hung stream)."""
        self._close_stream(abort=True)

    def stop(self) -> None:
        """Stop after PortAudio has delivered what it holds; what is in the ring stays readable."""
        self._close_stream(abort=False)

    @property
    def overruns(self) -> int:
        return 0 if self.ring is None else self.ring.overruns

    def __enter__(self) -> "MicrophoneCapture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
