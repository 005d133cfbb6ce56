"""Configuration that travels with the weights: the front end and the window/hop settings.

These frozen dataclasses are written into a checkpoint's ``config.json`` and into the ONNX
metadata (key ``aed_config``), so that a runtime never hard-codes the sample rate, the number of
mel bins or the normalisation.

Example:
    >>> fe = FrontEndConfig(num_mel_bins=64)
    >>> FrontEndConfig.from_dict(fe.to_dict()) == fe
    True
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any

from realtime.errors import ConfigError

__all__ = ["check_number", "is_finite_number", "FrontEndConfig", "WindowConfig", "AUDIOSET_MEAN", "AUDIOSET_STD", "FRONTEND_KINDS", "efficientat_frontend"]

# AST's AudioSet statistics (Gong et al., 2021); used only as the default of FrontEndConfig.
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974

#: ``kaldi``: torchaudio's Kaldi fbank (AST convention). ``efficientat``: EfficientAT's log-mel (centred STFT,
#: pre-emphasis and mel bands designed at ``reference_rate``, ``log(x + 1e-5)``); see :mod:`realtime.frontend`.
FRONTEND_KINDS = ("kaldi", "efficientat")


def _from_dict(cls, d: dict[str, Any]):
    if not isinstance(d, dict):
        raise ConfigError(f"{cls.__name__} must be a JSON object of settings, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys {sorted(unknown)}; accepted: {sorted(known)}")
    return cls(**d)


def is_finite_number(x: Any) -> bool:
    """``x`` is a real, finite number (bools and strings are not numbers here)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_number(name: str, value: Any, lo: float, hi: float, unit: str, integer: bool = False,
                  why: str = "") -> None:
    """``lo <= value <= hi`` (finite; whole when ``integer``), else a ConfigError saying what is accepted."""
    ok = is_finite_number(value) and lo <= value <= hi and (not integer or float(value).is_integer())
    if not ok:
        kind = "a whole number" if integer else "a number"
        unit = f" {unit}" if unit else ""
        lead = f"{why}: " if why else ""
        raise ConfigError(f"{lead}{name} must be {kind} from {lo:g} to {hi:g}{unit}, got {value!r}")


@dataclass(frozen=True)
class FrontEndConfig:
    """Log-mel front-end settings: Kaldi-compatible fbank (the AST convention) or EfficientAT's log-mel.

    Attributes:
        kind: one of :data:`FRONTEND_KINDS`.
        sample_rate: internal sample rate in Hz.
        num_mel_bins: number of mel bins (64 or 128, a model property).
        frame_length_ms: analysis window length.
        frame_shift_ms: hop between frames.
        preemphasis: pre-emphasis coefficient.
        low_freq: lowest mel edge in Hz.
        high_freq: highest mel edge in Hz; 0 or less means Nyquist plus this value (Kaldi).
        mean: normalisation mean; features are ``(fbank - mean) / (2 * std)``.
        std: normalisation standard deviation.
        reference_rate: ``efficientat`` only: the rate the pretrained front end ran at (32000). Its mel bands and
            pre-emphasis response are designed at that rate on the same FFT bin spacing, so a 16 kHz stream
            reproduces the 32 kHz features below 8 kHz (see :func:`efficientat_frontend`).
    """

    kind: str = "kaldi"
    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0
    mean: float = AUDIOSET_MEAN
    std: float = AUDIOSET_STD
    reference_rate: int = 0

    def __post_init__(self) -> None:
        _check(self.kind in FRONTEND_KINDS, f"front-end kind must be one of {FRONTEND_KINDS}, got {self.kind!r}")
        check_number("sample_rate", self.sample_rate, 4000, 192000, "Hz", integer=True)
        check_number("num_mel_bins", self.num_mel_bins, 1, 512, "", integer=True)
        check_number("frame_length_ms", self.frame_length_ms, 2.0, 200.0, "ms")
        check_number("frame_shift_ms", self.frame_shift_ms, 1.0, 100.0, "ms")
        check_number("preemphasis", self.preemphasis, 0.0, 1.0, "")
        check_number("mean", self.mean, -1e3, 1e3, "")
        check_number("std", self.std, 1e-6, 1e3, "")
        if self.kind == "efficientat":
            check_number("reference_rate", self.reference_rate, self.sample_rate, 384000, "Hz", integer=True,
                          why="an efficientat front end needs reference_rate >= sample_rate")
        else:
            _check(self.reference_rate == 0, f"reference_rate is for efficientat front ends only; got "
                                             f"{self.reference_rate!r} for kind {self.kind!r} (use 0)")
        design = self.reference_rate or self.sample_rate
        nyquist = design / 2
        check_number("low_freq", self.low_freq, 0.0, nyquist, "Hz")
        high = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
        _check(is_finite_number(self.high_freq) and self.low_freq < high <= nyquist,
               f"high_freq must give a top mel edge in (low_freq={self.low_freq}, {nyquist:g}] Hz (0 or less: Nyquist "
               f"plus this value), got {self.high_freq!r}")

    @property
    def frame_length(self) -> int:
        """Window length in samples (400 at 16 kHz)."""
        return int(round(self.sample_rate * self.frame_length_ms / 1000.0))

    @property
    def frame_shift(self) -> int:
        """Hop in samples (160 at 16 kHz)."""
        return int(round(self.sample_rate * self.frame_shift_ms / 1000.0))

    @property
    def frames_per_second(self) -> float:
        return 1000.0 / self.frame_shift_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FrontEndConfig":
        return _from_dict(cls, d)


def efficientat_frontend(sample_rate: int = 16000, num_mel_bins: int = 128) -> FrontEndConfig:
    """EfficientAT's front end (``AugmentMelSTFT`` in evaluation mode) fed at ``sample_rate``.

    At 32 kHz it is the original: a symmetric Hann window of 800 samples in a 1024-point FFT, hop 320, centred
    frames, pre-emphasis 0.97, 128 Kaldi mel bands from 0 to 15 kHz, ``log(x + 1e-5)``, then ``(x + 4.5) / 5``.
    At 16 kHz the window (25 ms), hop (10 ms) and FFT bin spacing (31.25 Hz) are kept: 400 samples in a 512-point
    FFT, hop 160; the 32 kHz pre-emphasis response and a gain of ``(32000 / 16000)^2`` are folded into the mel
    matrix, and the bands above 8 kHz receive no energy (as in any audio band-limited to 8 kHz).
    """
    return FrontEndConfig(kind="efficientat", sample_rate=sample_rate, num_mel_bins=num_mel_bins,
                          frame_length_ms=25.0, frame_shift_ms=10.0, preemphasis=0.97, low_freq=0.0,
                          high_freq=15000.0, mean=-4.5, std=2.5, reference_rate=32000)


@dataclass(frozen=True)
class WindowConfig:
    """Sliding-window settings, in seconds at the surface.

    Attributes:
        window_s: window length; any value from 0.5 s to 10 s.
        hop_s: time between consecutive windows.
    """

    window_s: float = 1.0
    hop_s: float = 0.1

    def __post_init__(self) -> None:
        if not (is_finite_number(self.window_s) and 0.5 <= self.window_s <= 10.0):
            raise ConfigError(f"window_s must be between 0.5 and 10 seconds, got {self.window_s!r}")
        if not (is_finite_number(self.hop_s) and 0.0 < self.hop_s <= self.window_s):
            raise ConfigError(f"hop_s must be in (0, window_s={self.window_s}] seconds, got {self.hop_s!r}")

    def frames(self, frontend: FrontEndConfig) -> tuple[int, int]:
        """Window and hop converted once to frames: ``(T, hop_frames)``."""
        fps = frontend.frames_per_second
        return max(1, int(round(self.window_s * fps))), max(1, int(round(self.hop_s * fps)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WindowConfig":
        return _from_dict(cls, d)
