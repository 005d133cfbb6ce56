import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from realtime.multistream import StreamChunkError
from realtime import ArraySource, Detector, DetectorConfig, FrontEndConfig, MultiStreamRunner, WindowConfig, read_audio
from realtime.pipeline import LiveRunner
from tests.audio_helpers import LoudnessEngine, esc50_clips, tone_burst

CFG = DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64), window=WindowConfig(1.0, 0.1))


def bursts(rate=16000):
    x = tone_burst(rate, 8.0, 2.0, 0.6, seed=1)
    x += tone_burst(rate, 8.0, 5.3, 1.2, freq=600, noise=0.0, seed=2)
    return x


def stream(det, audio, chunk, rng=None):
    out, i = [], 0
    while i < audio.shape[0]:
        n = int(rng.integers(1, 6000)) if chunk == "random" else chunk
        out += det.push(audio[i:i + n])
        i += n
    return out + det.flush()


@pytest.mark.parametrize("chunk", [160, 1024, 4000, "random"])
def test_streaming_equals_offline_for_any_chunking(chunk):
    audio = bursts()
    scores_off, scores_on = [], []
    det = Detector(LoudnessEngine(), CFG, on_window=lambda t, s: scores_off.append((t, s.copy())))
    offline = det.process(audio)
    det2 = Detector(LoudnessEngine(), CFG, on_window=lambda t, s: scores_on.append((t, s.copy())))
    online = stream(det2, audio, chunk, np.random.default_rng(3))
    assert [e.kind for e in offline] == ["onset", "offset", "onset", "offset"]
    assert online == offline
    assert len(scores_on) == len(scores_off)
    for (t1, s1), (t2, s2) in zip(scores_off, scores_on):
        assert t1 == t2
        np.testing.assert_allclose(s1, s2, atol=1e-6)


def test_onset_within_one_hop_of_burst_onset():
    det = Detector(LoudnessEngine(), CFG)
    events = det.process(bursts())
    onsets = [e.onset_s for e in events if e.kind == "onset"]
    assert abs(onsets[0] - 2.0) <= 0.1 + 1e-9 and abs(onsets[1] - 5.3) <= 0.1 + 1e-9


def test_centre_onset_anchor_moves_time_stamps_not_emission():
    from dataclasses import replace

    newest, centre = [], []
    det_n = Detector(LoudnessEngine(), CFG)
    det_c = Detector(LoudnessEngine(), replace(CFG, onset_anchor="centre"))
    audio = bursts()
    for i in range(0, audio.shape[0], 1600):      # 100 ms chunks: record which chunk emitted each event
        newest += [(i, e) for e in det_n.push(audio[i:i + 1600])]
        centre += [(i, e) for e in det_c.push(audio[i:i + 1600])]
    assert [(i, e.kind, e.label) for i, e in newest] == [(i, e.kind, e.label) for i, e in centre]
    for (_, a), (_, b) in zip(newest, centre):
        if a.kind == "onset":                      # window end - hop  ->  window end - window / 2
            assert b.onset_s == pytest.approx(a.onset_s + 0.1 - 0.5)
        else:
            assert b.offset_s == pytest.approx(a.offset_s)
    with pytest.raises(ValueError, match="onset_anchor must be one of"):
        DetectorConfig(onset_anchor="start")
    cfg = DetectorConfig.from_model({"labels": ["x"], "thresholds": {"default": 0.3, "onset_anchor": "centre"}})
    assert cfg.onset_anchor == "centre" and cfg.threshold == 0.3
    assert cfg.override(threshold=0.6, hop_s=0.2, merge_gap_s=None).threshold == 0.6
    assert cfg.override(hop_s=0.2).window == WindowConfig(cfg.window.window_s, 0.2)
    with pytest.raises(ValueError, match="unknown detector settings"):
        cfg.override(treshold=0.6)


def test_reset_really_resets():
    det = Detector(LoudnessEngine(), CFG)
    audio = bursts()
    first = stream(det, audio[:50000], 4000)
    det.push(audio[50000:60000])
    det.reset()
    assert det.time_s == 0.0 and det.windows_scored == 0 and det.tracker.open_events() == []
    assert stream(det, audio[:50000], 4000) == first


def test_resampled_input_at_48k_gives_the_same_events():
    x16 = bursts(16000)
    x48 = bursts(48000)
    e16 = Detector(LoudnessEngine(), CFG).process(x16)
    from dataclasses import replace

    det48 = Detector(LoudnessEngine(), replace(CFG, input_rate=48000))
    e48 = stream(det48, x48, 4800)
    assert [(e.kind, e.label) for e in e48] == [(e.kind, e.label) for e in e16]
    for a, b in zip(e16, e48):
        assert abs(a.onset_s - b.onset_s) <= 0.1


def test_clip_scores_is_the_mean_of_window_scores_and_short_clips_use_one_window():
    audio = bursts()
    seen = []
    det = Detector(LoudnessEngine(), CFG, on_window=lambda t, s: seen.append(s[0]))
    det.process(audio)
    np.testing.assert_allclose(det.clip_scores(audio), [np.mean(seen)], rtol=1e-5)
    eng = LoudnessEngine()
    short = Detector(eng, CFG).clip_scores(audio[:12000])                # 0.75 s < 1 s window
    assert short.shape == (1,) and eng.batches == [1]


def test_batches_a_backlog_into_few_infer_calls():
    eng = LoudnessEngine()
    from dataclasses import replace

    Detector(eng, replace(CFG, batch_size=16)).process(bursts())
    assert max(eng.batches) == 16 and sum(eng.batches) == 70


@pytest.mark.parametrize("bad, exc, match", [
    (np.zeros(100, np.int16), TypeError, "float32"),
    ([0.0] * 100, TypeError, "NumPy array"),
    (np.zeros((1000, 2), np.float32), ValueError, "2 channels"),
    (np.zeros(0, np.float32), ValueError, "empty"),
    (np.array([0.0, np.nan], np.float32), ValueError, "NaN or Inf"),
    (np.array([0.0, np.inf], np.float32), ValueError, "NaN or Inf"),
    (np.zeros((2, 2, 2), np.float32), ValueError, "1-D"),
])
def test_bad_input_names_what_is_accepted(bad, exc, match):
    det = Detector(LoudnessEngine(), CFG)
    with pytest.raises(exc, match=match):
        det.push(bad)
    with pytest.raises(exc, match="mono samples at 16000 Hz"):
        det.process(bad)


def test_bad_rates_and_too_short_clips():
    from dataclasses import replace

    with pytest.raises(ValueError, match="unsupported sample rate"):
        Detector(LoudnessEngine(), replace(CFG, input_rate=1000))
    with pytest.raises(ValueError, match="too short"):
        Detector(LoudnessEngine(), CFG).clip_scores(np.zeros(300, np.float32))
    with pytest.raises(TypeError, match="infer"):
        Detector(object(), CFG)


def test_engine_spec_mismatch_is_reported():
    from engines.base import InputSpec

    eng = LoudnessEngine()
    eng.spec = InputSpec(num_mel_bins=128, t_min=50, t_max=1000)
    with pytest.raises(ValueError, match="64 mel bins but the engine accepts 128"):
        Detector(eng, CFG)
    eng.spec = InputSpec(num_mel_bins=64, t_min=50, t_max=80)
    with pytest.raises(ValueError, match="outside the model's range"):
        Detector(eng, CFG)


def test_gap_keeps_the_clock_and_closes_open_events():
    det = Detector(LoudnessEngine(), CFG)
    x = tone_burst(16000, 3.0, 1.5, 3.0)
    det.push(x[:40000])
    assert det.tracker.open_events()
    closed = det.gap(2.0)
    assert [e.kind for e in closed] == ["offset"]
    t = det.time_s
    det.push(np.zeros(16000, np.float32))
    assert det.time_s == pytest.approx(t + 16000 / 16000 - 0.015, abs=0.011)


def test_multistream_batches_streams_and_matches_single_stream():
    audio_a, audio_b = bursts(), tone_burst(16000, 8.0, 3.0, 1.0, seed=5)
    eng = LoudnessEngine()
    ms = MultiStreamRunner(eng, ["a", "b"], CFG, max_batch=64)
    got = {"a": [], "b": []}
    for i in range(0, audio_a.shape[0], 3200):
        for k, v in ms.push({"a": audio_a[i:i + 3200], "b": audio_b[i:i + 3200]}).items():
            got[k] += v
    for k, v in ms.flush().items():
        got[k] += v
    assert got["a"] == Detector(LoudnessEngine(), CFG).process(audio_a)
    assert got["b"] == Detector(LoudnessEngine(), CFG).process(audio_b)
    assert max(eng.batches) == 4          # 2 windows per stream per 0.2 s chunk, both streams together
    with pytest.raises(StreamChunkError, match="unknown stream"):
        ms.push({"zz": audio_a[:10]})


def test_live_runner_on_array_source_equals_offline():
    audio = bursts()
    det = Detector(LoudnessEngine(), CFG)
    runner = LiveRunner(det, ArraySource(audio, 16000, block_s=0.05))
    runner.run_blocking()
    assert runner.error is None
    assert runner.all_events == Detector(LoudnessEngine(), CFG).process(audio)
    s = runner.summary()
    assert s["windows"] == 70 and s["events"] == 2
    assert set(s["stages"]) >= {"resample", "features", "windows", "inference", "post"}


def test_file_source_at_real_time_pace_takes_real_time(tmp_path):
    p = tmp_path / "b.wav"
    sf.write(p, tone_burst(16000, 1.2, 0.2, 0.3), 16000)
    from realtime import FileSource

    src = FileSource(p, block_s=0.1, realtime=True)
    import time

    t0 = time.perf_counter()
    n = sum(b.shape[0] for b in src.blocks())
    elapsed = time.perf_counter() - t0
    assert n == 19200 and elapsed >= 1.0


def test_read_audio_real_file_and_bad_files(tmp_path):
    audio, rate = read_audio(esc50_clips(1)[0])
    assert rate == 16000 and audio.dtype == np.float32 and audio.shape == (80000,)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([np.ones(1000), -np.ones(1000)], 1) * 0.5, 44100)
    mono, r = read_audio(stereo)
    assert r == 44100 and np.allclose(mono, 0.0)                  # channels averaged to mono
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all")
    with pytest.raises(ValueError, match="cannot decode .* as audio"):
        read_audio(text)
    good = tmp_path / "good.flac"
    sf.write(good, tone_burst(16000, 2.0, 0.5, 0.5), 16000)
    trunc = tmp_path / "trunc.flac"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated|cannot decode"):
        read_audio(trunc)
    with pytest.raises(FileNotFoundError):
        read_audio(tmp_path / "missing.wav")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.0, np.nan, 0.1] * 100, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match="NaN"):
        read_audio(nan)
    lowrate = tmp_path / "low.wav"
    sf.write(lowrate, np.zeros(300, np.float32), 1000)
    with pytest.raises(ValueError, match="unsupported sample rate"):
        read_audio(lowrate)


def test_import_realtime_pulls_in_no_heavy_dependency():
    code = ("import sys, realtime, realtime.pipeline, realtime.multistream, realtime.capture; "
            "heavy = [m for m in ('torch', 'onnxruntime', 'tensorrt', 'sounddevice', 'PySide6', 'pyqtgraph', "
            "'PyQt5', 'PyQt6') if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_gap_restarts_the_clock_after_every_sample_received():
    det = Detector(LoudnessEngine(), CFG)
    det.push(np.zeros(16080, np.float32))          # 1.005 s: the last 5 ms are not a whole frame yet
    det.gap(1.0)
    assert det.time_s == pytest.approx(1.005 + 1.0, abs=1e-9)
    det.push(np.zeros(8000, np.float32))
    det.gap(0.5)
    assert det.time_s == pytest.approx(2.005 + 0.5 + 0.5, abs=1e-9)
