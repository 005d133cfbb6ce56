"""The latency profiler: exact latency arithmetic on a fake clock, stage sums on a real run, reports, CLI errors."""
import json
import math

import numpy as np
import pytest

from apps.cli import main
from apps.profiler.core import (
    LATENCY_PARTS, Burst, Clock, EngineSpec, InjectedEvent, LoudnessReference, Profiler, Session, SyntheticSource,
    WindowGrid, _PacedSource, attribute_latency, attribute_session, pair_onset, paced_events,
)
from apps.profiler.report import PLOTS, write_report
from realtime.config import FrontEndConfig, ModelConfig
from realtime.detector import Detector, DetectorConfig
from tests.audio_helpers import LoudnessEngine

RATE = 16000


class FakeClock(Clock):
    """Time moves only when someone sleeps or an engine says it computed."""

    def __init__(self, t0: float = 100.0):
        self.t = t0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


class TimedEngine:
    """Fires on any window holding non-silent audio; each infer call costs exactly ``cost_s`` of fake time."""

    labels = ["burst"]
    config = ModelConfig(labels=("burst",), frontend=FrontEndConfig(num_mel_bins=64))

    def __init__(self, clock: FakeClock, cost_s: float, name: str = "timed"):
        self.clock, self.cost_s, self.name = clock, cost_s, name
        self.calls = 0

    def infer(self, x):
        self.calls += 1
        self.clock.t += self.cost_s
        # silence is exact zeros, whose log-mel sits at the float32-eps floor (-1.28 after normalisation)
        return (x.max(axis=(1, 2)) > -1.2).astype(np.float32)[:, None]


def burst_signal(total_s: float, onsets_samples, n: int = 4000) -> np.ndarray:
    x = np.zeros(int(total_s * RATE), np.float32)
    for s in onsets_samples:
        x[s:s + n] = 0.5 * np.sin(0.3 * np.arange(n))
    return x


def test_injected_burst_latency_equals_the_known_offset_on_a_fake_clock():
    clock = FakeClock()
    eng = TimedEngine(clock, cost_s=0.007)
    sb = 160 * 153 + 80               # burst's first sample: frame 152 is the first to hold it (last 160 samples)
    src = _PacedSource(burst_signal(4.0, [sb]), RATE, [Burst(sb / RATE)], segment_s=2.0, block_s=0.02)
    res = Profiler([EngineSpec("timed", eng)], src, windows=[1.0], hops=[0.1], clock=clock).run()
    s = res.sessions[0]
    assert s.missed == [] and len(s.latencies) == 1
    lat = s.latencies[0]
    # The first window holding frame 152 ends at frame 160 (grid 100, 110, ...); its last frame needs samples
    # up to 160*159 + 400 = 25840; the 320-sample block holding sample 25839 ends at 25920, due at 1.62 s;
    # then one inference call costs 7 ms. The burst entered at 24560 / 16000 = 1.535 s.
    assert lat["hop_wait"] == pytest.approx((25840 - sb) / RATE, abs=1e-9)
    assert lat["smoothing"] == pytest.approx(0.0, abs=1e-9) and lat["windows_late"] == 0
    assert lat["buffering"] == pytest.approx((25920 - 25840) / RATE, abs=1e-9)
    assert lat["compute"] == pytest.approx(0.007, abs=1e-9)
    assert lat["total"] == pytest.approx(1.62 + 0.007 - sb / RATE, abs=1e-9)
    assert sum(lat[p] for p in LATENCY_PARTS) == pytest.approx(lat["total"], abs=1e-9)
    # the emitted onset is the start of the newest hop of the firing window (frame 150 = 1.5 s)
    assert s.emitted[0]["onset_s"] == pytest.approx(1.5)
    # the same record from the attribution steps one by one: the burst on its replay, its onset, the split
    grid = WindowGrid.of(s.detector)
    anchor = s.chunks[0]["due"] - s.chunks[0]["n"] / RATE               # wall time of stream sample 0 on replay 0
    segs = [{"lo": 0, "hi": src.seg_len, "anchor": anchor, "k": 0}]      # segment 1 holds no burst
    (ev,) = paced_events(src.bursts, segs, RATE)
    assert ev.t_s == sb / RATE and ev.segment == 0 and ev.wall_s == pytest.approx(anchor + sb / RATE, abs=1e-12)
    pairing = pair_onset(ev, s.emitted, s.chunks, grid)
    assert pairing.outcome == "detected" and pairing.onset is s.emitted[0] and pairing.first_end == 160
    chunk = s.chunks[pairing.onset["chunk"]]
    assert chunk["due"] == pytest.approx(anchor + 25920 / RATE, abs=1e-9)   # the block holding sample 25839
    again = attribute_latency(ev, pairing.onset, chunk["start"], pairing.first_end, grid)
    assert again.keys() == lat.keys() and again["label"] == lat["label"] == "burst"
    for k in ("t_s", "total", *LATENCY_PARTS, "windows_late"):
        assert again[k] == pytest.approx(lat[k], abs=1e-9), k


def test_stage_times_stay_measured_after_the_timer_wraps():
    from realtime.stats import StageTimer

    clock = FakeClock()
    sb = 160 * 153 + 80
    src = _PacedSource(burst_signal(4.0, [sb]), RATE, [Burst(sb / RATE)], segment_s=2.0, block_s=0.02)
    prof = Profiler([EngineSpec("timed", TimedEngine(clock, cost_s=0.007))], src, clock=clock, warmup=False)
    s = prof.sessions[0]
    s.detector.timer = StageTimer(maxlen=4)           # wraps after four chunks (the default after 100,000)
    prof.run()
    assert len(s.chunks) == 200 and all(c["stages"]["features"] > 0 for c in s.chunks)
    scored = [c for c in s.chunks if c["windows"]]
    assert len(scored) > 4 and all(c["stages"]["inference"] > 0 and c["stages"]["post"] > 0 for c in scored)


def _constructed_session() -> Session:
    """A session on a 1 s / 0.1 s grid (64 mel bins, 16 kHz) whose onsets and chunk timings are written by hand."""
    ref = LoudnessReference()
    det = Detector(ref, DetectorConfig.from_model(ref.config))
    s = Session("ref", ref.name, "model", 1.0, 0.1, det)
    # chunk starts are the fake stage timing: when the worker began the chunk that emitted each onset
    s.chunks = [{"seg": 0, "start": 101.60}, {"seg": 0, "start": 101.74}, {"seg": 0, "start": 101.83},
                {"seg": 2, "start": 300.20}, {"seg": 2, "start": 308.10}]
    s.emitted = [
        {"end_frame": 150, "label": "burst", "wall": 101.61, "chunk": 0},   # its window ends before the event
        {"end_frame": 170, "label": "other", "wall": 101.75, "chunk": 1},   # a label the event does not have
        {"end_frame": 180, "label": "burst", "wall": 101.84, "chunk": 2},   # the answer to the 1.535 s burst
        {"end_frame": 300, "label": "burst", "wall": 300.21, "chunk": 3},   # in a later segment than its event
        {"end_frame": 800, "label": "burst", "wall": 308.11, "chunk": 4},   # past the horizon (window + 1 s)
    ]
    return s


def test_attribution_pairs_bursts_with_onsets_and_splits_the_latency_on_a_constructed_case():
    s = _constructed_session()
    grid = WindowGrid.of(s.detector)
    assert (grid.T, grid.hop_frames, grid.labels) == (100, 10, ("burst",))
    # stream sample 24560 (1.535 s) is first held by frame 152, so by the window ending at frame 160, which is
    # complete at sample 159 * 160 + 400 = 25840 (1.615 s); the one ending at 180 at 29040 (1.815 s)
    assert grid.first_window_end(1.535) == 160 and grid.need_time(160) == 1.615 and grid.need_time(180) == 1.815

    def at(t_s, label, segment, anchor):
        return InjectedEvent(t_s, label, anchor + t_s, lambda t: anchor + t, segment)

    burst = at(1.535, "burst", 0, 100.0)
    p = pair_onset(burst, s.emitted, s.chunks, grid)
    assert p.outcome == "detected" and p.onset is s.emitted[2] and p.first_end == 160
    lat = attribute_latency(burst, p.onset, s.chunks[2]["start"], p.first_end, grid)
    expected = {"t_s": 1.535, "label": "burst", "total": 101.84 - 101.535, "hop_wait": 1.615 - 1.535,
                "smoothing": 1.815 - 1.615, "buffering": 101.83 - 101.815, "compute": 101.84 - 101.83,
                "windows_late": 2}
    assert lat.keys() == expected.keys() and lat["label"] == "burst" and lat["windows_late"] == 2
    for k in ("t_s", "total", *LATENCY_PARTS):
        assert lat[k] == pytest.approx(expected[k], abs=1e-9), k
    assert sum(lat[part] for part in LATENCY_PARTS) == pytest.approx(lat["total"], abs=1e-12)

    unknown = at(1.535, "dog", 0, 100.0)             # a label the model lacks: any label answers
    p = pair_onset(unknown, s.emitted, s.chunks, grid)
    assert p.outcome == "detected" and p.onset is s.emitted[1]
    assert attribute_latency(unknown, p.onset, s.chunks[1]["start"], p.first_end, grid)["windows_late"] == 1
    late = at(3.0, None, 1, 200.0)                   # answered, but only in segment 2: no single wall clock
    assert pair_onset(late, s.emitted, s.chunks, grid).outcome == "unmeasured"
    lost = at(5.0, "burst", 2, 300.0)                # nothing within 1.0 + 1 s of it
    p = pair_onset(lost, s.emitted, s.chunks, grid)
    assert p.outcome == "missed" and p.onset is None

    # per session: filed in order, a mic slot without a heard burst (None) is missed at an unknown time
    attribute_session(s, [burst, late, None, lost, unknown])
    assert [r["t_s"] for r in s.latencies] == [1.535, 1.535] and [r["label"] for r in s.latencies] == ["burst", "other"]
    assert s.latencies[0] == lat and s.unmeasured == [3.0]
    assert s.missed[0] != s.missed[0] and s.missed[1:] == [5.0]                     # NaN, then the lost burst
    summary = s.latency_summary()
    assert summary["total"]["count"] == 2 and summary["hop_wait"]["p50_ms"] == pytest.approx(80.0)


def test_paced_events_put_each_burst_on_its_segments_replay():
    bursts = [Burst(0.5, "a"), Burst(2.5, "b"), Burst(4.5, None)]
    segs = [{"lo": 0, "hi": 32000, "anchor": 10.0, "k": 0}, {"lo": 32000, "hi": 64000, "anchor": 20.0, "k": 1}]
    events = paced_events(bursts, segs, RATE)        # segment 2 was never replayed (interrupted): its burst is out
    assert [(e.t_s, e.label, e.segment, e.wall_s) for e in events] == [(0.5, "a", 0, 10.5), (2.5, "b", 1, 22.5)]
    assert events[1].wall_of(3.0) == 23.0


def test_engines_alternate_round_robin_on_the_same_audio():
    clock = FakeClock()
    engines = [TimedEngine(clock, 0.004, "a"), TimedEngine(clock, 0.011, "b")]
    onsets = [160 * 153 + 80, 32000 + 160 * 153 + 80]
    src = _PacedSource(burst_signal(4.0, onsets), RATE, [Burst(o / RATE) for o in onsets], segment_s=2.0)
    res = Profiler([EngineSpec(e.name, e) for e in engines], src, clock=clock).run()
    a, b = res.sessions
    first = {(s.kind, k): min(c["start"] for c in s.chunks if c["seg"] == k) for s in (a, b) for k in (0, 1)}
    assert first[("a", 0)] < first[("b", 0)] and first[("b", 1)] < first[("a", 1)]     # order rotates
    assert a.audio_s == pytest.approx(b.audio_s) == pytest.approx(4.0)                 # same audio for both
    for s, cost in ((a, 0.004), (b, 0.011)):
        assert len(s.latencies) == 2
        for lat in s.latencies:                                     # the segment anchor is per session and replay
            assert lat["compute"] == pytest.approx(cost, abs=1e-9)
            assert lat["total"] == pytest.approx(sum(lat[p] for p in LATENCY_PARTS), abs=1e-9)
    assert [r["total"] - r["compute"] for r in a.latencies] == pytest.approx(
        [r["total"] - r["compute"] for r in b.latencies], abs=1e-9)


@pytest.fixture(scope="module")
def realtime_run():
    """Two bursts replayed at real-time pace (about 9 s) to a loudness engine and the model-free reference."""
    src = SyntheticSource(bursts=2, window_s=1.0, hop_s=0.1, block_s=0.02, seed=3)
    specs = [EngineSpec("loudness_engine", LoudnessEngine()), EngineSpec("reference", LoudnessReference())]
    return Profiler(specs, src, windows=[1.0], hops=[0.1]).run(), src


def test_stage_timings_add_up_to_the_measured_total(realtime_run):
    res, src = realtime_run
    for s in res.sessions:
        assert s.audio_s == pytest.approx(src.duration_s)
        totals = np.array([c["end"] - c["start"] for c in s.chunks])
        stages = np.array([sum(c["stages"].values()) for c in s.chunks])
        assert np.all(stages <= totals + 1e-6)                      # stages are nested inside the chunk timing
        other = np.array([c["other"] for c in s.chunks])            # reported as its own line: stages + other = total
        assert stages + other == pytest.approx(totals, abs=1e-9)
        # what is in no stage is glue (input checks, timer overhead): the stages must still carry most of the time
        assert stages.sum() == pytest.approx(totals.sum(), rel=0.5), (stages.sum(), totals.sum())
        cost = s.cost()
        assert cost["rtf"] == pytest.approx(stages.sum() / s.audio_s)
        assert cost["windows"] == s.detector.windows_scored > 0
        # every injected burst detected; the parts add up to each measured latency
        assert len(s.latencies) == 2 and s.missed == []
        for lat in s.latencies:
            assert lat["total"] == pytest.approx(sum(lat[p] for p in LATENCY_PARTS), abs=1e-9)
            assert 0 <= lat["hop_wait"] <= 0.1 + 0.016 and lat["buffering"] >= 0 and lat["compute"] >= 0


def test_report_files_exist_and_parse(realtime_run, tmp_path):
    from PIL import Image

    res, _ = realtime_run
    paths = write_report(res, tmp_path, config={"engines": ["loudness_engine", "reference"], "source_rate": RATE})
    data = json.loads(paths["json"].read_text())
    assert {"machine", "versions", "config", "sessions"} <= set(data)
    assert data["machine"]["cores"] >= 1 and data["versions"]["numpy"]
    s0 = data["sessions"][0]
    assert len(s0["raw"]["chunks"]) == len(res.sessions[0].chunks) and len(s0["raw"]["latencies"]) == 2
    assert set(s0["stages"]) >= {"ring_wait", "resample", "features", "windows", "inference_per_window",
                                 "post_per_window", "frontend_per_hop"}
    md = paths["markdown"].read_text()
    assert "| session | engine | trigger | detected | p50 |" in md and "loudness_engine w1/h0.1" in md
    for name in PLOTS:
        raw = (tmp_path / name).read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(tmp_path / name) as im:
            im.verify()
            assert im.size[0] >= 800 and im.size[1] >= 400


def test_interrupted_run_still_reports(tmp_path):
    clock = FakeClock()
    onsets = [160 * 153 + 80, 32000 + 160 * 153 + 80]
    src = _PacedSource(burst_signal(4.0, onsets), RATE, [Burst(o / RATE) for o in onsets], segment_s=2.0)
    prof = Profiler([EngineSpec("t", TimedEngine(clock, 0.005))], src, clock=clock)
    prof.on_progress = lambda done, total, sessions: prof.stop()     # as the SIGINT handler does
    res = prof.run()
    assert res.interrupted and res.sessions[0].audio_s == pytest.approx(2.0)
    assert len(res.sessions[0].latencies) == 1                       # the second burst was never replayed
    paths = write_report(res, tmp_path, config={})
    assert json.loads(paths["json"].read_text())["interrupted"] is True
    assert "Interrupted" in paths["markdown"].read_text()


def test_cli_profile_a_model_next_to_the_reference(tmp_path):
    pytest.importorskip("onnxruntime")
    rc = main(["profile", "--engines", "loudness,onnxruntime", "--bursts", "1", "--quiet", "--report",
               str(tmp_path / "r")])
    assert rc == 0
    data = json.loads((tmp_path / "r" / "profile.json").read_text())
    assert [s["kind"] for s in data["sessions"]] == ["loudness", "onnxruntime"]
    assert [s["cost"]["detected"] for s in data["sessions"]] == [1, 1]
    assert data["config"]["windows_s"] == [1.0] and data["config"]["hops_s"] == [0.1]     # the shipped model's


def test_cli_profile_writes_a_report(tmp_path, capsys):
    rc = main(["profile", "--engines", "loudness", "--bursts", "1", "--quiet", "--report", str(tmp_path / "r")])
    assert rc == 0
    data = json.loads((tmp_path / "r" / "profile.json").read_text())
    lat = data["sessions"][0]["latency"]["total"]
    assert data["config"]["engines"] == ["loudness"] and lat["count"] == 1 and math.isfinite(lat["p50_ms"])


@pytest.mark.parametrize("argv, fragment", [
    (["--engines", "onnxruntime,bogus"], "unknown engine(s) bogus"),
    (["--engines", ","], "unknown engine"),
    (["--window", "0.2", "--engines", "loudness"], "--window must be between 0.5 and 10"),
    (["--window", "1,x", "--engines", "loudness"], "comma-separated seconds"),
    (["--hop", "0", "--engines", "loudness"], "--hop needs positive seconds"),
    (["--hop", "2", "--engines", "loudness"], "longer than the window"),
    (["--duration", "-1", "--engines", "loudness"], "--duration must be positive"),
    (["--duration", "1", "--engines", "loudness"], "shorter than one burst segment"),
    (["--bursts", "0", "--engines", "loudness"], "--bursts must be at least 1"),
    (["--threads", "0", "--engines", "loudness"], "--threads must be at least 1"),
    (["--source", "/no/such.wav", "--engines", "loudness"], "synthetic, mic or an audio file"),
    (["--events", "x.tsv", "--engines", "loudness"], "--events only applies with --source FILE"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv, fragment, capsys):
    assert main(["profile", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aed profile: error:") and fragment in err[0], err


@pytest.mark.audio
def test_mic_source_times_a_burst_played_into_the_virtual_microphone(pulse):
    from apps.profiler.core import MicSource

    src = MicSource(slots=1, window_s=1.0, hop_s=0.1, samplerate=48000, block_s=0.02)
    res = Profiler([EngineSpec("reference", LoudnessReference())], src).run()
    s = res.sessions[0]
    assert s.detector.input_rate == 48000 and res.capture["rate"] == 48000
    assert len(s.latencies) == 1, (s.missed, s.emitted)
    lat = s.latencies[0]
    assert lat["total"] == pytest.approx(sum(lat[p] for p in LATENCY_PARTS), abs=1e-9)
    assert 0 <= lat["hop_wait"] <= 0.1 + 0.016 and lat["compute"] >= 0
    iv = np.asarray(res.capture["callback_intervals_s"])
    assert iv.size > 10 and np.median(iv) == pytest.approx(0.02, abs=0.01)     # 20 ms blocks, give or take


def test_cli_file_source_with_ground_truth_and_a_window_sweep(tmp_path):
    import soundfile as sf

    from tests.audio_helpers import tone_burst

    wav = tmp_path / "clip.wav"
    sf.write(wav, tone_burst(16000, 3.0, 1.63, 0.4), 16000)
    tsv = tmp_path / "truth.tsv"
    tsv.write_text("filename\tonset\toffset\tevent_label\nclip.wav\t1.63\t2.03\tdog\n")
    rc = main(["profile", "--engines", "loudness", "--source", str(wav), "--events", str(tsv), "--window", "0.5,1",
               "--quiet", "--report", str(tmp_path / "r")])
    assert rc == 0
    data = json.loads((tmp_path / "r" / "profile.json").read_text())
    assert [s["label"] for s in data["sessions"]] == ["loudness w0.5/h0.1", "loudness w1/h0.1"]
    for s in data["sessions"]:
        (lat,) = s["raw"]["latencies"]
        assert lat["t_s"] == pytest.approx(1.63) and 0 <= lat["hop_wait"] <= 0.116
