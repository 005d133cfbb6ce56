"""aed's real-time core: ring buffer, capture, resampling, log-mel, windows, events, detector.

NumPy only at import: sounddevice, soxr, soundfile, onnxruntime, torch and Qt are imported when
a caller first needs them, so an edge device runs the chain on numpy + onnxruntime.
"""
from __future__ import annotations

from realtime.config import FrontEndConfig, WindowConfig
from realtime.detector import Detector, DetectorConfig
from realtime.events import Event, EventTracker
from realtime.frontend import StreamingFbank, fbank, normalize
from realtime.resample import StreamingResampler
from realtime.ring import Gap, RingBuffer
from realtime.audio_source import AudioSource
from realtime.sources import ArraySource, FileSource, read_audio
from realtime.windows import WindowScheduler

__all__ = [
    "ArraySource", "AudioSource", "Detector", "DetectorConfig", "Event", "EventTracker", "FileSource", "FrontEndConfig", "Gap",
    "LiveRunner", "MicrophoneCapture", "MultiStreamRunner", "RingBuffer", "StreamingFbank", "StreamingResampler",
    "WindowConfig", "WindowScheduler", "fbank", "normalize", "read_audio",
]


def __getattr__(name: str):
    # Lazy: these pull in threading-heavy or optional parts only when used.
    if name == "MicrophoneCapture":
        from realtime.capture import MicrophoneCapture
        return MicrophoneCapture
    if name == "LiveRunner":
        from realtime.pipeline import LiveRunner
        return LiveRunner
    if name == "MultiStreamRunner":
        from realtime.multistream import MultiStreamRunner
        return MultiStreamRunner
    raise AttributeError(f"module 'realtime' has no attribute {name!r}")
