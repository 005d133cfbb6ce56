"""Audio sources that feed the same pipeline as a microphone: files and arrays.

Files are decoded block by block (:class:`AudioReader`), so memory stays bounded whatever a file's
length, and a file whose header lies about its length costs nothing but an error line.

Example:
    >>> import numpy as np
    >>> src = ArraySource(np.zeros(16000, np.float32), 16000, block_s=0.25)
    >>> [b.shape[0] for b in src.blocks()]
    [4000, 4000, 4000, 4000]
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import struct
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from realtime.errors import AudioError, ConfigError
from realtime.resample import check_rate
from realtime.validate import check_audio

__all__ = ["read_audio", "AudioReader", "ArraySource", "FileSource", "AUDIO_FORMATS", "check_audio_path"]

log = logging.getLogger(__name__)

AUDIO_FORMATS = "WAV, FLAC, OGG/Vorbis, OPUS, MP3, AIFF and the other formats libsndfile reads"


def check_audio_path(path: str | Path) -> Path:
    """``path`` as a :class:`Path` if it names a regular file, else a one-line error saying what it is.

    Raises:
        FileNotFoundError: nothing there (or a symlink that points nowhere).
        AudioError: a directory, a symlink loop, a FIFO, a device or a socket (reading one could block forever).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AudioError(f"{path} is a symlink loop; expected an audio file ({AUDIO_FORMATS})") from e
        if os.path.islink(path):
            raise FileNotFoundError(f"{path} is a broken symlink (to {os.readlink(path)}); expected an audio file") \
                from e
        if e.errno == errno.ENOENT:
            raise FileNotFoundError(f"no such audio file: {path}") from e
        raise
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{path} is a directory; expected an audio file ({AUDIO_FORMATS})")
    if not stat.S_ISREG(st.st_mode):
        what = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device file")
        raise AudioError(f"{path} is {what}, not a regular file; accepted are audio files on disk "
                         f"({AUDIO_FORMATS}); for live input use a microphone (--device)")
    return path


def _wav_declared_frames(path: Path) -> int | None:
    """Frames a RIFF/WAVE header's ``data`` chunk promises (None: not a plain WAV, or no such chunk).

    libsndfile quietly clamps a WAV's length to the bytes on disk; this is how a truncated file, or one with
    absurd size fields, is noticed and reported.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(min(size, 16))
                    if len(fmt) >= 14:
                        block_align = struct.unpack("<H", fmt[12:14])[0]
                    f.seek(size - len(fmt) + (size & 1), os.SEEK_CUR)
                elif cid == b"data":
                    return size // block_align if block_align else None
                else:
                    f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None


class AudioReader:
    """Decode an audio file with soundfile (libsndfile) into mono float32 blocks, in bounded memory.

    Args:
        path: a regular audio file.
        block_s: seconds per block (at the file's rate).

    Attributes:
        rate: the file's sample rate in Hz.
        frames_declared: frames the header promises (0 when unknown).
        frames_read: frames decoded so far.
        warnings: one line per recoverable defect (a truncated WAV, absurd size fields), also logged.

    Raises (on open, or while iterating :meth:`blocks`):
        FileNotFoundError: the file does not exist.
        AudioError: not audio, corrupt, empty, NaN/Inf samples, or a header that promises more audio than the
            file holds (a compressed file that lies about its length).
    """

    def __init__(self, path: str | Path, block_s: float = 1.0):
        self.path = check_audio_path(path)
        try:
            import soundfile as sf
        except ImportError as e:  # pragma: no cover - soundfile is a core dependency
            raise ImportError("reading audio files needs soundfile: pip install soundfile") from e
        self._sf = sf
        try:
            self._file = sf.SoundFile(str(self.path))
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            raise AudioError(f"cannot decode {self.path} as audio ({e}); accepted formats: {AUDIO_FORMATS}") from e
        try:
            self.rate = check_rate(self._file.samplerate)
        except ValueError as e:
            self._file.close()
            raise AudioError(f"{self.path}: {e}") from e
        self.channels = self._file.channels
        self.format = self._file.format
        self.frames_declared = max(0, int(self._file.frames))
        wav_frames = _wav_declared_frames(self.path) if self.format in ("WAV", "WAVEX") else None
        self.warnings: list[str] = []
        if wav_frames is not None and wav_frames != self.frames_declared:
            self._warn(f"{self.path.name}: the WAV header promises {wav_frames} frames "
                       f"({wav_frames / self.rate:.1f} s) but the file holds {self.frames_declared} "
                       f"({self.frames_declared / self.rate:.3f} s); reading those")
        self.block = max(1, int(round(block_s * self.rate)))
        self.frames_read = 0

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning("%s", msg)

    @property
    def duration_s(self) -> float:
        """Length the header promises, in seconds (0 when unknown)."""
        return self.frames_declared / self.rate

    def blocks(self) -> Iterator[np.ndarray]:
        """Mono float32 blocks of ``block_s`` seconds (the last may be shorter), checked for NaN/Inf."""
        sf = self._sf
        try:
            while True:
                try:
                    data = self._file.read(self.block, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as e:
                    raise AudioError(self._short_message(f"decoding failed ({e})")) from e
                if data.shape[0] == 0:
                    break
                mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
                if not np.isfinite(mono).all():
                    bad = int((~np.isfinite(mono)).sum())
                    raise AudioError(f"{self.path}: {bad} NaN or Inf samples in the block at "
                                     f"{self.frames_read / self.rate:.2f} s; accepted is finite audio")
                self.frames_read += mono.shape[0]
                yield mono
                if data.shape[0] < self.block:
                    break
        finally:
            self.close()
        if self.frames_read == 0:
            raise AudioError(f"{self.path} holds no audio samples")
        if 0 < self.frames_read < self.frames_declared:
            raise AudioError(self._short_message("the file ended"))

    def _short_message(self, what: str) -> str:
        return (f"{self.path}: {what} after {self.frames_read} frames ({self.frames_read / self.rate:.2f} s) but the "
                f"header promises {self.frames_declared} ({self.frames_declared / self.rate:.1f} s): the file is "
                f"truncated or lies about its length")

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a whole file with soundfile (libsndfile) to mono float32 and its rate.

    Decoded block by block (:class:`AudioReader`): a header that lies about the length allocates nothing.

    Raises:
        FileNotFoundError: the file does not exist.
        AudioError (a ValueError): the file is unreadable, truncated, empty, not audio, or holds NaN/Inf.
    """
    reader = AudioReader(path)
    parts = list(reader.blocks())
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), reader.rate


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
            raise ConfigError(f"block_s must be positive seconds, got {block_s}")
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
    """An audio file as a source, decoded block by block as it is consumed (bounded memory).

    It is an :class:`ArraySource` to the pipeline (``rate``, ``blocks()``, ``stop()``), but never holds the whole
    signal: there is no ``audio`` attribute.

    Args:
        path: a regular audio file (see :class:`AudioReader`).
        block_s: block length in seconds.
        realtime: sleep so that blocks arrive at the pace of the audio.
    """

    def __init__(self, path: str | Path, block_s: float = 0.1, realtime: bool = False):
        if block_s <= 0:
            raise ConfigError(f"block_s must be positive seconds, got {block_s}")
        self._reader = AudioReader(path, block_s=block_s)      # opens and checks the file now, decodes later
        # (ArraySource.__init__ is not called: it would need the whole signal)
        self.path = self._reader.path
        self.rate = self._reader.rate
        self.block = self._reader.block
        self.realtime = realtime
        self._stop = False

    @property
    def duration_s(self) -> float:
        """The length the file's header promises, in seconds."""
        return self._reader.duration_s

    @property
    def warnings(self) -> list[str]:
        return self._reader.warnings

    def stop(self) -> None:
        self._stop = True

    def blocks(self) -> Iterator[np.ndarray]:
        t0 = time.perf_counter()
        done = 0
        for b in self._reader.blocks():
            if self._stop:
                self._reader.close()
                return
            if self.realtime:
                delay = t0 + done / self.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            done += b.shape[0]
            yield b
