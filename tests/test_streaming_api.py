"""The streaming API (issue 16): the engine apart from per-stream state, the AudioSource protocol, the input rate
as a fact of the stream (LiveRunner never rebuilds the caller's detector), detectors swapped between blocks."""
from __future__ import annotations

import numpy as np
import pytest

from realtime import Detector, DetectorConfig, FrontEndConfig, WindowConfig
from realtime.audio_source import AudioSource
from realtime.capture import MicrophoneCapture, StreamClock
from realtime.errors import ConfigError
from realtime.pipeline import LiveRunner
from realtime.ring import Gap, RingBuffer
from realtime.sources import ArraySource, FileSource
from tests.audio_helpers import LoudnessEngine, tone_burst

HOP = 0.1
CFG = DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64), window=WindowConfig(1.0, HOP))


def _bursts(rate: int, total_s: float = 6.0, at=(1.0, 4.0)) -> np.ndarray:
    return sum(tone_burst(rate, total_s, t, 0.3, seed=i) for i, t in enumerate(at))


def _onsets(events) -> list[float]:
    return [e.onset_s for e in events if e.kind == "onset"]


class ListSource:
    """An AudioSource that is neither a microphone nor an ArraySource: given blocks and gaps, opened by start()."""

    def __init__(self, rate: int, items: list):
        self._rate, self.items, self.rate = rate, items, None
        self.started = self.stopped = 0
        self._gaps: list[Gap] = []

    def start(self) -> "ListSource":
        self.started += 1
        self.rate = self._rate
        return self

    def blocks(self):
        for item in self.items:
            if isinstance(item, Gap):
                self._gaps.append(item)
                continue
            yield item

    def take_gaps(self) -> list[Gap]:
        gaps, self._gaps = self._gaps, []
        return gaps

    def stop(self) -> None:
        self.stopped += 1


def test_sources_satisfy_the_protocol(tmp_path):
    import soundfile as sf

    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(1600, np.float32), 16000)
    cap = MicrophoneCapture(samplerate=48000)
    for src in (ArraySource(np.zeros(1600, np.float32), 16000), FileSource(path), cap, ListSource(8000, [])):
        assert isinstance(src, AudioSource), type(src).__name__
    assert cap.rate is None                       # known once started
    cap.samplerate = 48000
    assert cap.rate == 48000
    with pytest.raises(TypeError, match="AudioSource"):
        LiveRunner(Detector(LoudnessEngine(), CFG), object())


def test_runner_refuses_a_rate_mismatch_and_keeps_the_callers_detector():
    audio = _bursts(48000)
    det = Detector(LoudnessEngine(), CFG)                     # 16 kHz, the model's rate
    with pytest.raises(ConfigError) as err:
        LiveRunner(det, ArraySource(audio, 48000))
    msg = str(err.value)
    assert "\n" not in msg and "16000 Hz" in msg and "48000 Hz" in msg
    assert "DetectorConfig.from_model(engine.config).override(input_rate=48000)" in msg

    src = ArraySource(audio, 48000, block_s=0.05)
    det = Detector(LoudnessEngine(), DetectorConfig.from_model(LoudnessEngine().config).override(
        window_s=1.0, hop_s=HOP, input_rate=src.rate))
    runner = LiveRunner(det, src)
    runner.run_blocking()
    assert runner.error is None and runner.detector is det              # used as it is, never rebuilt
    offline = Detector(LoudnessEngine(), det.config).process(audio)
    assert runner.all_events == offline and len(_onsets(offline)) == 2
    s = runner.summary()
    assert s["audio_s"] == pytest.approx(6.0) and s["lost_s"] == 0.0 and s["overruns"] == 0 and s["swaps"] == 0


def test_a_source_that_must_be_started_is_started_then_checked():
    audio = _bursts(16000)
    src = ListSource(48000, [audio])
    det = Detector(LoudnessEngine(), CFG)
    runner = LiveRunner(det, src)                                   # rate unknown yet: checked at start
    with pytest.raises(ConfigError, match="takes 16000 Hz but the source delivers 48000 Hz"):
        runner.start()
    assert src.started == 1 and src.stopped == 1 and runner.detector is det   # opened here, so closed here

    src = ListSource(16000, [audio[i:i + 1000] for i in range(0, audio.shape[0], 1000)])
    runner = LiveRunner(det, src)
    runner.run_blocking()
    assert src.started == 1 and src.stopped == 1 and runner.error is None and runner.detector is det
    assert runner.all_events == Detector(LoudnessEngine(), CFG).process(audio)


def test_gaps_of_any_source_land_in_place():
    """A source's lost audio (take_gaps) becomes a gap in the detector at its place: later events keep true times."""
    rate = 16000
    audio = _bursts(rate, 7.0, at=(1.0, 5.0))
    cut0, cut1 = int(2.5 * rate), int(3.5 * rate)               # one second never delivered
    items = [audio[i:i + 1600] for i in range(0, cut0, 1600)] + [Gap(cut0, cut1 - cut0, "overrun")] + \
            [audio[i:i + 1600] for i in range(cut1, audio.shape[0], 1600)]
    src = ListSource(rate, items).start()
    runner = LiveRunner(Detector(LoudnessEngine(), CFG), src)
    runner.run_blocking()
    onsets = _onsets(runner.all_events)
    # (Detector.gap restarts its clock from the frames emitted: the samples still buffered in the front end, up to
    # one frame, move later times back by up to 25 ms; test_live_reliability allows the same 30 ms)
    assert len(onsets) == 2 and abs(onsets[0] - 1.0) <= HOP + 1e-6 and abs(onsets[1] - 5.0) <= HOP + 0.03, onsets
    assert runner.gaps == 1 and runner.gap_s == pytest.approx(1.0) and runner.stream_s == pytest.approx(7.0)


def test_microphone_blocks_end_at_gaps_and_when_the_stream_is_drained():
    cap = MicrophoneCapture(samplerate=16000, channels=1)
    cap.samplerate, cap.channels, cap.ring, cap.clock = 16000, 1, RingBuffer(1000, 1), StreamClock(16000)
    cap.ring.write(np.ones((300, 1), np.float32))
    cap.ring.mark_gap(50)
    cap.ring.write(np.ones((200, 1), np.float32))
    cap.ring.close()
    got = []
    for block in cap.blocks(timeout=0):
        got.append((block.shape[0], cap.take_gaps()))
    assert got[:2] == [(300, [Gap(300, 50, "discontinuity")]), (200, [])]
    assert all(n == 0 for n, _ in got[2:]) and len(got) <= 3


def test_replace_detector_swaps_between_blocks_on_the_stream_clock():
    rate = 48000
    audio = _bursts(rate, 6.0, at=(1.0, 4.0))
    src = ArraySource(audio, rate, block_s=0.05)
    first = Detector(LoudnessEngine(), CFG.override(input_rate=rate))
    second = Detector(LoudnessEngine(), CFG.override(input_rate=rate, threshold=0.6, window_s=0.8, hop_s=0.05))
    swapped = []
    runner = None

    def at_block(t: float, block: np.ndarray) -> None:
        if t >= 2.5 and not swapped:
            swapped.append(t)
            runner.replace_detector(second)

    runner = LiveRunner(first, src, on_audio=at_block, on_swap=lambda old, new: swapped.append((old, new)))
    with pytest.raises(ConfigError, match="16000 Hz"):
        runner.replace_detector(Detector(LoudnessEngine(), CFG))    # another rate: refused at once
    runner.run_blocking()
    assert runner.error is None and runner.swaps == 1
    assert swapped[1] == (first, second) and runner.detector is second         # the caller's objects, as they are
    onsets = _onsets(runner.all_events)
    assert len(onsets) == 2 and abs(onsets[0] - 1.0) <= HOP + 1e-6 and abs(onsets[1] - 4.0) <= 0.05 + 1e-6, onsets
    assert second.time_s == pytest.approx(6.0, abs=0.05)                       # one clock across the swap
    s = runner.summary()
    assert s["audio_s"] == pytest.approx(6.0) and s["swaps"] == 1
    assert s["windows"] == first.windows_scored + second.windows_scored


def test_one_engine_serves_many_streams():
    """The engine holds no audio state: two detectors on one engine give what each gives alone."""
    engine = LoudnessEngine()
    a, b = _bursts(16000, 4.0, at=(1.0,)), _bursts(16000, 4.0, at=(2.5,))
    da, db = Detector(engine, CFG), Detector(engine, CFG)
    events = {"a": [], "b": []}
    for i in range(0, a.shape[0], 4000):                        # interleaved pushes
        events["a"] += da.push(a[i:i + 4000])
        events["b"] += db.push(b[i:i + 4000])
    events["a"] += da.flush()
    events["b"] += db.flush()
    assert events["a"] == Detector(LoudnessEngine(), CFG).process(a)
    assert events["b"] == Detector(LoudnessEngine(), CFG).process(b)
