"""Microphone capture: a PortAudio stream whose callback only copies into a ring buffer.

``sounddevice`` is imported when a capture starts, never at ``import realtime``.

Example (needs an input device):
    >>> cap = MicrophoneCapture(device=None)                     # doctest: +SKIP
    >>> with cap:                                                 # doctest: +SKIP
    ...     block = cap.read(timeout=1.0)                         # (n,) mono float32 at cap.rate
"""
from __future__ import annotations

import atexit
import logging
import math
import sys
import threading
import time
from collections import deque
from typing import Any, Iterator

import numpy as np

from realtime.errors import AedError
from realtime.ring import RingBuffer

__all__ = ["MicrophoneCapture", "StreamClock", "DeviceError", "list_input_devices", "import_sounddevice",
           "wait_for_stream_closes"]

CLOSER_THREAD = "aed-close-stream"     # the name of the thread that stops and closes a PortAudio stream

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


def _skip_portaudio_terminate() -> None:
    """Keep sounddevice from terminating PortAudio at exit: Pa_Terminate waits on a stream stuck inside
    PortAudio (a frozen sound server) forever, so the process would never end. The OS frees it instead."""
    sd = sys.modules.get("sounddevice")
    handler = getattr(sd, "_exit_handler", None)
    if handler is None:
        return
    atexit.unregister(handler)


def wait_for_stream_closes(timeout_s: float) -> int:
    """Wait up to ``timeout_s`` for streams still closing in the background (a stop or abort that outlived its
    ``close_timeout_s`` while the sound server was frozen); return how many are still closing.

    PortAudio must not be terminated or re-initialised while one is: Pa_Terminate beside a stream that another
    thread is aborting can abort the whole process.
    """
    deadline = time.monotonic() + max(0.0, timeout_s)
    for t in [t for t in threading.enumerate() if t.name == CLOSER_THREAD]:
        t.join(max(0.0, deadline - time.monotonic()))
    return sum(t.is_alive() for t in threading.enumerate() if t.name == CLOSER_THREAD)


class StreamClock:
    """Finds audio the device never delivered, from the stream's clock and the frames it delivered.

    Each callback reports when it ran and, where PortAudio gives one, the capture time of its first
    frame (``inputBufferAdcTime``; 0 with some ALSA/PulseAudio set-ups, and not always trustworthy
    there). Without loss a clock advances as fast as the audio delivered, so the *lag* (clock time
    elapsed minus audio delivered) stays in a narrow band over a slowly drifting baseline. A stall (of
    our own process or of the sound server) lifts the lag for a moment; the backlog that PulseAudio or
    the driver kept is then delivered in a burst and brings it back down. What is still missing once
    callbacks come at real-time pace again is lost audio: :meth:`update` returns its length in frames,
    and the caller marks a gap in the stream at that point. Where the ADC clock is usable, a loss must
    show on both clocks (the smaller one counts), so a jumpy ADC clock alone never invents a gap.

    Args:
        rate: the stream's sample rate in Hz.
        tolerance_s: the shortest lost span reported; smaller jumps are scheduling jitter.
        stall_s: a callback interval longer than this counts as a stall (``stalls``, ``stalled_s``).
        drift: how fast (seconds per second) the baseline may follow a slowly drifting device clock.

    Example:
        >>> clk = StreamClock(1000)
        >>> [clk.update(t / 10, 100) for t in range(1, 4)]        # on time: nothing lost
        [0, 0, 0]
        >>> clk.update(1.5, 100), clk.update(1.6, 100), clk.update(1.7, 100)   # 1 s never came
        (0, 0, 1100)
    """

    def __init__(self, rate: float, tolerance_s: float = 0.15, stall_s: float = 0.5, drift: float = 1e-3,
                 settle_max_s: float = 10.0):
        self.rate = float(rate)
        self.tolerance_s = tolerance_s
        self.stall_s = stall_s
        self.drift = drift
        self.settle_max_s = settle_max_s
        self.stalls = 0             # callback intervals longer than stall_s
        self.stalled_s = 0.0        # their total length
        self.discontinuities = 0    # lost spans found
        self.lost_frames = 0        # their total length in frames
        self.reset()

    def reset(self) -> None:
        """Forget the timeline (a new stream starts); the counters stay."""
        self._t0: float | None = None
        self._adc0: float | None = None
        self._pos = 0                # frames on the timeline so far, lost ones included
        self._base = 0.0
        self._base_adc = 0.0
        self._prev = self._prev2 = 0.0
        self._open = False
        self._open_k = 0
        self._open_t = 0.0

    def _follow(self, base: float, lag: float, interval: float) -> float:
        return lag if lag < base else base + min(lag - base, self.drift * interval)

    def update(self, now: float, frames: int, adc: float = 0.0) -> int:
        """One callback: ``now`` (seconds, monotonic) when it ran, ``frames`` delivered, ``adc`` capture time of
        the first frame (0 when unknown). Returns frames lost just before this block (0 almost always)."""
        r = self.rate
        adc = adc if adc and math.isfinite(adc) and adc > 0 else 0.0
        if self._t0 is None:
            self._t0 = now - frames / r
            self._adc0 = adc or None
            self._prev = self._prev2 = now
            self._pos = frames
            return 0
        interval = now - self._prev
        if interval > self.stall_s:
            self.stalls += 1
            self.stalled_s += interval
        before = self._pos
        lag = (now - self._t0) - (before + frames) / r
        if not adc:
            self._adc0 = None
            lag_adc = None
        elif self._adc0 is None:                       # ADC time appeared: start its timeline here
            self._adc0 = adc - before / r
            lag_adc = self._base_adc = 0.0
        else:
            lag_adc = (adc - self._adc0) - before / r
        tol = max(self.tolerance_s, 4.0 * frames / r)
        lost = 0
        if not self._open:
            if lag - self._base > tol:                 # a stall: wait for the backlog before judging
                self._open, self._open_k, self._open_t = True, 0, now
            else:
                self._base = self._follow(self._base, lag, interval)
                if lag_adc is not None:
                    self._base_adc = self._follow(self._base_adc, lag_adc, interval)
        else:
            self._open_k += 1
            paced = self._open_k >= 2 and now - self._prev2 >= 1.5 * frames / r
            if paced or now - self._open_t > self.settle_max_s:
                lost_s = lag - self._base
                if lag_adc is not None:
                    lost_s = min(lost_s, lag_adc - self._base_adc)
                if lost_s > tol:
                    lost = int(round(lost_s * r))
                    self.discontinuities += 1
                    self.lost_frames += lost
                    lag -= lost / r
                    if lag_adc is not None:
                        lag_adc -= lost / r
                if lag - self._base > tol:             # the wall clock jumped, the audio did not: re-baseline
                    self._base = lag
                if lag_adc is not None and lag_adc - self._base_adc > tol:
                    self._base_adc = lag_adc
                self._open = False
        self._pos = before + lost + frames
        self._prev2, self._prev = self._prev, now
        return lost


class MicrophoneCapture:
    """Capture thread on ``sounddevice.InputStream`` feeding a :class:`RingBuffer`; an
    :class:`~realtime.audio_source.AudioSource` (``rate``, ``start``, ``blocks``, ``stop``, ``take_gaps``).

    The device runs at its own rate and channel count; :meth:`read` returns mono float32 (the
    channels are averaged on the consumer's side, not in the callback). Input-overflow flags and
    ring overruns are counted; audio the device never delivered (a jump of the stream's clock, see
    :class:`StreamClock`) is marked as a gap in the ring where it happened, so that a consumer keeps
    its timestamps on the true timeline.

    If the device disappears, :meth:`read` raises :class:`DeviceError` instead of hanging: when the
    stream reports failure (it ends, or turns inactive), or stays dry for ``stall_timeout_s`` while
    we are running. A stall of our own process (SIGSTOP, suspend, a long pause of the reader) is
    not a dead device: the dry timer restarts when the reader was not scheduled. Stopping never
    blocks longer than ``close_timeout_s``, even when the sound server is frozen.

    Args:
        device: PortAudio device index or name substring; None for the default input.
        samplerate: device rate; None for the device's default.
        channels: channels to open; None for min(device channels, 2).
        block_s: callback block length in seconds.
        ring_s: ring-buffer capacity in seconds.
        stall_timeout_s: seconds without audio (while the reader runs) after which the stream is considered dead.
        close_timeout_s: seconds to wait for PortAudio to stop and close the stream; then it is left to a
            background thread.
    """

    MAX_CALLBACK_TIMES = 200_000
    READER_GAP_S = 1.0          # a reader absent this much longer than it asked to wait was not scheduled

    def __init__(self, device: int | str | None = None, samplerate: float | None = None,
                 channels: int | None = None, block_s: float = 0.02, ring_s: float = 30.0,
                 stall_timeout_s: float = 2.0, close_timeout_s: float = 2.0):
        self.device = device
        self._req_rate = samplerate
        self._req_channels = channels
        self.block_s = block_s
        self.ring_s = ring_s
        self.stall_timeout_s = stall_timeout_s
        self.close_timeout_s = close_timeout_s
        self.samplerate: int | None = None
        self.channels: int | None = None
        self.ring: RingBuffer | None = None
        self.clock: StreamClock | None = None
        self.input_overflows = 0
        self.callbacks = 0
        self.reader_stalls = 0              # reads after which we found we had not been scheduled
        self.close_hung = False             # PortAudio did not stop within close_timeout_s
        self._times = np.zeros(self.MAX_CALLBACK_TIMES)   # perf_counter at each callback (calloc: pages on use)
        self._clock = time.perf_counter
        self._stream = None
        self._last_data = 0.0
        self._dry_since = 0.0
        self._dry_reads = 0
        self._last_read_end: float | None = None
        self._passed_gaps: deque = deque(maxlen=10_000)     # gaps a plain read() ran across, for take_gaps()
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def rate(self) -> int | None:
        """The stream's sample rate in Hz (the device's, or the one asked for); None until :meth:`start`."""
        return self.samplerate

    @property
    def callback_times(self) -> np.ndarray:
        """``perf_counter`` time of each callback, the first ``MAX_CALLBACK_TIMES`` of them (for jitter)."""
        return self._times[:min(self.callbacks, self.MAX_CALLBACK_TIMES)]

    # -- the callback: copy and count, nothing else -------------------------------------------
    def _callback(self, indata, frames, time_info, status) -> None:
        t = self._clock()
        if status.input_overflow:
            self.input_overflows += 1
        adc = getattr(time_info, "inputBufferAdcTime", 0.0) if time_info is not None else 0.0
        lost = self.clock.update(t, frames, adc)
        if lost:
            self.ring.mark_gap(lost)
        self.ring.write(indata)
        if self.callbacks < self.MAX_CALLBACK_TIMES:
            self._times[self.callbacks] = t
        self.callbacks += 1
        self._last_data = t

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
        self.clock = StreamClock(self.samplerate)
        self._stopping = False
        try:
            self._stream = sd.InputStream(device=self.device, samplerate=self.samplerate, channels=self.channels,
                                          dtype="float32", blocksize=max(1, int(self.block_s * self.samplerate)),
                                          callback=self._callback, finished_callback=self._finished)
            self._stream.start()
        except sd.PortAudioError as e:
            raise DeviceError(f"cannot open input device {info['name']!r} at {self.samplerate} Hz with "
                              f"{self.channels} channels: {e}") from e
        self._last_data = self._dry_since = self._clock()
        log.info("capturing from %r at %d Hz, %d channel(s)", info["name"], self.samplerate, self.channels)
        return self

    def read(self, timeout: float = 0.5, until_gap: bool = False) -> np.ndarray:
        """Mono float32 samples captured since the last read (may be empty on a timeout).

        Args:
            timeout: seconds to wait for audio.
            until_gap: stop at the next gap, so that the caller can put it in its place (collect it with
                :meth:`take_gaps` after this block). Otherwise reads run across gaps, which are kept for
                :meth:`take_gaps` all the same.

        Raises:
            DeviceError: the device vanished, the stream failed, or it has been dry for ``stall_timeout_s``
                while the reader kept running.
        """
        if self.ring is None:
            raise RuntimeError("capture not started")
        t_call = self._clock()
        if not until_gap:
            self._passed_gaps.extend(self.ring.take_gaps())
        block = self.ring.read(timeout=timeout)
        if not until_gap:
            parts = [block]
            while self.ring.gap_due:
                self._passed_gaps.extend(self.ring.take_gaps())
                parts.append(self.ring.read())
            block = np.concatenate(parts) if len(parts) > 1 else block
        now = self._clock()
        waited = now - t_call
        absent = t_call - self._last_read_end if self._last_read_end is not None else 0.0
        self._last_read_end = now
        if absent > self.READER_GAP_S or (timeout is not None and waited > timeout + self.READER_GAP_S):
            # we were not scheduled (SIGSTOP/SIGCONT, suspend, a long GC): our stall, not a dry device
            self.reader_stalls += 1
            self._dry_since, self._dry_reads = now, 0
        if block.shape[0]:
            self._dry_reads = 0
        elif self._stream is not None and not self.ring.gap_due:
            self._dry_reads += 1
            dry = now - max(self._last_data, self._dry_since)
            active = self._stream.active
            if not active or (dry > self.stall_timeout_s and self._dry_reads >= 3):
                self.abort()
                raise DeviceError(f"no audio from the input device for {dry:.1f} s; the device may have been "
                                  f"removed or the sound server is not responding (stream active={active})")
        # (n, channels) -> (n,)
        return block[:, 0].copy() if self.channels == 1 else block.mean(axis=1, dtype=np.float32)

    def blocks(self, timeout: float = 0.25) -> Iterator[np.ndarray]:
        """Mono blocks as they arrive, each ending at the next gap (collect it with :meth:`take_gaps` after the
        block), until the stream is stopped and drained. A block is empty after ``timeout`` seconds without audio.

        Raises:
            DeviceError: as :meth:`read`.
        """
        if self.ring is None:
            raise RuntimeError("capture not started")
        while True:
            block = self.read(timeout=timeout, until_gap=True)
            yield block
            ring = self.ring
            if not block.shape[0] and ring.closed and ring.available == 0 and not ring.gap_due:
                return

    def take_gaps(self):
        """Gaps (ring overruns and clock discontinuities) the reader has reached; see :meth:`RingBuffer.take_gaps`."""
        gaps = list(self._passed_gaps) + ([] if self.ring is None else self.ring.take_gaps())
        self._passed_gaps.clear()
        return gaps

    def _close_stream(self, abort: bool) -> bool:
        self._stopping = True
        with self._lock:
            stream, self._stream = self._stream, None
        done = True
        if stream is not None:
            def close() -> None:
                try:
                    if abort:
                        stream.abort(ignore_errors=True)
                    else:
                        stream.stop(ignore_errors=True)
                    stream.close(ignore_errors=True)
                except Exception:  # noqa: BLE001 - a failing close is reported, never raised into the caller
                    log.exception("closing the audio stream failed")

            # PortAudio may block inside stop/abort while the sound server is frozen: never on our thread
            closer = threading.Thread(target=close, name=CLOSER_THREAD, daemon=True)
            closer.start()
            closer.join(self.close_timeout_s)
            done = not closer.is_alive()
            if not done:
                self.close_hung = True
                log.warning("the audio stream did not stop within %.1f s (sound server not responding); "
                            "leaving it to close in the background", self.close_timeout_s)
                _skip_portaudio_terminate()
        if self.ring is not None and not self.ring.closed:
            self.ring.close()
        return done

    def abort(self) -> bool:
        """Stop at once, dropping what PortAudio still holds (for a dead or hung stream). Returns False when
        PortAudio did not finish within ``close_timeout_s`` (it goes on in the background)."""
        return self._close_stream(abort=True)

    def stop(self) -> bool:
        """Stop after PortAudio has delivered what it holds; what is in the ring stays readable. Returns False
        when PortAudio did not finish within ``close_timeout_s``."""
        return self._close_stream(abort=False)

    @property
    def overruns(self) -> int:
        return 0 if self.ring is None else self.ring.overruns

    @property
    def dropped_samples(self) -> int:
        """Frames the ring dropped because the reader fell behind."""
        return 0 if self.ring is None else self.ring.dropped_samples

    @property
    def lost_frames(self) -> int:
        """Frames that never reached the consumer: ring drops plus clock discontinuities."""
        return 0 if self.ring is None else self.ring.dropped_samples + self.ring.lost_frames

    @property
    def lost_s(self) -> float:
        return self.lost_frames / self.samplerate if self.samplerate else 0.0

    @property
    def stalls(self) -> int:
        """Stalls of the callback stream (longer than ``StreamClock.stall_s``), ours or the sound server's."""
        return 0 if self.clock is None else self.clock.stalls

    def __enter__(self) -> "MicrophoneCapture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
