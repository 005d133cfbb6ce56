"""Soundscape synthesiser (the method behind DESED and URBAN-SED): event clips mixed onto backgrounds.

Each soundscape takes a random stretch of a background recording and adds event clips at random
onsets and SNRs; events may overlap. An event's boundaries come from its clip's energy (the first
and last frame within ``activity_db`` of the clip's loudest frame), and only that active span is
mixed in, so the labels are tight. Writes ``audio/*.wav`` and ``labels.tsv`` (DCASE strong labels).
Everything random is drawn from one ``numpy.random.Generator(seed)``: the same seed gives the same
files and labels.

Example:
    >>> events = load_esc50("../shared/data/esc50", folds=[4])  # doctest: +SKIP
    >>> rows = synthesise(events, ["../shared/data/noise/running_tap.flac"], "runs/scapes", 20, seed=0)  # doctest: +SKIP
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from realtime.errors import AudioError, ConfigError

from .data import ClipDataset, StrongLabel, read_audio_at, write_dcase_tsv

__all__ = ["SynthConfig", "active_bounds", "active_runs", "synthesise", "mix_soundscape"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthConfig:
    """Soundscape settings (seconds and decibels).

    Attributes:
        duration_s: length of each soundscape.
        events: the number of events per soundscape, drawn uniformly from this inclusive range.
        snr_db: event-to-background SNR range (RMS over the event's active frames vs. the background).
        background_dbfs: background RMS level in dB full scale.
        activity_db: a frame is active when within this many dB of the clip's loudest frame.
        frame_s: frame length of the energy analysis.
        min_event_s: active spans shorter than this are widened around their centre.
        sample_rate: output rate.
        split_events: label each active run of a clip as its own event (a dog clip with three barks gives three
            events), runs closer than ``min_gap_s`` joined; otherwise one event from the first to the last
            active frame.
        audible_db: with ``split_events``, a stretch of an event more than ``-audible_db`` dB under the background's
            RMS is buried in it and is not labelled (the same rule as the training targets' local SNR).
        min_gap_s: quiet stretches shorter than this do not split an event (1 s: a detector with 1 s windows
            cannot resolve faster repetitions, and annotators label a run of ticks, steps or clucks as one
            event, as DESED does; barks a second or more apart stay separate events).
    """

    duration_s: float = 10.0
    events: tuple[int, int] = (1, 4)
    snr_db: tuple[float, float] = (6.0, 24.0)
    background_dbfs: float = -35.0
    activity_db: float = 30.0
    frame_s: float = 0.02
    min_event_s: float = 0.1
    sample_rate: int = 16000
    split_events: bool = True
    min_gap_s: float = 1.0
    audible_db: float = -6.0


def active_bounds(audio: np.ndarray, sample_rate: int, activity_db: float = 30.0, frame_s: float = 0.02
                  ) -> tuple[int, int]:
    """The ``[start, end)`` samples from the first to the last frame within ``activity_db`` of the peak frame."""
    hop = max(1, int(round(frame_s * sample_rate)))
    n = len(audio) // hop
    if n == 0:
        return 0, len(audio)
    frames = audio[:n * hop].reshape(n, hop)  # (N,) -> (frames, hop)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-20)
    active = np.nonzero(rms >= rms.max() * 10.0 ** (-activity_db / 20.0))[0]
    if len(active) == 0 or rms.max() <= 1e-8:
        return 0, 0
    return int(active[0] * hop), int(min(len(audio), (active[-1] + 1) * hop))


def active_runs(audio: np.ndarray, sample_rate: int, activity_db: float = 30.0, frame_s: float = 0.02,
                min_gap_s: float = 0.25, min_event_s: float = 0.1, floor_rms: float = 0.0) -> list[tuple[int, int]]:
    """``[start, end)`` sample spans of the runs of frames within ``activity_db`` of the peak frame.

    Frames with an RMS under ``floor_rms`` (e.g. the background's level: a stretch buried in the noise) are not
    active either. Runs separated by less than ``min_gap_s`` are joined; runs shorter than ``min_event_s`` are
    dropped.
    """
    hop = max(1, int(round(frame_s * sample_rate)))
    n = len(audio) // hop
    if n == 0:
        return []
    rms = np.sqrt(np.mean(audio[:n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1) + 1e-20)
    if rms.max() <= 1e-8:
        return []
    act = (rms >= rms.max() * 10.0 ** (-activity_db / 20.0)) & (rms >= floor_rms)
    edges = np.diff(np.concatenate([[0], act.astype(np.int8), [0]]))
    runs = list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]))   # [start, end) in frames
    merged: list[list[int]] = []
    gap = int(round(min_gap_s / frame_s))
    for a, b in runs:
        if merged and a - merged[-1][1] < gap:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    keep = int(round(min_event_s / frame_s))
    return [(int(a * hop), int(min(len(audio), b * hop))) for a, b in merged if b - a >= keep]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-20))


def mix_soundscape(background: np.ndarray, events: Sequence[tuple[np.ndarray, str]], cfg: SynthConfig,
                   rng: np.random.Generator, name: str) -> tuple[np.ndarray, list[StrongLabel]]:
    """Mix ``events`` (audio, label) onto a random stretch of ``background``; return the mix and its labels."""
    sr = cfg.sample_rate
    n = int(round(cfg.duration_s * sr))
    if len(background) < n:
        background = np.tile(background, int(np.ceil(n / max(1, len(background)))) + 1)
    start = int(rng.integers(0, len(background) - n + 1))
    mix = background[start:start + n].astype(np.float64)
    mix *= 10.0 ** (cfg.background_dbfs / 20.0) / _rms(mix)
    bg_rms = _rms(mix)
    rows = []
    for audio, label in events:
        a, b = active_bounds(audio, sr, cfg.activity_db, cfg.frame_s)
        if b - a < int(cfg.min_event_s * sr):
            continue  # a silent clip has no event to label
        ev = audio[a:b].astype(np.float64)[:n]
        onset = int(rng.integers(0, n - len(ev) + 1))
        snr = float(rng.uniform(*cfg.snr_db))
        ev = ev * (bg_rms * 10.0 ** (snr / 20.0) / _rms(ev))
        mix[onset:onset + len(ev)] += ev
        if cfg.split_events:
            floor = bg_rms * 10.0 ** (cfg.audible_db / 20.0)
            for ra, rb in active_runs(ev, sr, cfg.activity_db, cfg.frame_s, cfg.min_gap_s, cfg.min_event_s, floor):
                rows.append(StrongLabel(name, (onset + ra) / sr, (onset + rb) / sr, label))
        else:
            rows.append(StrongLabel(name, onset / sr, (onset + len(ev)) / sr, label))
    peak = np.abs(mix).max()
    if peak > 0.99:
        mix *= 0.99 / peak
    rows.sort(key=lambda r: (r.onset, r.event_label))
    return mix.astype(np.float32), rows


def synthesise(events: ClipDataset, backgrounds: Sequence[str | Path], out_dir: str | Path, count: int,
               seed: int = 0, cfg: SynthConfig | None = None) -> list[StrongLabel]:
    """Write ``count`` soundscapes to ``out_dir/audio/scape_XXXX.wav`` and their labels to ``out_dir/labels.tsv``.

    Args:
        events: labelled event clips to draw from (e.g. an ESC-50 fold).
        backgrounds: background recordings.
        out_dir: output folder.
        count: number of soundscapes.
        seed: the seed of every random choice.
        cfg: synthesis settings.

    Returns:
        The strong labels written to ``labels.tsv``.
    """
    import soundfile as sf

    cfg = cfg or SynthConfig()
    if not events.items:
        raise ConfigError("no event clips to mix")
    if not backgrounds:
        raise ConfigError("no background recordings to mix onto")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    bgs = [read_audio_at(p, cfg.sample_rate) for p in backgrounds]
    cache: dict[int, np.ndarray | None] = {}
    rows: list[StrongLabel] = []
    skipped = 0
    for k in range(count):
        name = f"scape_{k:04d}.wav"
        bg = bgs[int(rng.integers(len(bgs)))]
        chosen = []
        for _ in range(int(rng.integers(cfg.events[0], cfg.events[1] + 1))):
            i = int(rng.integers(len(events.items)))
            if i not in cache:
                try:
                    cache[i] = read_audio_at(events.items[i].path, cfg.sample_rate)
                except (AudioError, FileNotFoundError) as e:
                    log.warning("skipping unreadable event clip %s (%s)", events.items[i].path.name, e)
                    cache[i] = None
                    skipped += 1
            if cache[i] is not None:
                chosen.append((cache[i], events.labels[events.items[i].label]))
        mix, labels = mix_soundscape(bg, chosen, cfg, rng, name)
        sf.write(str(out / "audio" / name), mix, cfg.sample_rate, subtype="FLOAT")
        rows.extend(labels)
    write_dcase_tsv(out / "labels.tsv", rows)
    if skipped:
        log.warning("skipped %d unreadable event clip(s)", skipped)
    return rows
