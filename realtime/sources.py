"""Audio sources that feed the same pipeline as a microphone: files and arrays.

Example:
    >>> import numpy as np
    >>> src = ArraySource(np.zeros(16000, np.float32), 16000, block_s=0.25)
    >>> [b.shape[0] for b in src.blocks()]
    [4000, 4000, 4000, 4000]
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np

from realtime.resample import check_rate
from realtime.validate import check_audio

__all__ = ["read_audio", "ArraySource", "FileSource", "AUDIO_FORMATS"]

AUDIO_FORMATS = "WAV, FLAC, OGG/Vorbis, OPUS, MP3, AIFF and the other formats libsndfile reads"


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a file with soundfile (libsndfile) to mono float32 and its rate.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is unreadable, truncated, empty, not audio, or holds NaN/Inf.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such audio file: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; expected an audio file ({AUDIO_FORMATS})")
    try:
        import soundfile as sf
    except ImportError as e:  # pragma: no cover - soundfile is a core dependency
        raise ImportError("reading audio files needs soundfile: pip install soundfile") from e
    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            expected = f.frames
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise ValueError(f"cannot decode {path} as audio ({e}); accepted formats: {AUDIO_FORMATS}") from e
    if data.shape[0] == 0:
        raise ValueError(f"{path} holds no audio samples")
    if 0 < expected != data.shape[0]:
        raise ValueError(f"{path} is truncated: header promises {expected} frames, only {data.shape[0]} decoded")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    try:
        check_rate(rate)
        mono = check_audio(mono, rate, what=f"file {path.name}")
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    return mono, int(rate)


class ArraySource:
    """Blocks of an in-memory mono signal, as fast as possible or at real-time pace.

    Args:
        audio: mono float32 samples.
        rate: their sample rate in Hz.
        block_s: block length in seconds.
        realtime: sleep so that blocks arrive at the pace of the audio.
    """

    def __init__(self, audio: np.ndarray, rate: int, block_s: float = 0.1, realtime: bool = False):
        self.rate = check_rate(rate)
        self.audio = check_audio(audio, self.rate)
        if block_s <= 0:
            raise ValueError(f"block_s must be positive seconds, got {block_s}")
        self.block = max(1, int(round(block_s * self.rate)))
        self.realtime = realtime
        self._stop = False

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / self.rate

    def stop(self) -> None:
        self._stop = True

    def blocks(self) -> Iterator[np.ndarray]:
        t0 = time.perf_counter()
        for i in range(0, self.audio.shape[0], self.block):
            if self._stop:
                return
            if self.realtime:
                due = t0 + i / self.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            yield self.audio[i:i + self.block]


class FileSource(ArraySource):
    """A decoded audio file as a source (see :func:`read_audio`)."""

    def __init__(self, path: str | Path, block_s: float = 0.1, realtime: bool = False):
        audio, rate = read_audio(path)
        self.path = Path(path)
        super().__init__(audio, rate, block_s=block_s, realtime=realtime)
