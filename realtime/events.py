"""Score traces to events: a pure state machine, testable without any model.

Per class: an event opens when the score reaches the class threshold and has stayed at or above
the release threshold (``threshold * release_ratio``) for ``min_duration_s``; it closes when the
score has stayed below the release threshold for longer than ``merge_gap_s``. A dip shorter than
the merge gap does not split an event. Each event is emitted twice: ``kind='onset'`` when it
opens (``offset_s`` None) and ``kind='offset'`` when it closes.

Example:
    >>> tr = EventTracker(["dog"], threshold=0.5, hop_s=0.1, min_duration_s=0.0, merge_gap_s=0.0)
    >>> [e.kind for t, s in [(1.0, 0.9), (1.1, 0.9), (1.2, 0.1)] for e in tr.update(t, [s])]
    ['onset', 'offset']
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from realtime.errors import ConfigError

__all__ = ["Event", "EventTracker"]


@dataclass(frozen=True)
class Event:
    """A detected event. ``offset_s`` is None while the event is still open."""

    label: str
    onset_s: float
    offset_s: float | None
    score: float
    kind: str = "onset"

    @property
    def duration_s(self) -> float | None:
        return None if self.offset_s is None else self.offset_s - self.onset_s

    def to_dict(self) -> dict:
        d = asdict(self)
        d["onset_s"] = round(self.onset_s, 4)
        d["offset_s"] = None if self.offset_s is None else round(self.offset_s, 4)
        d["score"] = round(self.score, 4)
        return d


class _ClassState:
    __slots__ = ("active", "emitted", "onset", "last_above", "peak", "candidate_since", "rise_since", "closed_at")

    def __init__(self) -> None:
        self.active = False          # above threshold run in progress (maybe not yet emitted)
        self.emitted = False         # onset already emitted
        self.onset = 0.0
        self.last_above = 0.0        # time the score was last >= release threshold
        self.peak = 0.0
        self.candidate_since = None  # time the score first fell below release (for merge gap)
        self.rise_since = None       # while closed: time the score has been >= release since (for backdating)
        self.closed_at = None        # offset of this class's last emitted event (a re-stamped onset stays after it)


class EventTracker:
    """Hysteresis, minimum duration and merge gap over per-window scores.

    Args:
        labels: class names, in score order.
        threshold: default opening threshold in [0, 1].
        thresholds: per-class overrides, by label.
        release_ratio: the release threshold is ``threshold * release_ratio``.
        min_duration_s: an event must last this long before it is emitted.
        merge_gap_s: dips below the release threshold shorter than this do not close an event.
        hop_s: time between score updates; an event's last hop extends its offset.
        backdate_onsets: place an onset where the score first rose to the release threshold in the run of
            updates that reached the opening threshold, not at the update that reached it (the event is still
            emitted at the same moment; only its time stamp moves back).
        onset_locator: optional ``f(t_start) -> t | None``, called as a run opens with the stamp chosen so far; a
            number re-stamps the onset there (the detector's :class:`realtime.onsets.OnsetEnvelope`, which looks no
            further than the newest audio), None keeps it. Never before the end of the class's previous event.
    """

    def __init__(self, labels: Sequence[str], threshold: float = 0.5, thresholds: Mapping[str, float] | None = None,
                 release_ratio: float = 0.75, min_duration_s: float = 0.0, merge_gap_s: float = 0.0,
                 hop_s: float = 0.1, backdate_onsets: bool = False,
                 onset_locator: Callable[[float], float | None] | None = None):
        self.labels = list(labels)
        if not self.labels:
            raise ConfigError("EventTracker needs at least one label")
        thresholds = dict(thresholds or {})
        unknown = set(thresholds) - set(self.labels)
        if unknown:
            raise ConfigError(f"thresholds given for unknown labels {sorted(unknown)}")
        for name, v in [("threshold", threshold), *thresholds.items()]:
            if not (0.0 <= float(v) <= 1.0):
                raise ConfigError(f"threshold for {name!r} must be in [0, 1], got {v}")
        if not (0.0 < release_ratio <= 1.0):
            raise ConfigError(f"release_ratio must be in (0, 1], got {release_ratio}")
        if min_duration_s < 0 or merge_gap_s < 0 or hop_s <= 0:
            raise ConfigError("min_duration_s and merge_gap_s must be >= 0 and hop_s > 0 seconds")
        self.on = np.array([float(thresholds.get(l, threshold)) for l in self.labels], dtype=np.float64)
        self.off = self.on * release_ratio
        self.min_duration_s = float(min_duration_s)
        self.merge_gap_s = float(merge_gap_s)
        self.hop_s = float(hop_s)
        self.backdate_onsets = bool(backdate_onsets)
        self.onset_locator = onset_locator
        self.reset()

    def reset(self) -> None:
        self._state = [_ClassState() for _ in self.labels]

    def open_events(self) -> list[Event]:
        """Events that have been emitted and are still open."""
        return [Event(self.labels[i], s.onset, None, s.peak, "onset")
                for i, s in enumerate(self._state) if s.active and s.emitted]

    def update(self, t_onset: float, scores: Sequence[float], t_offset: float | None = None) -> list[Event]:
        """Feed one score vector.

        Args:
            t_onset: time the newest audio in this window starts (where a new event is placed).
            scores: per-class scores ``(C,)``.
            t_offset: time at which a fall below release is placed (default ``t_onset``).
        """
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(self.labels),):
            raise ValueError(f"expected {len(self.labels)} scores, got shape {scores.shape}")
        t_off = t_onset if t_offset is None else t_offset
        out: list[Event] = []
        for i, s in enumerate(self._state):
            x = float(scores[i])
            if not s.active:
                if x >= self.off[i]:
                    s.rise_since = t_onset if s.rise_since is None else s.rise_since
                else:
                    s.rise_since = None
                if x >= self.on[i]:
                    start = s.rise_since if self.backdate_onsets and s.rise_since is not None else t_onset
                    if self.onset_locator is not None:
                        found = self.onset_locator(start)
                        start = start if found is None else float(found)
                        if s.closed_at is not None:
                            start = max(start, s.closed_at)
                    s.active, s.emitted, s.onset, s.peak, s.candidate_since = True, False, start, x, None
                    s.last_above = t_onset
                    s.rise_since = None
                    self._maybe_emit_onset(i, s, t_onset, out)
                continue
            if x >= self.off[i]:
                s.peak = max(s.peak, x)
                s.last_above = t_onset
                s.candidate_since = None
                self._maybe_emit_onset(i, s, t_onset, out)
                continue
            # below release
            if s.candidate_since is None:
                s.candidate_since = max(t_off, s.onset)
            if t_onset + self.hop_s - s.candidate_since > self.merge_gap_s or not s.emitted:
                self._close(i, s, out)
        return out

    def _maybe_emit_onset(self, i: int, s: _ClassState, t: float, out: list[Event]) -> None:
        if not s.emitted and (t + self.hop_s - s.onset) >= self.min_duration_s - 1e-9:
            s.emitted = True
            out.append(Event(self.labels[i], s.onset, None, s.peak, "onset"))

    def _close(self, i: int, s: _ClassState, out: list[Event]) -> None:
        if s.emitted:
            offset = max(s.candidate_since if s.candidate_since is not None else s.last_above, s.onset + self.hop_s)
            out.append(Event(self.labels[i], s.onset, offset, s.peak, "offset"))
            s.closed_at = offset
        s.active, s.emitted, s.candidate_since = False, False, None

    def flush(self, t_end: float) -> list[Event]:
        """Close every open event at ``t_end`` (end of a file or of a stream)."""
        out: list[Event] = []
        for i, s in enumerate(self._state):
            if s.active and s.emitted:
                if s.candidate_since is None:
                    s.candidate_since = max(t_end, s.onset + self.hop_s)
                self._close(i, s, out)
            s.active, s.emitted, s.candidate_since = False, False, None
        return out
