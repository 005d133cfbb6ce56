"""Training material for a sound-event detector: event clips with activity masks, and a bank of negatives.

Everything is cached as normalised log-mel from the runtime's own front end (:func:`realtime.frontend.fbank`),
so training features are the runtime's features. Sums of sounds happen in the mel power domain.

- Event clips: each clip's per-frame activity comes from its own energy (frames within ``activity_db`` of the
  clip's loudest frame, widened by ``dilate`` frames), so a crop of a clip's silent stretch is labelled
  "nothing", never the clip's class.
- Negatives (:class:`NegativeBank`): digital silence, 1-LSB dither, the background recordings (the first
  ``noise_train_fraction`` of each for training, the rest held out for evaluation), coloured noise (white,
  pink, brown) and synthetic speech from ``espeak-ng`` (cached WAVs; different sentences and voices for the
  training and the evaluation split).

Example:
    >>> from realtime.config import efficientat_frontend
    >>> fe = efficientat_frontend()
    >>> x = np.zeros(16000, np.float32); x[4000:8000] = 0.1 * np.sin(np.arange(4000))
    >>> m = activity_mask(features(x, fe), fe)
    >>> bool(m[10]), bool(m[50])
    (False, True)
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from realtime.config import FrontEndConfig
from realtime.frontend import fbank, normalize

from .features import denormalise, normalise

__all__ = ["features", "power", "from_power", "activity_mask", "coloured_noise", "dither", "speech_clips",
           "NegativeBank", "build_negative_bank", "SPEECH_TRAIN", "SPEECH_EVAL"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_LOG_OFFSET = 1e-5  # the efficientat front end's log(x + 1e-5); the kaldi one floors at float32 eps


def features(audio: np.ndarray, fe: FrontEndConfig) -> torch.Tensor:
    """Normalised log-mel ``(frames, F)`` of mono float32 audio at ``fe.sample_rate`` (the runtime's code)."""
    return torch.from_numpy(normalize(fbank(np.asarray(audio, np.float32), fe), fe))


def _offset(fe: FrontEndConfig) -> float:
    return _LOG_OFFSET if fe.kind == "efficientat" else 0.0


def power(x: torch.Tensor, fe: FrontEndConfig) -> torch.Tensor:
    """Normalised log-mel -> mel power (the inverse of ``normalize`` then of the log)."""
    return (torch.exp(denormalise(x, fe)) - _offset(fe)).clamp_min(0.0)


def from_power(p: torch.Tensor, fe: FrontEndConfig) -> torch.Tensor:
    """Mel power -> normalised log-mel."""
    off = _offset(fe)
    logp = torch.log(p + off) if off > 0 else torch.log(p.clamp_min(float(np.finfo(np.float32).eps)))
    return normalise(logp, fe)


def activity_mask(x: torch.Tensor, fe: FrontEndConfig, activity_db: float = 25.0, floor_db: float = -75.0,
                  dilate: int = 3) -> torch.Tensor:
    """Frames ``(N,)`` bool where the clip is active: within ``activity_db`` of its loudest frame and above
    ``floor_db`` (dB of mel power relative to a full-scale sine's order of magnitude), widened by ``dilate``."""
    e = power(x, fe).sum(dim=1)                                    # (N,) mel power per frame
    db = 10.0 * torch.log10(e + 1e-12)
    peak = float(db.max()) if len(db) else 0.0
    m = (db >= peak - activity_db) & (db >= floor_db)
    if dilate > 0 and m.any():
        m = torch.nn.functional.max_pool1d(m.float()[None, None], 2 * dilate + 1, 1, dilate)[0, 0] > 0
    return m


def coloured_noise(kind: str, seconds: float, rng: np.random.Generator, dbfs: float = -30.0) -> np.ndarray:
    """White, pink (1/f) or brown (1/f^2) Gaussian noise at ``dbfs`` RMS."""
    n = int(seconds * SAMPLE_RATE)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    f[0] = f[1]
    slope = {"white": 0.0, "pink": 0.5, "brown": 1.0}[kind]
    x = np.fft.irfft(spec / f ** slope, n)
    x *= 10.0 ** (dbfs / 20.0) / (np.sqrt(np.mean(x ** 2)) + 1e-20)
    return x.astype(np.float32)


def dither(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """1-LSB (16-bit) triangular dither: what a silent 16-bit input with dither delivers."""
    n = int(seconds * SAMPLE_RATE)
    return ((rng.random(n) - rng.random(n)) / 32768.0).astype(np.float32)


# Sentences for espeak-ng: the training and evaluation splits share no sentence and no voice.
SPEECH_TRAIN = {
    "voices": ["en-us", "en", "de", "fr", "es", "it", "nl", "pl"],
    "sentences": ["the quick brown fox jumps over the lazy dog", "please turn off the lights before you leave",
                  "we will meet at the station at half past nine", "can you hear me now, hello, hello",
                  "the weather tomorrow will be cloudy with some rain", "one two three four five six seven",
                  "I think the meeting has been moved to Thursday", "where did you put the keys to the car",
                  "this is a test of the announcement system", "dinner is ready, come and eat"],
}
SPEECH_EVAL = {
    "voices": ["en-gb-x-rp", "pt", "sv", "cs"],
    "sentences": ["the delivery will arrive some time this afternoon", "let us go for a walk in the park later",
                  "my phone number has changed since last year", "attention please, the train is delayed",
                  "I would like a coffee with milk and no sugar"],
}


def speech_clips(split: dict, cache_dir: str | Path, rng: np.random.Generator) -> list[np.ndarray]:
    """Synthesise ``split``'s sentences with each voice (varied speed and pitch) with espeak-ng; cached as WAV.

    Returns an empty list (with a warning) where ``espeak-ng`` is not installed (Debian package ``espeak-ng``).
    """
    from .data import read_audio_at

    exe = shutil.which("espeak-ng")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for v in split["voices"]:
        for s in split["sentences"]:
            speed, pitch = int(rng.integers(120, 200)), int(rng.integers(20, 80))
            key = hashlib.sha1(f"{v}|{s}|{speed}|{pitch}".encode()).hexdigest()[:12]
            wav = cache / f"{key}.wav"
            if not wav.is_file():
                if exe is None:
                    log.warning("espeak-ng is not installed (apt install espeak-ng): no synthetic speech negatives")
                    return []
                tmp = wav.with_suffix(".tmp.wav")
                subprocess.run([exe, "-v", v, "-s", str(speed), "-p", str(pitch), "-w", str(tmp), s], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                tmp.replace(wav)
            out.append(read_audio_at(wav, SAMPLE_RATE))
    return out


@dataclass
class NegativeBank:
    """Normalised log-mel of sounds that contain none of the classes, by kind, each at a reference level.

    ``level_db`` is each recording's RMS in dBFS as stored; training draws a new level per example.
    """

    feats: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    level_db: dict[str, list[float]] = field(default_factory=dict)
    audio: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, kind: str, audio: np.ndarray, fe: FrontEndConfig, keep_audio: bool = False) -> None:
        if len(audio) < fe.sample_rate // 2:
            return
        rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-20)
        self.feats.setdefault(kind, []).append(features(audio, fe))
        self.level_db.setdefault(kind, []).append(20.0 * np.log10(rms))
        if keep_audio:
            self.audio.setdefault(kind, []).append(audio)

    @property
    def kinds(self) -> list[str]:
        return sorted(self.feats)


def build_negative_bank(fe: FrontEndConfig, noise_dir: str | Path | None, split: str, cache_dir: str | Path,
                        noise_train_fraction: float = 0.7, seed: int = 0, keep_audio: bool = False,
                        speech: bool = True) -> NegativeBank:
    """The negatives of one split (``"train"`` or ``"eval"``): recordings, coloured noise, dither, speech (unless
    ``speech`` is False), silence."""
    from .data import read_audio_at

    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    rng = np.random.default_rng(seed + (0 if split == "train" else 1000))
    bank = NegativeBank()
    if noise_dir and Path(noise_dir).is_dir():
        for p in sorted(Path(noise_dir).glob("*.flac")) + sorted(Path(noise_dir).glob("*.wav")):
            x = read_audio_at(p, fe.sample_rate)
            cut = int(len(x) * noise_train_fraction)
            bank.add(f"recording:{p.stem}", x[:cut] if split == "train" else x[cut:], fe, keep_audio)
    for kind in ("white", "pink", "brown"):
        bank.add(f"coloured:{kind}", coloured_noise(kind, 20.0, rng), fe, keep_audio)
    bank.add("dither", dither(20.0, rng), fe, keep_audio)
    bank.add("silence", np.zeros(SAMPLE_RATE * 5, np.float32), fe, keep_audio)
    for x in speech_clips(SPEECH_TRAIN if split == "train" else SPEECH_EVAL, Path(cache_dir) / f"speech-{split}",
                          rng) if speech else []:
        bank.add("speech", x, fe, keep_audio)
    log.info("negative bank (%s): %s", split, {k: len(v) for k, v in bank.feats.items()})
    return bank


def clip_arrays(paths: Sequence[Path], fe: FrontEndConfig) -> list[np.ndarray]:
    """Decode clips at the front end's rate with the trainer's reader (:func:`models.training.data.read_audio_at`)."""
    from .data import read_audio_at

    return [read_audio_at(p, fe.sample_rate) for p in paths]
