"""Training features: the runtime's own log-mel and normalisation, and an in-memory/on-disk cache.

The log-mel is :func:`realtime.frontend.fbank` and the normalisation :func:`realtime.frontend.normalize`, with the
settings of a :class:`realtime.config.FrontEndConfig`, so training features are the runtime's features: there is
one implementation of each (the Kaldi front end matches ``torchaudio.compliance.kaldi.fbank``, AST convention; see
``tests/test_frontend.py``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from realtime import frontend
from realtime.config import FrontEndConfig
from realtime.errors import AudioError

__all__ = ["fbank", "normalise", "denormalise", "compute_features", "features_or_skip", "cached_features"]

log = logging.getLogger(__name__)


def fbank(audio: np.ndarray | torch.Tensor, fe: FrontEndConfig) -> torch.Tensor:
    """Raw (un-normalised) log-mel ``(frames, F)`` of mono audio at ``fe.sample_rate``: :func:`realtime.frontend.fbank`.

    Raises:
        AudioError: the audio is shorter than one frame.
    """
    wave = np.asarray(audio, dtype=np.float32).reshape(-1)
    if frontend.num_frames(wave.shape[0], fe) == 0:
        raise AudioError(f"audio of {wave.shape[0]} samples is too short to score; accepted: at least one frame "
                         f"({fe.frame_length} samples at {fe.sample_rate} Hz)")
    return torch.from_numpy(frontend.fbank(wave, fe))


def normalise(fb: torch.Tensor, fe: FrontEndConfig) -> torch.Tensor:
    """The runtime's :func:`realtime.frontend.normalize` on a tensor of log-mel (any shape): the model's input scale.

    The formula lives there only; this converts to NumPy and back (on the tensor's device).
    """
    out = frontend.normalize(fb.detach().cpu().numpy(), fe)
    return torch.from_numpy(out).to(fb.device)


def denormalise(x: torch.Tensor, fe: FrontEndConfig) -> torch.Tensor:
    """Inverse of :func:`normalise`: back to natural-log mel power."""
    return x * (2.0 * fe.std) + fe.mean


def compute_features(waves: Sequence[np.ndarray], fe: FrontEndConfig) -> list[torch.Tensor]:
    """Normalised log-mel ``(frames, F)`` float32 for each waveform."""
    return [normalise(fbank(w, fe), fe).float().contiguous() for w in waves]


def features_or_skip(waves: Sequence[np.ndarray], names: Sequence[str], fe: FrontEndConfig
                     ) -> tuple[list[torch.Tensor], list[int]]:
    """Like :func:`compute_features`, but a clip too short for one frame is logged by name and left out.

    Returns:
        ``(features, kept)``: the features of the clips long enough to score and their indices in ``waves``.
    """
    feats, kept = [], []
    for i, (w, name) in enumerate(zip(waves, names)):
        try:
            fb = fbank(w, fe)
        except AudioError as e:
            log.warning("skipping %s (%s)", name, e)
            continue
        feats.append(normalise(fb, fe).float().contiguous())
        kept.append(i)
    return feats, kept


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _key(paths: Sequence[str], fe: FrontEndConfig) -> str:
    """Path, size and modification time of every file, and the front end: a file changed in place is a new key."""
    files = [[p, _stat(p)] for p in paths]
    h = hashlib.sha1(json.dumps({"files": files, "fe": fe.to_dict()}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _read_cache(file: Path, n_paths: int, num_mel_bins: int) -> tuple[list[torch.Tensor], list[int]] | None:
    """The cached ``(features, kept)``, or None (with a warning) when the file is corrupt or does not fit."""
    try:
        with np.load(file, allow_pickle=False) as z:
            flat, lengths, kept = z["flat"], z["lengths"], z["kept"]
        lengths, kept = lengths.astype(np.int64).reshape(-1), kept.astype(np.int64).reshape(-1)
        if (flat.ndim != 2 or flat.shape[1] != num_mel_bins or flat.dtype != np.float32 or len(kept) != len(lengths)
                or (lengths < 0).any() or int(lengths.sum()) != flat.shape[0]
                or (len(kept) and (kept.min() < 0 or kept.max() >= n_paths))):
            raise ValueError(f"arrays of shapes flat {flat.shape}, lengths {lengths.shape}, kept {kept.shape} do not "
                             f"fit {n_paths} files of {num_mel_bins} mel bins")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("feature cache %s is unreadable (%s); rebuilding it", file, e)
        return None
    feats = [torch.from_numpy(a) for a in np.split(flat, np.cumsum(lengths)[:-1])] if len(lengths) else []
    return feats, kept.tolist()


def cached_features(paths: Sequence[str], waves_fn, fe: FrontEndConfig, cache_dir: str | Path | None
                    ) -> tuple[list[torch.Tensor], list[int]]:
    """Features for ``paths``, read from ``cache_dir`` when computed before (NumPy ``.npz``, no pickle).

    The cache key is every file's path, size and modification time plus ``fe``, so a file replaced or fixed in
    place is decoded again. A corrupt cache file is rebuilt (with a warning). A clip too short to score is left
    out, like one that does not decode: the files missing from ``kept_indices`` are the skipped ones, on a cache
    hit as on the run that built the cache.

    Args:
        paths: the files, in order; they (with their sizes and times) and ``fe`` make the cache key.
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
            hit = _read_cache(file, len(paths), fe.num_mel_bins)
            if hit is not None:
                log.info("read %d cached feature arrays from %s", len(hit[0]), file)
                return hit
    waves, decoded = waves_fn()
    decoded = list(decoded)
    feats, ok = features_or_skip(waves, [paths[i] for i in decoded], fe)
    kept = [decoded[i] for i in ok]
    if file is not None and feats:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npz")  # one per process: DDP ranks share the cache
        np.savez(tmp, flat=torch.cat(feats).numpy(), lengths=np.array([len(f) for f in feats], dtype=np.int64),
                 kept=np.array(kept, dtype=np.int64))
        tmp.replace(file)
    return feats, kept
