"""The detection recipe and the frame-head runtime: targets, negatives, frame onsets, short clips, replay."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.training.sed import SedBatcher, SedConfig, frame_targets_to  # noqa: E402
from models.training.sed_data import NegativeBank, activity_mask, coloured_noise, dither, features  # noqa: E402
from models.training.sed_eval import Trace, onset_latency, record_trace, replay  # noqa: E402
from models.training.data import StrongLabel  # noqa: E402
from realtime import Detector  # noqa: E402
from realtime.config import FrontEndConfig, efficientat_frontend  # noqa: E402
from realtime.detector import DetectorConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FE = efficientat_frontend(16000, 32)
SR = 16000


def _burst(seconds: float, start: float, stop: float, freq: float = 1000.0, amp: float = 0.3) -> np.ndarray:
    x = np.zeros(int(seconds * SR), np.float32)
    a, b = int(start * SR), int(stop * SR)
    x[a:b] = amp * np.sin(2 * np.pi * freq * np.arange(b - a) / SR)
    return x


def _bank() -> NegativeBank:
    bank = NegativeBank()
    rng = np.random.default_rng(0)
    bank.add("silence", np.zeros(SR * 3, np.float32), FE)
    bank.add("dither", dither(3.0, rng), FE)
    bank.add("coloured:pink", coloured_noise("pink", 3.0, rng), FE)
    return bank


def test_activity_mask_marks_the_sound_and_not_the_silence():
    m = activity_mask(features(_burst(3.0, 1.0, 2.0), FE), FE)
    assert not m[:90].any() and m[110:190].all() and not m[215:].any()


def _batcher(**kw) -> SedBatcher:
    clips = [features(_burst(5.0, 2.0, 3.0, 800.0), FE), features(_burst(5.0, 0.5, 1.5, 3000.0), FE)]
    return SedBatcher(clips, [0, 1], 2, FE, _bank(), SedConfig(**kw))


def test_negatives_have_no_targets_and_positives_follow_the_activity():
    b = _batcher(mix_prob=0.0)
    rng = np.random.default_rng(1)
    for _ in range(20):
        x, y = b.example(100, rng, negative=True)
        assert x.shape == (100, 32) and torch.isfinite(x).all() and y.sum() == 0
    found = 0
    for _ in range(40):
        x, y = b.example(100, rng, negative=False)
        assert torch.isfinite(x).all()
        active = y.sum(dim=1) > 0
        if active.any():
            found += 1
            # energy where the target says the event is: louder than where it says nothing
            assert y[:, 0].sum() == 0 or y[:, 1].sum() == 0
    assert found >= 30


def test_a_crop_of_a_silent_stretch_is_not_the_clips_class():
    b = _batcher()
    start = b._quiet_start(b.masks[0], 100)
    assert start is not None and not b.masks[0][start:start + 100].any()
    x, yc, yf = b.batch(64, 100, np.random.default_rng(3))
    assert yc.shape == (64, 2) and yf.shape == (64, 100, 2)
    assert ((yf.sum(dim=1) >= 3).float() == yc).all()     # a window is labelled only where its frames are


def test_onset_crops_start_with_background():
    b = _batcher(mix_prob=0.0)
    rng = np.random.default_rng(4)
    seen_onset_inside = 0
    for _ in range(30):
        p, m = b._event(0, 100, rng, onset=True)
        first = int(torch.nonzero(m).flatten()[0]) if m.any() else None
        if first and first > 0:
            seen_onset_inside += 1
            assert p[:first].sum() == 0              # nothing of the event before its onset
    assert seen_onset_inside >= 20


def test_mix_events_puts_up_to_that_many_further_sources_in_a_window():
    clips = [features(_burst(5.0, 0.5, 4.5, f), FE) for f in (800.0, 3000.0, 1500.0)]
    def most_classes(mix_events: int) -> int:
        b = SedBatcher(clips, [0, 1, 2], 3, FE, _bank(), SedConfig(mix_prob=1.0, mix_events=mix_events,
                                                                     own_background=1.0))
        rng = np.random.default_rng(6)
        return max(int((b.example(100, rng, negative=False)[1].sum(dim=0) > 0).sum()) for _ in range(40))
    assert most_classes(1) == 2          # the default: one further event at most
    assert most_classes(2) == 3


def test_late_onset_crops_put_the_onset_in_the_newest_frames():
    b = _batcher(mix_prob=0.0, late_onset_share=1.0, late_onset_s=0.3)
    rng = np.random.default_rng(5)
    firsts = []
    for _ in range(30):
        p, m = b._event(0, 100, rng, onset=True)
        firsts.append(int(torch.nonzero(m).flatten()[0]))
    assert min(firsts) >= 70 and max(firsts) <= 99              # the last 0.3 s of a 1 s window
    plain = _batcher(mix_prob=0.0)
    spread = [int(torch.nonzero(plain._event(0, 100, rng, onset=True)[1]).flatten()[0]) for _ in range(30)]
    assert min(spread) < 70                                      # without it the onset lands anywhere


def test_newest_frame_weight_adds_the_newest_frames_loss():
    from models.training.sed import detection_loss

    class Fixed(torch.nn.Module):
        """Clip logit 0; frame logits 0 except the newest frame, which says 'nothing' confidently."""

        def forward_logits(self, x):
            frames = torch.zeros(x.shape[0], 4, 1)
            frames[:, -1] = -6.0
            return torch.zeros(x.shape[0], 1), frames

    x, yc, yf = torch.zeros(2, 100, 8), torch.ones(2, 1), torch.ones(2, 100, 1)
    base, _ = detection_loss(Fixed(), x, yc, yf)
    more, _ = detection_loss(Fixed(), x, yc, yf, newest_weight=2.0)
    newest = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(-6.0), torch.tensor(1.0))
    assert float(more - base) == pytest.approx(2.0 * float(newest), rel=1e-5)


def test_frame_targets_pool_to_the_head_resolution():
    yf = torch.zeros(1, 100, 1)
    yf[0, 95:, 0] = 1
    out = frame_targets_to(yf, 7)
    assert out.shape == (1, 7, 1) and out[0, -1, 0] == 1 and out[0, :5, 0].sum() == 0


class _FrameEngine:
    """Fires on loud frames: clip score = loud anywhere, frame scores = loud per tenth of the window."""

    labels = ["tone"]

    def __init__(self, frames: int = 10):
        self.n = frames

    def infer(self, x):
        return (x.max(axis=(1, 2)) > 0.0).astype(np.float32)[:, None]

    def infer_frames(self, x):
        parts = np.array_split(x, self.n, axis=1)
        fr = np.stack([(p.max(axis=(1, 2)) > 0.0).astype(np.float32) for p in parts], axis=1)[:, :, None]
        return self.infer(x), fr


def test_frame_onsets_fire_as_soon_as_the_sound_is_in_the_window():
    audio = _burst(4.0, 2.0, 3.0, amp=0.5)
    cfg = DetectorConfig(frontend=FE, onset_source="frames")
    det = Detector(_FrameEngine(), cfg)
    emitted = []
    for i in range(0, len(audio), 1600):
        now = (i + 1600) / SR
        emitted += [(e, now) for e in det.push(audio[i:i + 1600]) if e.kind == "onset"]
    assert emitted, "no onset"
    ev, at = emitted[0]
    assert abs(ev.onset_s - 2.0) <= 0.15 and at - 2.0 <= 0.25
    clip = Detector(_FrameEngine(), DetectorConfig(frontend=FE, onset_source="clip", onset_anchor="newest"))
    ons = [e for e in clip.process(audio) if e.kind == "onset"]
    assert ons and abs(ons[0].onset_s - 2.0) <= 0.15


def test_frame_source_needs_an_engine_with_a_frame_head():
    class ClipOnly:
        labels = ["x"]

        def infer(self, x):
            return np.zeros((len(x), 1), np.float32)

    with pytest.raises(ValueError, match="frame head"):
        Detector(ClipOnly(), DetectorConfig(frontend=FE, onset_source="frames"))
    with pytest.raises(ValueError, match="onset_source"):
        DetectorConfig(frontend=FE, onset_source="middle")


@pytest.mark.parametrize("source", ["frames", "clip", "ola"])
def test_a_clip_shorter_than_the_window_is_padded_and_scored(source):
    audio = _burst(0.4, 0.05, 0.35, amp=0.5)             # a 0.3 s sound in a 0.4 s file
    det = Detector(_FrameEngine(), DetectorConfig(frontend=FE, onset_source=source))
    events = det.process(audio)
    assert [e.kind for e in events] == ["onset", "offset"] and events[0].label == "tone"
    assert det.clip_scores(audio)[0] == 1.0
    assert det.clip_scores(np.zeros(3200, np.float32))[0] == 0.0   # padding alone is silence, not a sound
    with pytest.raises(ValueError, match="too short"):
        det.clip_scores(np.zeros(100, np.float32))


def test_replay_reproduces_streaming_events():
    audio = np.concatenate([_burst(3.0, 1.0, 2.0, amp=0.4), _burst(3.0, 0.5, 1.2, amp=0.4)])
    det = Detector(_FrameEngine(), DetectorConfig(frontend=FE, onset_source="frames"))
    streamed = [e for e in det.process(audio) if e.kind == "offset"]
    tr = record_trace(det, audio, "a.wav")
    closed, emitted = replay(det, tr)
    assert [(round(e.onset_s, 3), round(e.offset_s, 3)) for e in streamed] == \
        [(round(r.onset, 3), round(r.offset, 3)) for r in closed]
    assert len(emitted) == len(streamed) == 2
    lat = onset_latency([StrongLabel("a.wav", 1.0, 2.0, "tone"), StrongLabel("a.wav", 3.5, 4.2, "tone")],
                        {"a.wav": emitted})
    assert lat["events_found"] == 2 and 0.0 <= lat["latency_median_s"] <= 0.3


class _RampEngine:
    """Frame k of a window scores k / (K - 1): the overlap-add of a hop is the mean of where it sat in each window."""

    labels = ["tone"]

    def infer(self, x):
        return np.zeros((len(x), 1), np.float32)

    def infer_frames(self, x):
        fr = np.linspace(0.0, 1.0, 7, dtype=np.float32)[None, :, None].repeat(len(x), 0)
        return self.infer(x), fr


def test_overlap_add_averages_every_window_over_the_tracked_hop():
    seen = []
    cfg = DetectorConfig(frontend=FE, onset_source="ola", ola_delay_s=0.2)
    det = Detector(_RampEngine(), cfg, on_window=lambda t, s: seen.append(float(s[0])))
    det.process(np.zeros(4 * SR, np.float32))

    def value(j):                 # the ramp's value over the hop j hops behind a window's newest (100 frames, K = 7)
        return min(6, int((100 - 10 * j - 5) * 7 / 100)) / 6

    # the hop 0.2 s behind the newest has been in this window (2 hops back) and in the two before it (1 and 0
    # hops back); the stream's first two windows have fewer (the clip head, 0 here, plays no part)
    assert seen[0] == pytest.approx(value(2))
    assert seen[1] == pytest.approx(np.mean([value(2), value(1)]))
    assert np.allclose(seen[2:], np.mean([value(2), value(1), value(0)])) and len(seen) > 25
    assert value(0) != value(2)                                   # the average is not the newest frame's
    with pytest.raises(ValueError, match="ola_delay_s must be a whole number of hops"):
        Detector(_RampEngine(), DetectorConfig(frontend=FE, onset_source="ola", ola_delay_s=0.15))
    with pytest.raises(ValueError, match="below one window"):
        Detector(_RampEngine(), DetectorConfig(frontend=FE, onset_source="ola", ola_delay_s=1.0))


def test_overlap_add_streams_replays_and_stamps_the_tracked_hop():
    audio = np.concatenate([_burst(3.0, 1.0, 2.0, amp=0.4), _burst(3.0, 0.5, 1.2, amp=0.4)])
    cfg = DetectorConfig(frontend=FE, onset_source="ola", ola_delay_s=0.3)
    det = Detector(_FrameEngine(), cfg)
    streamed = [e for e in det.process(audio) if e.kind == "offset"]
    chunked = []
    det2 = Detector(_FrameEngine(), cfg)
    for i in range(0, len(audio), 777):
        chunked += [e for e in det2.push(audio[i:i + 777]) if e.kind == "offset"]
    chunked += [e for e in det2.flush() if e.kind == "offset"]
    assert chunked == streamed and len(streamed) == 2
    tr = record_trace(det, audio, "a.wav")
    assert tr.scores.shape[1:] == (1,)                            # the trace keeps what the tracker followed
    closed, _ = replay(det, tr)
    assert [(round(r.onset, 3), round(r.offset, 3)) for r in closed] == \
        [(round(e.onset_s, 3), round(e.offset_s, 3)) for e in streamed]
    assert abs(streamed[0].onset_s - 1.0) <= 0.15 and abs(streamed[1].onset_s - 3.5) <= 0.15


def test_onset_latency_counts_misses():
    ref = [StrongLabel("f", 1.0, 2.0, "a"), StrongLabel("f", 5.0, 6.0, "a")]
    lat = onset_latency(ref, {"f": [("a", 1.05, 1.2), ("b", 5.0, 5.1)]})
    assert lat["events_found"] == 1 and lat["found_fraction"] == 0.5
    assert lat["latency_median_s"] == pytest.approx(0.2)


def test_onnx_engine_frame_scores_equal_torch(tmp_path):
    import models
    from engines import create_engine

    model = models.create_model("mn_test").eval()
    models.save(model, tmp_path)
    _, cfg = models.load(tmp_path)
    models.export_onnx(model, tmp_path / "model.onnx", cfg)
    eng = create_engine("onnxruntime", tmp_path)
    assert eng.has_frames
    x = np.random.default_rng(0).standard_normal((2, 120, 32)).astype(np.float32)
    clip, frames = eng.infer_frames(x)
    with torch.no_grad():
        c_ref, f_ref = model.forward_with_frames(torch.from_numpy(x))
    np.testing.assert_allclose(clip, c_ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(frames, f_ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(eng.infer(x), clip, atol=1e-6)
    teng = create_engine("torch", tmp_path)
    np.testing.assert_allclose(teng.infer_frames(x)[1], frames, atol=1e-4)


def test_train_sed_runs_writes_a_checkpoint_and_resumes(tmp_path):
    data = ROOT.parent / "shared/data/esc50"
    if not (data / "esc50.csv").is_file():
        pytest.skip(f"ESC-50 not found at {data}")
    from models.training.sed import train_sed
    import models

    cfg = SedConfig(model="mn_test", pretrained=None, data=str(data), train_folds=[1], val_folds=[],
                    noise_dir=str(ROOT.parent / "shared/data/noise"), out=str(tmp_path / "run"),
                    cache_dir=str(tmp_path / "cache"), epochs=1, steps_per_epoch=2, batch_size=8)
    final = train_sed(cfg)
    model, config = models.load(final)
    assert config.frontend.kind == "efficientat" and len(config.labels) == 50
    assert config.training["train_folds"] == [1] and config.training["licenses"] == ["CC0", "CC-BY"]
    cfg.epochs = 2
    train_sed(cfg)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"epoch": 2' in lines[1]


def test_audioset_retention_trains_an_auxiliary_head_that_is_never_exported(tmp_path):
    """``retain_audioset``: a 527-way head on the student's pooled features learns the frozen AudioSet network's
    outputs; its tensors live in the run's training state (resume restores them) and never in the checkpoint."""
    data, ckpt = ROOT.parent / "shared/data/esc50", ROOT.parent / "shared/models/efficientat/mn04_as_mAP_432.pt"
    if not (data / "esc50.csv").is_file() or not ckpt.is_file():
        pytest.skip("ESC-50 or the pretrained checkpoint is not in ../shared")
    import json

    from models.training.checkpoint import load_state
    from models.training.sed import AUX_PREFIX, train_sed
    import models

    def run(name: str, weight: float, epochs: int = 1) -> list[dict]:
        cfg = SedConfig(model="datar_mn04", pretrained=str(ckpt), data=str(data), train_folds=[1], val_folds=[],
                        noise_dir=str(ROOT.parent / "shared/data/noise"), out=str(tmp_path / name),
                        cache_dir=str(tmp_path / "cache"), epochs=epochs, steps_per_epoch=2, batch_size=8,
                        retain_audioset=weight)
        final = train_sed(cfg)
        model, config = models.load(final)                   # strict: the checkpoint is a plain datar_mn04
        assert len(config.labels) == 50 and config.training["sed_config"]["retain_audioset"] == weight
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    plain = run("plain", 0.0)
    kept = run("kept", 1.0)
    # the same seed draws the same batches: the extra (positive) term is in the loss
    assert kept[0]["train_loss"] > plain[0]["train_loss"]
    msd = load_state(tmp_path / "kept" / "last")[0]
    aux = {k: v for k, v in msd.items() if k.startswith(AUX_PREFIX)}
    assert aux and aux[AUX_PREFIX + "weight"].shape[0] == 527
    assert len(run("kept", 1.0, epochs=2)) == 2               # resumes with the auxiliary head restored


def test_early_windows_hear_a_sound_at_the_start_of_a_stream():
    audio = _burst(2.0, 0.2, 1.0, amp=0.5)
    audio[:3200] += 1e-4 * np.random.default_rng(0).standard_normal(3200).astype(np.float32)   # a noise floor
    late = Detector(_FrameEngine(), DetectorConfig(frontend=FE, onset_source="frames"))
    early = Detector(_FrameEngine(), DetectorConfig(frontend=FE, onset_source="frames", early_windows=True))
    tr_late, tr_early = record_trace(late, audio, "a"), record_trace(early, audio, "a")
    assert tr_late.end_frames[0] == 100 and tr_early.end_frames[0] == 10
    _, em = replay(early, tr_early)
    assert em and em[0][2] - 0.2 <= 0.2               # emitted within two hops of the sound
    _, em_late = replay(late, tr_late)
    assert em_late[0][2] >= 1.0                       # without: only once a full window exists
    # chunk-size invariance holds with early windows too
    a = [(e.kind, round(e.onset_s, 3)) for e in early.process(audio)]
    early.reset()
    b = []
    for i in range(0, len(audio), 777):
        b += [(e.kind, round(e.onset_s, 3)) for e in early.push(audio[i:i + 777])]
    b += [(e.kind, round(e.onset_s, 3)) for e in early.flush()]
    assert a == b


def test_window_scheduler_pads_early_windows():
    from realtime.windows import WindowScheduler

    out = WindowScheduler(4, 2, 1, early=True).push(np.arange(1, 7, dtype=np.float32)[:, None])
    assert [e for e, _ in out] == [2, 4, 6]
    np.testing.assert_array_equal(out[0][1][:, 0], [1, 1, 1, 2])   # the first frame, repeated
    np.testing.assert_array_equal(out[2][1][:, 0], [3, 4, 5, 6])
    assert [e for e, _ in WindowScheduler(4, 2, 1).push(np.zeros((6, 1), np.float32))] == [4, 6]


def test_psds1_is_computed_and_rewards_a_better_detector():
    pytest.importorskip("psds_eval")
    from models.training.sed_eval import psds1

    class TwoClasses(_FrameEngine):
        labels = ["a", "b"]

    det = Detector(TwoClasses(), DetectorConfig(frontend=FE, onset_source="frames", early_windows=True))
    ends = np.arange(10, 810, 10)                                   # a window every 0.1 s over 8 s
    t = ends * 0.01
    ref = [StrongLabel("s.wav", 1.0, 2.5, "a"), StrongLabel("s.wav", 5.0, 6.5, "b")]
    values = []
    for decoy in (0.0, 1.0):           # a decoy as confident as the true events: no threshold removes it
        scores = np.zeros((len(ends), 2), np.float32)
        scores[(t > 1.0) & (t <= 2.6), 0] = 1.0
        scores[(t > 5.0) & (t <= 6.6), 1] = 1.0
        scores[(t > 3.0) & (t <= 4.0), 1] = decoy                    # a false event of class b
        values.append(psds1(det, [Trace("s.wav", ends, scores, 8.0)], ref)["psds1"])
    assert values[0] is not None and 0.5 < values[0] <= 1.0
    assert values[1] < values[0]


def test_class_subset_and_recipe_settings_from_the_command_line():
    from models.training.data import ClipDataset, ClipItem
    from models.training.sed import subset_classes
    from models.training.sed_run import apply_settings
    from realtime.errors import ConfigError

    ds = ClipDataset([ClipItem(Path(f"{i}.wav"), i % 3) for i in range(6)], ["a", "b", "c"])
    sub = subset_classes(ds, ["c", "a"])
    assert sub.labels == ["a", "c"] and [it.label for it in sub.items] == [0, 1, 0, 1]
    assert [it.path.name for it in sub.items] == ["0.wav", "2.wav", "3.wav", "5.wav"]
    with pytest.raises(ConfigError, match="not in the dataset"):
        subset_classes(ds, ["z"])
    cfg = apply_settings(SedConfig(), ["mix_prob=0.4", "snr_db=[-3, 24]", "noise_dir=/data/noise"])
    assert (cfg.mix_prob, list(cfg.snr_db), cfg.noise_dir) == (0.4, [-3, 24], "/data/noise")
    with pytest.raises(ConfigError, match="expected FIELD=VALUE"):
        apply_settings(SedConfig(), ["epochz=3"])


def test_soundscape_diagnosis_sorts_emitted_events_into_kinds():
    """``benchmarks/diagnose_scapes.py``: the kinds its report counts, on hand-made events."""
    import importlib.util

    from models.training.data import StrongLabel

    spec = importlib.util.spec_from_file_location("diagnose_scapes", ROOT / "benchmarks" / "diagnose_scapes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    refs = [StrongLabel("a.wav", 1.0, 3.0, "dog"), StrongLabel("a.wav", 5.0, 6.0, "rain")]
    emitted = [("dog", 1.1, 2.5),      # onset inside the 200 ms collar
               ("dog", 1.8, 2.9),      # the right event, 0.8 s late
               ("dog", 0.5, 1.5),      # the right event, 0.5 s early
               ("cat", 5.2, 5.6),      # during the rain, another class
               ("rain", 8.0, 8.5)]     # nothing there
    assert mod.classify(emitted, refs) == ["hit", "late", "early", "wrong_class", "false"]


def test_overlap_add_with_many_streams_matches_each_stream_alone():
    """The multi-stream runner scores every stream's windows in one batch; each stream's overlap-add stays its own."""
    from realtime import MultiStreamRunner

    a = np.concatenate([_burst(3.0, 1.0, 2.0, amp=0.4), _burst(3.0, 0.5, 1.2, amp=0.4)])
    b = _burst(6.0, 2.5, 4.0, freq=2000.0, amp=0.4)
    cfg = DetectorConfig(frontend=FE, onset_source="ola", ola_delay_s=0.3)
    ms = MultiStreamRunner(_FrameEngine(), ["a", "b"], cfg, max_batch=64)
    got = {"a": [], "b": []}
    for i in range(0, len(a), 3200):
        for k, v in ms.push({"a": a[i:i + 3200], "b": b[i:i + 3200]}).items():
            got[k] += v
    for k, v in ms.flush().items():
        got[k] += v
    assert got["a"] == Detector(_FrameEngine(), cfg).process(a) and len(got["a"]) == 4
    assert got["b"] == Detector(_FrameEngine(), cfg).process(b) and len(got["b"]) == 2
