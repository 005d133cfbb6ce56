"""Log-mel front ends in NumPy, offline and streaming: Kaldi-compatible fbank and EfficientAT's log-mel.

``FrontEndConfig.kind`` picks one.

``kaldi``:

Matches ``torchaudio.compliance.kaldi.fbank(wave, htk_compat=True, use_energy=False,
window_type='hanning', num_mel_bins=N, dither=0.0, frame_shift=10, sample_frequency=16000)``
(``snip_edges=True``, pre-emphasis 0.97, per-frame DC removal, FFT size 512, mel bins from 20 Hz
to Nyquist, log floored at float32 eps). The streaming version carries ``frame_length -
frame_shift`` samples of context, so any chunking gives the same frames as the offline call.

``efficientat`` (the front end of EfficientAT's pretrained MobileNets, ``AugmentMelSTFT`` in evaluation mode):
frames centred on ``k * hop`` with the signal's start reflected (``torch.stft(center=True)``), a symmetric Hann
window without DC removal, power spectrum, Kaldi mel bands designed at ``cfg.reference_rate`` with the
pre-emphasis response ``|1 - a e^{-jw}|^2`` of that rate folded in per FFT bin, and ``log(x + 1e-5)``. A stream
cannot see its end, so frames stop where the window would run past the last sample: offline, that is one or two
frames fewer at the end than ``torch.stft``'s end padding gives; every other frame is the same.

Example:
    >>> import numpy as np
    >>> fe = StreamingFbank(FrontEndConfig(num_mel_bins=64))
    >>> a = fe.push(np.zeros(400, np.float32)); b = fe.push(np.zeros(160, np.float32))
    >>> a.shape, b.shape
    ((1, 64), (1, 64))
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from realtime.config import FrontEndConfig
from realtime.errors import ConfigError

__all__ = ["StreamingFbank", "fbank", "normalize", "silence_frame", "mel_banks", "num_frames"]

_EPS = float(np.finfo(np.float32).eps)
_EFFICIENTAT_LOG_OFFSET = 1e-5


def _mel(f: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


@lru_cache(maxsize=16)
def _banks_cached(num_bins: int, n_fft: int, sample_rate: int, low: float, high: float) -> np.ndarray:
    nyquist = 0.5 * sample_rate
    high = nyquist + high if high <= 0.0 else high
    if not (0.0 <= low < high <= nyquist):
        raise ConfigError(f"mel range must satisfy 0 <= low_freq < high_freq <= {nyquist} Hz, got {low}..{high}")
    n_bins = n_fft // 2
    mel_low, mel_high = _mel(low), _mel(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = np.arange(num_bins, dtype=np.float64)[:, None]
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = _mel(sample_rate / n_fft * np.arange(n_bins, dtype=np.float64))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))                    # (num_bins, n_fft/2)
    banks = np.pad(banks, ((0, 0), (0, 1)))                          # (num_bins, n_fft/2 + 1): Nyquist bin gets 0
    return np.ascontiguousarray(banks.T.astype(np.float32))          # (n_fft/2 + 1, num_bins)


def mel_banks(cfg: FrontEndConfig) -> np.ndarray:
    """Triangular mel filters as a ``(n_fft // 2 + 1, num_mel_bins)`` float32 matrix.

    For an ``efficientat`` front end the bands are designed at ``reference_rate`` with the same bin spacing
    (an FFT ``reference_rate / sample_rate`` times longer), cut to this rate's bins, and weighted per bin by the
    reference rate's pre-emphasis power response and the power gain ``(reference_rate / sample_rate)^2`` of a
    window that holds that many times fewer samples.
    """
    n_fft = _n_fft(cfg)
    if cfg.kind != "efficientat":
        return _banks_cached(cfg.num_mel_bins, n_fft, cfg.sample_rate, float(cfg.low_freq), float(cfg.high_freq))
    return _efficientat_banks(cfg.num_mel_bins, n_fft, cfg.sample_rate, cfg.reference_rate, float(cfg.low_freq),
                              float(cfg.high_freq), float(cfg.preemphasis))


@lru_cache(maxsize=16)
def _efficientat_banks(num_bins: int, n_fft: int, rate: int, ref: int, low: float, high: float, a: float
                       ) -> np.ndarray:
    ratio = ref / rate
    ref_fft = int(round(n_fft * ratio))
    banks = _banks_cached(num_bins, ref_fft, ref, low, high).astype(np.float64)[: n_fft // 2 + 1]  # (bins, F)
    f = rate / n_fft * np.arange(n_fft // 2 + 1)
    response = 1.0 + a * a - 2.0 * a * np.cos(2.0 * np.pi * f / ref)        # |1 - a e^{-j 2 pi f / ref}|^2
    return np.ascontiguousarray((banks * (response * ratio * ratio)[:, None]).astype(np.float32))


def _n_fft(cfg: FrontEndConfig) -> int:
    return 1 << (cfg.frame_length - 1).bit_length()


@lru_cache(maxsize=16)
def _window(length: int) -> np.ndarray:
    # Symmetric Hann ("hanning" in Kaldi and torchaudio: torch.hann_window(N, periodic=False)).
    n = np.arange(length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / (length - 1))).astype(np.float32)


def _snip_frames(num_samples: int, cfg: FrontEndConfig) -> int:
    if num_samples < cfg.frame_length:
        return 0
    return 1 + (num_samples - cfg.frame_length) // cfg.frame_shift


def _reflect_len(cfg: FrontEndConfig) -> int:
    """Samples reflected in front of a centred stream (half a window; 0 for the Kaldi front end)."""
    return cfg.frame_length // 2 if cfg.kind == "efficientat" else 0


def num_frames(num_samples: int, cfg: FrontEndConfig) -> int:
    """Frames the front end yields for ``num_samples`` samples (``snip_edges`` framing; centred for efficientat)."""
    pad = _reflect_len(cfg)
    if pad and num_samples <= pad:
        return 0  # the reflection needs pad + 1 samples
    return _snip_frames(num_samples + pad, cfg)


def _reflect_start(samples: np.ndarray, pad: int) -> np.ndarray:
    # x[pad], ..., x[1], x[0], x[1], ...: torch.stft(center=True)'s reflect padding at the start
    return np.concatenate([samples[1:pad + 1][::-1], samples])


_SMALL = 8  # up to this many frames per call, framing copies through a cached index (cheaper than a strided view)


@lru_cache(maxsize=16)
def _constants(cfg: FrontEndConfig) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
    L = cfg.frame_length
    mean_vec = np.full((L, 1), 1.0 / L, dtype=np.float32)            # frames @ mean_vec = per-frame mean
    index = cfg.frame_shift * np.arange(_SMALL, dtype=np.intp)[:, None] + np.arange(L, dtype=np.intp)
    return _window(L), mel_banks(cfg), _n_fft(cfg), mean_vec, index


def _frames_to_fbank(frames: np.ndarray, cfg: FrontEndConfig, consts: tuple | None = None) -> np.ndarray:
    """``(n, frame_length)`` float32 frames -> ``(n, num_mel_bins)`` log-mel."""
    window, banks, n_fft, mean_vec, _ = consts or _constants(cfg)
    if cfg.kind == "efficientat":
        spec = np.fft.rfft(frames * window, n=n_fft, axis=1)          # (n, n_fft/2 + 1); no DC removal
        power = np.square(spec.real, dtype=np.float32)
        power += np.square(spec.imag, dtype=np.float32)
        mel = power @ banks                                          # pre-emphasis and gain are in the banks
        mel += np.float32(_EFFICIENTAT_LOG_OFFSET)
        return np.log(mel, out=mel)
    a = cfg.preemphasis
    mean = frames @ mean_vec                                         # (n, 1); a matmul is ~5x cheaper than .mean
    # DC removal then pre-emphasis with a replicated first sample, in one pass:
    # y[0] = (1 - a) (x[0] - m);  y[i] = x[i] - a x[i-1] - (1 - a) m
    y = np.empty_like(frames)
    np.subtract(frames[:, 1:], a * frames[:, :-1], out=y[:, 1:])
    y[:, 0] = a * frames[:, 0]
    np.subtract(frames[:, :1], y[:, :1], out=y[:, :1])
    y -= (1.0 - a) * mean
    y *= window
    spec = np.fft.rfft(y, n=n_fft, axis=1)                           # (n, n_fft/2 + 1)
    power = np.square(spec.real, dtype=np.float32)
    power += np.square(spec.imag, dtype=np.float32)
    mel = power @ banks                                              # (n, num_mel_bins)
    np.maximum(mel, _EPS, out=mel)
    return np.log(mel, out=mel)


def _frame(samples: np.ndarray, n: int, cfg: FrontEndConfig, index: np.ndarray | None = None) -> np.ndarray:
    # (num_samples,) -> (n, frame_length): a strided view, no copy; for a few frames, a copy through a
    # precomputed index, which costs less than building the view (the streaming case: 1-2 frames a call)
    if index is not None and n <= index.shape[0]:
        return samples[index[:n]]
    st = samples.strides[0]
    return np.lib.stride_tricks.as_strided(samples, shape=(n, cfg.frame_length), strides=(cfg.frame_shift * st, st),
                                           writeable=False)


def fbank(audio: np.ndarray, cfg: FrontEndConfig) -> np.ndarray:
    """Offline log-mel of a mono float32 signal at ``cfg.sample_rate``: ``(num_frames, num_mel_bins)``."""
    audio = np.asarray(audio, dtype=np.float32)
    n = num_frames(audio.shape[0], cfg)
    if n == 0:
        return np.zeros((0, cfg.num_mel_bins), dtype=np.float32)
    pad = _reflect_len(cfg)
    if pad:
        audio = _reflect_start(audio, pad)
    return _frames_to_fbank(_frame(audio, n, cfg), cfg)


def normalize(feats: np.ndarray, cfg: FrontEndConfig) -> np.ndarray:
    """AST normalisation ``(fbank - mean) / (2 * std)`` with the model's own statistics."""
    return ((feats - np.float32(cfg.mean)) / np.float32(2.0 * cfg.std)).astype(np.float32)


def silence_frame(cfg: FrontEndConfig) -> np.ndarray:
    """One normalised frame of digital silence ``(F,)``: what pads a clip shorter than one window."""
    return normalize(fbank(np.zeros(4 * cfg.frame_length, np.float32), cfg)[:1], cfg)[0]


class StreamingFbank:
    """Streaming log-mel: one call per chunk of any length, emitting only the new frames.

    Keeps the samples that do not yet make a whole frame (at most ``frame_length - frame_shift``
    once a frame has been emitted) and puts them in front of the next chunk.

    Args:
        cfg: front-end settings (travel with the model's weights).
    """

    def __init__(self, cfg: FrontEndConfig):
        self.cfg = cfg
        self._consts = _constants(cfg)
        self._index = self._consts[4]   # framing index for calls that complete only a few frames
        self._reflect = _reflect_len(cfg)
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)
        self._started = self._reflect == 0   # a centred front end first reflects the stream's start
        self.frames_emitted = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add mono float32 samples; return the ``(n_new, num_mel_bins)`` frames they complete."""
        buf = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)]) if self._pending.size else \
            np.asarray(samples, dtype=np.float32)
        if not self._started:
            if buf.shape[0] <= self._reflect:
                self._pending = buf.copy()
                return np.zeros((0, self.cfg.num_mel_bins), dtype=np.float32)
            buf = _reflect_start(buf, self._reflect)
            self._started = True
        n = _snip_frames(buf.shape[0], self.cfg)
        if n == 0:
            self._pending = buf.copy()
            return np.zeros((0, self.cfg.num_mel_bins), dtype=np.float32)
        out = _frames_to_fbank(_frame(buf, n, self.cfg, self._index), self.cfg, self._consts)
        self._pending = buf[n * self.cfg.frame_shift:].copy()
        self.frames_emitted += n
        return out
