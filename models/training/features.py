"""Training features: the runtime's Kaldi log-mel (torchaudio reference) and an in-memory/on-disk cache.

The settings come from :class:`realtime.config.FrontEndConfig`, so that training features equal the
runtime's features sample for sample (``torchaudio.compliance.kaldi.fbank``, AST convention).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from realtime.config import FrontEndConfig

__all__ = ["fbank", "normalise", "denormalise", "compute_features", "cached_features"]

log = logging.getLogger(__name__)


def fbank(audio: np.ndarray | torch.Tensor, fe: FrontEndConfig) -> torch.Tensor:
    """Raw (un-normalised) log-mel filter banks ``(frames, F)`` of mono audio at ``fe.sample_rate``."""
    import torchaudio

    wave = torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(1, -1)  # (N,) -> (1, N)
    if wave.shape[1] < fe.frame_length:
        raise ValueError(f"audio of {wave.shape[1]} samples is shorter than one frame ({fe.frame_length} samples)")
    return torchaudio.compliance.kaldi.fbank(
        wave, htk_compat=True, use_energy=False, window_type="hanning", num_mel_bins=fe.num_mel_bins,
        dither=0.0, frame_shift=fe.frame_shift_ms, frame_length=fe.frame_length_ms,
        sample_frequency=fe.sample_rate, preemphasis_coefficient=fe.preemphasis, low_freq=fe.low_freq,
        high_freq=fe.high_freq, remove_dc_offset=True, snip_edges=True)


def normalise(fb: torch.Tensor, fe: FrontEndConfig) -> torch.Tensor:
    """``(fbank - mean) / (2 * std)``, the model's input scale."""
    return (fb - fe.mean) / (2.0 * fe.std)


def denormalise(x: torch.Tensor, fe: FrontEndConfig) -> torch.Tensor:
    """Inverse of :func:`normalise`: back to natural-log mel power."""
    return x * (2.0 * fe.std) + fe.mean


def compute_features(waves: Sequence[np.ndarray], fe: FrontEndConfig) -> list[torch.Tensor]:
    """Normalised log-mel ``(frames, F)`` float32 for each waveform."""
    return [normalise(fbank(w, fe), fe).float().contiguous() for w in waves]


def _key(paths: Sequence[str], fe: FrontEndConfig) -> str:
    h = hashlib.sha1(json.dumps({"paths": list(paths), "fe": fe.to_dict()}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def cached_features(paths: Sequence[str], waves_fn, fe: FrontEndConfig, cache_dir: str | Path | None
                    ) -> tuple[list[torch.Tensor], list[int]]:
    """Features for ``paths``, read from ``cache_dir`` when computed before (NumPy ``.npz``, no pickle).

    Args:
        paths: the files, in order; they and ``fe`` make the cache key.
        waves_fn: called with no argument to decode when the cache misses; returns ``(waves, kept_indices)``.
        fe: front-end settings.
        cache_dir: where to keep the cache; None disables it.

    Returns:
        ``(features, kept_indices)``: the features of the files that decoded, and their indices in ``paths``.
    """
    file = None
    if cache_dir is not None:
        file = Path(cache_dir) / f"feats-{_key(paths, fe)}.npz"
        if file.is_file():
            with np.load(file, allow_pickle=False) as z:
                flat, lengths, kept = z["flat"], z["lengths"], z["kept"]
            feats = [torch.from_numpy(a) for a in np.split(flat, np.cumsum(lengths)[:-1])]
            log.info("read %d cached feature arrays from %s", len(feats), file)
            return feats, kept.tolist()
    waves, kept = waves_fn()
    feats = compute_features(waves, fe)
    if file is not None and feats:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp.npz")
        np.savez(tmp, flat=torch.cat(feats).numpy(), lengths=np.array([len(f) for f in feats]),
                 kept=np.array(kept, dtype=np.int64))
        tmp.replace(file)
    return feats, list(kept)
