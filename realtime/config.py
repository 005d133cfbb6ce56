"""Configuration that travels with the weights: one typed, frozen, NumPy-only tree.

:class:`ModelConfig` holds the labels, the front end (:class:`FrontEndConfig`), the default window
(:class:`WindowConfig`), the graph's input range (:class:`InputRange`) and the default detection settings
(:class:`DetectionSettings`). It is written into a checkpoint's ``config.json``, the ONNX metadata (key
``aed_config``) and a TensorRT plan's header, and read back by :meth:`ModelConfig.from_dict`, so that a runtime
never hard-codes the sample rate, the number of mel bins or the normalisation. Every field is checked when its
object is built; nothing else parses the dict.

Example:
    >>> fe = FrontEndConfig(num_mel_bins=64)
    >>> FrontEndConfig.from_dict(fe.to_dict()) == fe
    True
    >>> mc = ModelConfig(labels=("dog", "cat"), frontend=fe)
    >>> ModelConfig.from_dict(mc.to_dict()) == mc, mc.num_mel_bins
    (True, 64)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from realtime.errors import ConfigError

__all__ = ["ModelConfig", "FrontEndConfig", "WindowConfig", "InputRange", "DetectionSettings", "check_number",
           "is_finite_number", "seconds_to_frames", "efficientat_frontend", "AUDIOSET_MEAN", "AUDIOSET_STD",
           "FRONTEND_KINDS", "ONSET_ANCHORS", "ONSET_SOURCES", "MAX_BATCH", "OUTPUT_ACTIVATIONS"]

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
        return seconds_to_frames(self.window_s, frontend), seconds_to_frames(self.hop_s, frontend)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WindowConfig":
        return _from_dict(cls, d)


def seconds_to_frames(seconds: float, frontend: FrontEndConfig) -> int:
    """A duration in seconds as a whole number of front-end frames (at least 1): the one conversion."""
    return max(1, int(round(float(seconds) * frontend.frames_per_second)))


#: Where an event's onset is stamped in the window that crosses the threshold (see ``DetectorConfig``).
ONSET_ANCHORS = ("newest", "centre")
#: What the event tracker follows: the clip head's window score, or the frame head's newest frame, or the larger.
ONSET_SOURCES = ("clip", "frames", "max", "ola")
#: The most windows one ``infer`` call may take (a sanity bound; an engine's own limit is usually lower).
MAX_BATCH = 4096
OUTPUT_ACTIVATIONS = ("sigmoid", "softmax")


@dataclass(frozen=True)
class DetectionSettings:
    """How scores become events; travels with the weights as the ``thresholds`` object of a model config.

    Attributes:
        threshold: default opening threshold, in [0, 1] (stored as ``default``).
        thresholds: per-class opening thresholds by label (stored as ``per_class``).
        release_ratio: release threshold as a fraction of the opening one, in [0.01, 1].
        min_duration_s: shortest event that is reported, seconds.
        merge_gap_s: dips shorter than this do not split an event, seconds.
        onset_anchor: one of :data:`ONSET_ANCHORS`.
        onset_source: one of :data:`ONSET_SOURCES`.
        early_windows: score windows from the stream's first hop (the missing past padded).
        backdate_onsets: stamp an onset where the score first reached the release threshold on its way up.
        onset_refine: one of :data:`realtime.onsets.ONSET_REFINES`: ``"energy"`` re-stamps an opening event's onset at
            the strongest rise in level within ``onset_lookback_s`` before the tracker's stamp.
        onset_lookback_s: how far back ``"energy"`` looks, seconds.
        ola_delay_s: with ``onset_source="ola"``, how far behind the newest audio the tracked moment lies, seconds
            (a whole number of hops, less than one window).
    """

    threshold: float = 0.5
    thresholds: Mapping[str, float] = field(default_factory=dict)
    release_ratio: float = 0.75
    min_duration_s: float = 0.0
    merge_gap_s: float = 0.0
    onset_anchor: str = "newest"
    onset_source: str = "clip"
    early_windows: bool = False
    backdate_onsets: bool = False
    onset_refine: str = "none"
    onset_lookback_s: float = 1.0
    ola_delay_s: float = 0.2

    def __post_init__(self) -> None:
        check_number("threshold", self.threshold, 0.0, 1.0, "")
        if not isinstance(self.thresholds, Mapping):
            raise ConfigError(f"thresholds must map labels to numbers in [0, 1], got {type(self.thresholds).__name__}")
        for label, v in self.thresholds.items():
            check_number(f"the threshold of {label!r}", v, 0.0, 1.0, "")
        check_number("release_ratio", self.release_ratio, 0.01, 1.0, "")
        check_number("min_duration_s", self.min_duration_s, 0.0, 3600.0, "seconds")
        check_number("merge_gap_s", self.merge_gap_s, 0.0, 3600.0, "seconds")
        _check(self.onset_anchor in ONSET_ANCHORS,
               f"onset_anchor must be one of {ONSET_ANCHORS}, got {self.onset_anchor!r}")
        _check(self.onset_source in ONSET_SOURCES,
               f"onset_source must be one of {ONSET_SOURCES}, got {self.onset_source!r}")
        from realtime.onsets import ONSET_REFINES

        _check(self.onset_refine in ONSET_REFINES,
               f"onset_refine must be one of {ONSET_REFINES}, got {self.onset_refine!r}")
        check_number("onset_lookback_s", self.onset_lookback_s, 0.0, 10.0, "seconds")
        check_number("ola_delay_s", self.ola_delay_s, 0.0, 10.0, "seconds")
        for name in ("early_windows", "backdate_onsets"):
            _check(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")

    #: file key -> attribute (the file layout predates this class: ``default`` and ``per_class``)
    _FILE_KEYS = {"default": "threshold", "per_class": "thresholds"}

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["thresholds"] = dict(self.thresholds)
        inv = {v: k for k, v in self._FILE_KEYS.items()}
        return {inv.get(k, k): v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "DetectionSettings":
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ConfigError(f"the model config's 'thresholds' must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        kw = {}
        for k, v in d.items():
            attr = cls._FILE_KEYS.get(k, k)
            if attr not in names or k in cls._FILE_KEYS.values():
                raise ConfigError(f"unknown detection setting {k!r}; accepted: "
                                  f"{sorted(set(names) - set(cls._FILE_KEYS.values()) | set(cls._FILE_KEYS))}")
            kw[attr] = v
        if kw.get("thresholds") is None:
            kw.pop("thresholds", None)
        return cls(**kw)


@dataclass(frozen=True)
class InputRange:
    """What the graph accepts along time and batch: ``t_min <= T <= t_max`` frames, up to ``max_batch`` windows.

    (The feature axis is the front end's ``num_mel_bins``; it is stored once, there.)
    """

    t_min: int = 1
    t_max: int = 100000
    max_batch: int = 64

    def __post_init__(self) -> None:
        check_number("input t_min", self.t_min, 1, 10**6, "frames", integer=True)
        check_number("input t_max", self.t_max, self.t_min, 10**6, "frames", integer=True,
                     why=f"t_max must be at least t_min ({self.t_min})")
        check_number("max_batch", self.max_batch, 1, MAX_BATCH, "windows", integer=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that travels with a model's weights (``config.json``, ONNX metadata ``aed_config``, a TensorRT
    plan's header): the one typed view of it, read and checked once when a model loads.

    Attributes:
        name: the registry name of the architecture (``""`` for a graph without one).
        labels: one class name per output, unique.
        frontend: the log-mel front end (it holds ``num_mel_bins``, the graph's feature axis).
        window: default window and hop.
        input: the time and batch range the graph accepts.
        detection: default detection settings.
        kwargs: the architecture's constructor arguments.
        output_activation: ``sigmoid`` (multi-label) or ``softmax``.
        training: provenance and metrics, free-form, stored as given.
        base: empty for a complete checkpoint; for an adapter checkpoint (``aed train --peft``), the base model it
            was trained on: ``{"path": ..., "sha256": ... of its model.safetensors, "method": ...}``.
    """

    labels: tuple[str, ...]
    frontend: FrontEndConfig = field(default_factory=FrontEndConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    input: InputRange = field(default_factory=InputRange)
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    name: str = ""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    output_activation: str = "sigmoid"
    training: Mapping[str, Any] = field(default_factory=dict)
    base: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        self.validate()

    def validate(self) -> "ModelConfig":
        """Check the parts against each other (each part checked its own fields when it was built)."""
        _check(len(self.labels) > 0 and all(isinstance(lb, str) and lb.strip() for lb in self.labels),
               f"labels must be a non-empty list of non-empty strings, got {list(self.labels)[:5]!r}")
        dup = sorted({lb for lb in self.labels if self.labels.count(lb) > 1})
        _check(not dup, f"labels must be unique; repeated: {dup}")
        unknown = sorted(set(self.detection.thresholds) - set(self.labels))
        _check(not unknown, f"per-class thresholds for labels the model does not have: {unknown}")
        _check(self.output_activation in OUTPUT_ACTIVATIONS,
               f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {self.output_activation!r}")
        _check(not self.base or (isinstance(self.base.get("sha256"), str) and isinstance(self.base.get("path"), str)),
               f"base must name the base model's path and sha256, got {dict(self.base)!r}")
        for part, cls in (("frontend", FrontEndConfig), ("window", WindowConfig), ("input", InputRange),
                          ("detection", DetectionSettings)):
            _check(isinstance(getattr(self, part), cls), f"{part} must be a {cls.__name__}")
        return self

    @property
    def num_mel_bins(self) -> int:
        return self.frontend.num_mel_bins

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout of ``config.json`` and ``aed_config``."""
        return {"name": self.name, "kwargs": dict(self.kwargs), "labels": list(self.labels),
                "frontend": self.frontend.to_dict(), "window": self.window.to_dict(),
                "output_activation": self.output_activation, "input": self.input.to_dict(),
                "thresholds": self.detection.to_dict(), "training": dict(self.training),
                **({"base": dict(self.base)} if self.base else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], origin: str = "the model config") -> "ModelConfig":
        """Read the JSON layout, old checkpoints included; every error is a ConfigError that names ``origin``.

        Older layouts: ``input.num_mel_bins`` (now the front end's alone; it must agree with it), no ``frontend``
        (a Kaldi front end with that many bins), no ``max_batch`` (64), no ``thresholds`` (0.5 everywhere).
        """
        try:
            return cls._from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{origin}: {e}") from e
        except (TypeError, KeyError, AttributeError) as e:
            raise ConfigError(f"{origin}: malformed model config ({type(e).__name__}: {e})") from e

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        if isinstance(d, ModelConfig):
            return d
        _check(isinstance(d, Mapping), f"a model config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)} | {"thresholds"}
        unknown = sorted(set(d) - known - {"detection"})
        _check(not unknown, f"unknown model config keys {unknown}; accepted: {sorted(known - {'detection'})}")
        labels = d.get("labels")
        _check(isinstance(labels, (list, tuple)) and len(labels) > 0, "it has no 'labels' list")
        inp = dict(d.get("input") or {})
        _check(isinstance(d.get("input", {}), Mapping), "'input' must be a JSON object")
        old_bins = inp.pop("num_mel_bins", None)
        if "frontend" in d:
            frontend = FrontEndConfig.from_dict(dict(d["frontend"]))
        else:
            frontend = FrontEndConfig(num_mel_bins=old_bins if old_bins is not None else 128)
        _check(old_bins is None or old_bins == frontend.num_mel_bins,
               f"its front end gives {frontend.num_mel_bins} mel bins but its input takes {old_bins}")
        inp_known = {f.name for f in fields(InputRange)}
        _check(set(inp) <= inp_known, f"unknown input keys {sorted(set(inp) - inp_known)}; accepted: "
                                      f"{sorted(inp_known)}")
        return cls(labels=tuple(labels), frontend=frontend,
                   window=WindowConfig.from_dict(dict(d["window"])) if "window" in d else WindowConfig(),
                   input=InputRange(**inp),
                   detection=DetectionSettings.from_dict(d.get("thresholds", d.get("detection"))),
                   name=str(d.get("name") or ""), kwargs=dict(d.get("kwargs") or {}),
                   output_activation=d.get("output_activation", "sigmoid"),
                   training=dict(d.get("training") or {}), base=dict(d.get("base") or {}))
