"""Onset stamping from the level of the frames (realtime.onsets), through the tracker, the detector and the
evaluation's trace replay."""
from dataclasses import replace

import numpy as np
import pytest

from realtime import Detector, DetectorConfig, FrontEndConfig, WindowConfig
from realtime.errors import ConfigError
from realtime.events import EventTracker
from realtime.onsets import OnsetEnvelope
from tests.audio_helpers import tone_burst

CFG = DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64), window=WindowConfig(1.0, 0.1))


class HalfFullEngine:
    """Scores 'burst' high only once loud frames fill more than half of the window: a slow classifier, whose
    events open about half a window after the sound began."""

    labels = ["burst"]
    config = {"frontend": {"num_mel_bins": 64}, "labels": labels}

    def infer(self, x: np.ndarray) -> np.ndarray:
        share = (x.max(axis=2) > 0.5).mean(axis=1)              # (B,) share of loud frames
        return (1.0 / (1.0 + np.exp(-20.0 * (share - 0.5)))).astype(np.float32)[:, None]


def test_envelope_finds_the_step_and_ignores_a_flat_stream():
    env = OnsetEnvelope(lag=3, min_strength=0.8)
    quiet, loud = np.full((120, 16), -12.0, np.float32), np.full((60, 16), -3.0, np.float32)
    pieces = np.concatenate([quiet, loud, quiet])
    for i in range(0, len(pieces), 7):                          # pushed in pieces: the same as at once
        env.push(pieces[i:i + 7])
    assert env.frames_seen == 300
    assert env.locate(0, 300) == 120                           # the first loud frame
    assert env.locate(150, 300) is None                        # a fall is not an onset
    assert env.locate(0, 100) is None                          # flat: nothing strong enough
    assert OnsetEnvelope(keep=50).push(pieces).shape == (300,)


def test_envelope_keeps_only_its_history():
    env = OnsetEnvelope(lag=2, keep=100)
    x = np.full((300, 8), -10.0, np.float32)
    x[50:] = 0.0                                                # the only rise, at frame 50
    env.push(x)
    assert env.frames_seen == 300 and len(env.values()) == 100
    assert env.locate(0, 300) is None                           # frame 50 is no longer kept
    with pytest.raises(ValueError, match="mel bins"):
        env.push(np.zeros(10, np.float32))


def test_tracker_locator_moves_the_stamp():
    seen = []

    def locate(t):
        seen.append(t)
        return 0.25

    tr = EventTracker(["a"], threshold=0.5, hop_s=0.1, onset_locator=locate)
    out = [e for i, s in enumerate([0.1, 0.2, 0.9, 0.9, 0.0]) for e in tr.update(i * 0.1, [s])]
    assert seen == [pytest.approx(0.2)]                           # called once, with the stamp it had chosen
    # later than the update is allowed: a tracker that follows a hop behind the newest audio (onset_source "ola")
    # can open an event whose sound starts after that hop; the detector's locator looks no further than the newest
    assert [(e.kind, round(e.onset_s, 3)) for e in out] == [("onset", 0.25), ("offset", 0.25)]
    tr = EventTracker(["a"], threshold=0.5, hop_s=0.1, onset_locator=lambda t: t - 0.15)
    out = [e for i, s in enumerate([0.1, 0.2, 0.9, 0.9, 0.0]) for e in tr.update(i * 0.1, [s])]
    assert out[0].onset_s == pytest.approx(0.05) and out[1].onset_s == pytest.approx(0.05)  # offset event agrees
    # never before the end of the class's previous event: events of one class do not overlap
    tr = EventTracker(["a"], threshold=0.5, hop_s=0.1, onset_locator=lambda t: 0.0)
    out = [e for i, s in enumerate([0.9, 0.9, 0.0, 0.0, 0.9, 0.0]) for e in tr.update(i * 0.1, [s])]
    assert [(e.kind, round(e.onset_s, 3)) for e in out][2] == ("onset", 0.2)
    assert out[2].onset_s >= out[1].offset_s
    tr = EventTracker(["a"], threshold=0.5, hop_s=0.1, onset_locator=lambda t: None)
    assert tr.update(0.3, [0.9])[0].onset_s == pytest.approx(0.3)


def _onsets_and_when(det, audio, chunk=1600):
    """(onset stamp, index of the push that emitted it) of every onset."""
    out = []
    for k, i in enumerate(range(0, len(audio), chunk)):
        out += [(e.onset_s, k) for e in det.push(audio[i:i + chunk]) if e.kind == "onset"]
    return out


def test_energy_refine_stamps_a_slow_classifier_at_the_sound_not_the_decision():
    audio = tone_burst(16000, 8.0, 2.0, 2.5, seed=1)
    plain = _onsets_and_when(Detector(HalfFullEngine(), CFG), audio)
    refined = _onsets_and_when(Detector(HalfFullEngine(), replace(CFG, onset_refine="energy")), audio)
    assert len(plain) == len(refined) == 1
    assert plain[0][0] > 2.3                                    # the decision comes half a window late
    assert abs(refined[0][0] - 2.0) <= 0.03                     # the rise in level is at the burst
    assert plain[0][1] == refined[0][1]                         # emitted by the same push: latency unchanged
    short = replace(CFG, onset_refine="energy", onset_lookback_s=0.05)
    assert Detector(HalfFullEngine(), short).process(audio)[0].onset_s > 2.3   # the rise lies beyond the look-back


def test_replay_of_a_recorded_trace_refines_like_the_stream():
    from models.training.sed_eval import record_trace, replay

    audio = tone_burst(16000, 9.0, 2.0, 2.0, seed=1) + tone_burst(16000, 9.0, 6.0, 1.5, freq=500, noise=0.0, seed=2)
    det = Detector(HalfFullEngine(), replace(CFG, onset_refine="energy"))
    streamed = [e for e in det.process(audio) if e.kind == "offset"]
    tr = record_trace(Detector(HalfFullEngine(), CFG), audio, "x")    # recorded without refinement
    assert tr.onset_strength is not None and len(tr.onset_strength) > 800
    closed, emitted = replay(det, tr)
    assert [round(e.onset, 3) for e in closed] == [round(e.onset_s, 3) for e in streamed]
    assert [round(o, 2) for _, o, _ in emitted] == pytest.approx([2.0, 6.0], abs=0.03)


def test_gap_starts_a_new_envelope():
    det = Detector(HalfFullEngine(), replace(CFG, onset_refine="energy"))
    det.push(tone_burst(16000, 3.0, 1.0, 0.3, seed=1))
    det.gap(2.0)
    assert det.onsets.frames_seen == 0
    ev = [e for e in det.process(tone_burst(16000, 6.0, 2.0, 2.0, seed=3)) if e.kind == "onset"]
    assert abs(ev[0].onset_s - 2.0) <= 0.03


@pytest.mark.parametrize("bad, match", [({"onset_refine": "spectral"}, "onset_refine must be one of"),
                                        ({"onset_lookback_s": -1.0}, "onset_lookback_s")])
def test_bad_refine_settings_say_what_is_accepted(bad, match):
    with pytest.raises(ConfigError, match=match):
        replace(CFG, **bad)


def test_refine_travels_in_the_model_config():
    from realtime.config import DetectionSettings

    d = DetectionSettings.from_dict({"default": 0.5, "onset_refine": "energy", "onset_lookback_s": 1.5})
    assert d.to_dict()["onset_refine"] == "energy" and d.onset_lookback_s == 1.5
    cfg = DetectorConfig.from_model({"labels": ["burst"], "thresholds": d.to_dict()})
    assert cfg.onset_refine == "energy" and cfg.onset_lookback_s == 1.5
