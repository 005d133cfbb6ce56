"""Training and evaluation: loaders, synthesiser, augmentation, trainer (resume, DDP), metrics, event evaluation.

Fast: tiny registered models, a handful of synthetic clips, one or two optimiser steps. Tests that read the
real data in ``../shared/data`` skip with the reason where it is absent.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from models.training.augment import AugmentConfig, ClipBatcher, draw_window_frames, energy_aware_start  # noqa: E402
from models.training.data import (StrongLabel, decode_items, load_dcase, load_esc50, load_folder,  # noqa: E402
                                  read_dcase_tsv, write_dcase_tsv)
from models.training.evaluate import clip_metrics, clip_windows  # noqa: E402
from models.training.events import event_f1, evaluate_soundscapes, latency_stats  # noqa: E402
from models.training.loop import TrainConfig, cosine_schedule, train  # noqa: E402
from models.training.metrics import average_precision, confusion_matrix  # noqa: E402
from models.training.synth import SynthConfig, active_bounds, active_runs, synthesise  # noqa: E402
from realtime.config import FrontEndConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ESC50 = DATA / "esc50"
SR = 16000


def _tone(freq: float, seconds: float, lead: float = 0.3, tail: float = 0.3, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    body = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.concatenate([np.zeros(int(lead * SR), np.float32), body, np.zeros(int(tail * SR), np.float32)])


@pytest.fixture(scope="module")
def tone_folder(tmp_path_factory) -> Path:
    """Folder-per-class data: 'high' (3 kHz) and 'low' (300 Hz) tones, 4 clips each, 1.2 s."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    for name, f in (("high", 3000.0), ("low", 300.0)):
        (root / name).mkdir()
        for k in range(4):
            x = _tone(f * (1 + 0.02 * k), 0.6) + 0.001 * rng.standard_normal(int(1.2 * SR)).astype(np.float32)
            sf.write(root / name / f"{name}{k}.wav", x, SR)
    return root


def _cfg(tone_folder: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="datar_test", layout="folder", data=str(tone_folder), val_data=str(tone_folder),
                noise_dir=None, cache_dir=None, out=str(out), epochs=1, steps_per_epoch=2, batch_size=4,
                lr=1e-3, warmup_epochs=0.5, threads=1, progress=False, ema_decay=0.9, val_hop_s=0.5,
                augment=AugmentConfig(min_window_s=0.5, max_window_s=1.0))
    base.update(kw)
    return TrainConfig(**base)


# -- data -------------------------------------------------------------------------------------------

def test_esc50_loader_on_the_real_csv():
    if not (ESC50 / "esc50.csv").is_file():
        pytest.skip(f"ESC-50 data not present at {ESC50}")
    ds = load_esc50(ESC50)  # default: CC0 and CC-BY only
    assert len(ds.labels) == 50 and ds.labels[0] == "dog"
    assert len(ds) == 1401
    assert {it.license for it in ds.items} == {"CC0", "CC-BY"}
    everything = load_esc50(ESC50, licenses=None)
    assert len(everything) == 1600
    val = load_esc50(ESC50, folds=[4])
    train_ = load_esc50(ESC50, folds=[1, 2, 3])
    assert {it.fold for it in val.items} == {4} and len(val) + len(train_) == 1401
    # src_file groups never straddle the train/validation split
    assert not {it.group for it in val.items} & {it.group for it in train_.items}
    first = next(it for it in ds.items if it.path.name == "1-100032-A-0.flac")
    assert first.label == 0 and first.path.is_file()


def test_folder_loader_and_corrupt_file_skipped_with_count(tone_folder, tmp_path, caplog):
    ds = load_folder(tone_folder)
    assert ds.labels == ["high", "low"] and len(ds) == 8
    bad_root = tmp_path / "data"
    (bad_root / "high").mkdir(parents=True)
    sf.write(bad_root / "high" / "ok.wav", _tone(1000, 0.5), SR)
    (bad_root / "high" / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    t44 = np.sin(2 * np.pi * 500 * np.arange(22050) / 44100).astype(np.float32) * 0.5  # 0.5 s at 44.1 kHz
    sf.write(bad_root / "high" / "stereo44k.wav", np.stack([t44, t44], 1), 44100)
    ds = load_folder(bad_root)
    with caplog.at_level(logging.WARNING):
        waves, kept, report = decode_items(ds.items, SR)
    assert report.count == 1 and report.skipped[0].endswith("broken.wav")
    assert "broken.wav" in caplog.text
    assert [k.path.name for k in kept] == ["ok.wav", "stereo44k.wav"]
    assert waves[1].ndim == 1 and abs(len(waves[1]) - 8000) <= 2  # 44.1 kHz stereo -> 16 kHz mono


def test_dcase_tsv_round_trip(tmp_path):
    rows = [StrongLabel("a.wav", 0.5, 1.25, "dog"), StrongLabel("a.wav", 1.0, 2.0, "rain"),
            StrongLabel("b.wav", 3.0, 4.5, "dog")]
    write_dcase_tsv(tmp_path / "labels.tsv", rows)
    assert read_dcase_tsv(tmp_path / "labels.tsv") == rows
    (tmp_path / "bad.tsv").write_text("a.wav\tsoon\t1.0\tdog\n")
    with pytest.raises(ValueError, match="bad.tsv:1"):
        read_dcase_tsv(tmp_path / "bad.tsv")
    ds, back = load_dcase(tmp_path, tmp_path / "labels.tsv")
    assert ds.labels == ["dog", "rain"] and back == rows and len(ds) == 2


# -- synthesiser -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_in")
    (root / "tone").mkdir()
    for k in range(3):
        sf.write(root / "tone" / f"t{k}.wav", _tone(1000 + 200 * k, 0.4, lead=0.5, tail=0.7), SR)
    noise = np.random.default_rng(1).standard_normal(SR * 12).astype(np.float32) * 0.1
    sf.write(root / "noise.wav", noise, SR)
    return load_folder(root, labels=["tone"]), [root / "noise.wav"]


def test_active_bounds_are_tight():
    x = _tone(1000, 0.4, lead=0.5, tail=0.7)
    a, b = active_bounds(x, SR)
    assert abs(a / SR - 0.5) <= 0.02 and abs(b / SR - 0.9) <= 0.02


def test_synth_is_deterministic_and_labels_are_tight(synth_inputs, tmp_path):
    events, noise = synth_inputs
    cfg = SynthConfig(duration_s=4.0, events=(1, 3), snr_db=(20.0, 20.0))
    r1 = synthesise(events, noise, tmp_path / "a", 4, seed=7, cfg=cfg)
    r2 = synthesise(events, noise, tmp_path / "b", 4, seed=7, cfg=cfg)
    r3 = synthesise(events, noise, tmp_path / "c", 4, seed=8, cfg=cfg)
    assert r1 == r2 and r1 != r3
    assert read_dcase_tsv(tmp_path / "a" / "labels.tsv") == [
        StrongLabel(r.filename, round(r.onset, 3), round(r.offset, 3), r.event_label) for r in r1]
    for name in ("scape_0000.wav", "scape_0003.wav"):
        a, _ = sf.read(tmp_path / "a" / "audio" / name)
        b, _ = sf.read(tmp_path / "b" / "audio" / name)
        np.testing.assert_array_equal(a, b)
    for r in r1:  # the label covers the tone only (0.4 s), not its silent lead and tail
        assert abs((r.offset - r.onset) - 0.4) <= 0.021
    # the energy inside labelled spans is far above the background outside them
    x, _ = sf.read(tmp_path / "a" / "audio" / "scape_0000.wav")
    mask = np.zeros(len(x), bool)
    for r in r1:
        if r.filename == "scape_0000.wav":
            mask[int(r.onset * SR):int(r.offset * SR)] = True
    assert mask.any() and np.mean(x[mask] ** 2) > 30 * np.mean(x[~mask] ** 2)


def test_active_runs_split_a_clip_into_its_sounds():
    x = np.concatenate([_tone(1000, 0.3, lead=0.2, tail=0.5), _tone(1000, 0.3, lead=0.0, tail=0.1),
                        _tone(1000, 0.2, lead=0.0, tail=0.3)])
    runs = active_runs(x, SR, min_gap_s=0.25)
    assert len(runs) == 2   # 0.5 s gap splits; the 0.1 s gap does not
    assert abs(runs[0][0] / SR - 0.2) <= 0.02 and abs(runs[0][1] / SR - 0.5) <= 0.02
    assert abs(runs[1][0] / SR - 1.0) <= 0.02 and abs(runs[1][1] / SR - 1.6) <= 0.02
    assert len(active_runs(x, SR, min_gap_s=0.6)) == 1
    assert active_runs(np.zeros(SR, np.float32), SR) == []


# -- augmentation -----------------------------------------------------------------------------------

def test_energy_aware_crop_avoids_silence():
    energy = torch.zeros(500)
    energy[400:450] = 1.0
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        s = energy_aware_start(energy, 100, 0.5, gen)
        assert energy[s:s + 100].sum() >= 25  # at least half of the burst is inside every crop


def test_batcher_shapes_targets_and_window_range():
    fe = FrontEndConfig(num_mel_bins=64)
    feats = [torch.randn(498, 64) * 0.3 for _ in range(4)]
    b = ClipBatcher(feats, [0, 1, 2, 3], 4, fe, AugmentConfig(mixup_prob=1.0), noise=[torch.randn(3000, 64) * 0.1])
    gen = torch.Generator().manual_seed(0)
    x, y = b.batch([0, 1, 2, 3], 123, gen)
    assert x.shape == (4, 123, 64) and torch.isfinite(x).all()
    torch.testing.assert_close(y.sum(1), torch.ones(4))
    assert (y.max(1).values >= 0.5).all()  # the first clip dominates a mixup
    frames = [draw_window_frames(gen, 0.5, 5.0, fe, 50, 1000) for _ in range(200)]
    assert min(frames) >= 50 and max(frames) <= 500 and max(frames) - min(frames) > 300


def test_cosine_schedule():
    assert cosine_schedule(0, 100, 10, 0.01) == pytest.approx(0.1)
    assert cosine_schedule(9, 100, 10, 0.01) == pytest.approx(1.0)
    assert cosine_schedule(10, 100, 10, 0.01) == pytest.approx(1.0)
    assert cosine_schedule(100, 100, 10, 0.01) == pytest.approx(0.01)


# -- trainer ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["datar_test", "ast_test"])
def test_train_writes_checkpoint_metrics_and_a_loadable_model(tone_folder, tmp_path, name):
    import models

    res = train(_cfg(tone_folder, tmp_path / "run", model=name))
    out = tmp_path / "run"
    assert res.step == 2 and np.isfinite(res.metrics["train_loss"])
    assert 0.0 <= res.metrics["val_accuracy"] <= 1.0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert (out / "learning_curves.png").stat().st_size > 1000
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["step"] == 2 and "param_groups" in state["optimizer"]
    model, config = models.load(out / "final")
    assert list(config.labels) == ["high", "low"] and config.output_activation == "softmax"
    assert config.training["train_config"]["model"] == name
    scores = model(torch.zeros(1, 60, model.num_mel_bins))
    torch.testing.assert_close(scores.sum(-1), torch.ones(1))
    _check_one_epoch_curve(out, res)


def _check_one_epoch_curve(out: Path, res) -> None:
    """A one-epoch run's learning curve shows its training loss as a point (a line alone needs two)."""
    from models.training.loop import _curve_figure, curve_series

    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    epochs, losses = curve_series(rows)["train_loss"]
    assert epochs == [1.0] and losses == [pytest.approx(res.metrics["train_loss"])]
    fig = _curve_figure(rows)
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "train loss"]
    assert list(line.get_xdata()) == [1.0] and np.isfinite(line.get_ydata()).all()
    assert line.get_marker() not in (None, "", "None", " ") and line.get_markersize() > 0   # drawn as a point
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_train_defaults_come_from_train_config(capsys):
    from apps.cli import build_parser, main
    from apps.cmd_train import config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args(["train"])) == TrainConfig()
    cfg = config_from_args(parser.parse_args(["train", "--epochs", "3", "--no-specaugment", "--licenses", "all",
                                              "--noise-dir", "", "--min-window", "0.7", "--model-arg", "dims=[8,8,8,8]"]))
    d = TrainConfig()
    assert cfg.epochs == 3 and cfg.licenses is None and cfg.noise_dir is None and cfg.model_kwargs == {"dims": [8] * 4}
    assert cfg.augment.min_window_s == 0.7 and cfg.augment.freq_mask == 0 and cfg.augment.time_mask_frac == 0.0
    assert cfg.augment.max_window_s == d.augment.max_window_s and cfg.lr == d.lr and cfg.out == d.out
    # --help shows the dataclass's values
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, value in (("--epochs EPOCHS", d.epochs), ("--lr LR", d.lr), ("--max-window S", d.augment.max_window_s),
                        ("--val-folds 4", "4"), ("--model MODEL", d.model)):
        assert re.search(re.escape(flag) + r" .*?\(default: " + re.escape(str(value)) + r"\)", text), flag


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    import models

    torch.manual_seed(1)
    return models.save(models.create_model("datar_test", num_classes=2), tmp_path / "ckpt", labels=["a", "b"])


def _tensors(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_init_loads_through_models_io_with_only_the_heads_fresh(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    from models.training.loop import build_model
    from realtime.errors import ConfigError, ModelFileError

    stored = load_file(str(checkpoint / "model.safetensors"))
    heads = ("head.", "frame_head.")
    same = _tensors(build_model(TrainConfig(init=str(checkpoint)), ["a", "b"]))
    assert set(same) == set(stored) and all(torch.equal(same[k], stored[k]) for k in stored)
    for labels in (["x", "y"], ["x", "y", "z"]):          # another label set: the heads start fresh, nothing else
        got = _tensors(build_model(TrainConfig(init=str(checkpoint)), labels))
        assert got["head.weight"].shape[0] == got["frame_head.weight"].shape[0] == len(labels)
        assert not torch.equal(got["head.weight"][:2], stored["head.weight"])
        assert all(torch.equal(got[k], stored[k]) for k in stored if not k.startswith(heads))
    # a tensor missing outside the heads is refused (no strict=False retry)
    bad = dict(stored)
    del bad[next(k for k in bad if not k.startswith(heads))]
    save_file(bad, str(checkpoint / "model.safetensors"))
    with pytest.raises(ModelFileError, match="fresh tensors allowed"):
        build_model(TrainConfig(init=str(checkpoint)), ["x", "y", "z"])
    with pytest.raises(ConfigError, match="accepted:"):
        build_model(TrainConfig(init=str(checkpoint), model_kwargs={"nonsense": 1}), ["a", "b"])


def test_init_with_peft_adds_fresh_adapters_to_the_checkpoints_weights(tmp_path):
    import models
    from models.training.loop import build_model

    torch.manual_seed(2)
    ckpt = models.save(models.create_model("ast_test", num_classes=2), tmp_path / "ast", labels=["a", "b"])
    stored = _tensors(models.load(ckpt)[0])
    model = build_model(TrainConfig(init=str(ckpt), peft="aat"), ["a", "b"])
    got = _tensors(model)
    adapters = [k for k in got if "adapter" in k]
    assert adapters and set(got) - set(stored) == set(adapters)
    assert all(torch.equal(got[k], stored[k]) for k in stored)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(adapters) & trainable and not any(k.startswith("blocks.0.attn") for k in trainable)


def test_a_run_from_init_uses_the_checkpoints_mel_bins(tone_folder, tmp_path):
    import models

    torch.manual_seed(3)
    ckpt = models.save(models.create_model("datar_test", num_classes=2, num_mel_bins=32), tmp_path / "ckpt",
                       labels=["high", "low"])
    train(_cfg(tone_folder, tmp_path / "run", init=str(ckpt)))
    _, config = models.load(tmp_path / "run" / "final")
    assert config.num_mel_bins == 32 and config.name == "datar_test" and list(config.labels) == ["high", "low"]


def test_resume_continues_from_the_saved_step(tone_folder, tmp_path):
    from safetensors.torch import load_file

    straight = train(_cfg(tone_folder, tmp_path / "straight", epochs=2))
    assert straight.step == 4
    first = train(_cfg(tone_folder, tmp_path / "resumed", epochs=1))
    assert first.step == 2
    # the same run asked for two epochs picks up at epoch 2, step 2 (the schedule is the two-epoch one)
    resumed = train(_cfg(tone_folder, tmp_path / "resumed", epochs=2, resume=True))
    assert resumed.step == 4
    hist = [json.loads(line) for line in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert [h["epoch"] for h in hist] == [1, 2] and [h["step"] for h in hist] == [2, 4]
    # nothing left to do: resuming a finished run trains no further step
    again = train(_cfg(tone_folder, tmp_path / "resumed", epochs=2, resume=True))
    assert again.step == 4
    # epoch 2's data order, crops, learning rate and EMA do not depend on the interruption
    a = load_file(str(tmp_path / "straight" / "last" / "ema.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "last" / "ema.safetensors"))
    first_lr = json.loads((tmp_path / "resumed" / "last" / "state.json").read_text())["history"][0]["lr"]
    assert first_lr == pytest.approx(cosine_schedule(1, 4, 1, 0.01) * 1e-3)
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=f"{k} differs between the straight and the resumed run")


def test_ddp_gloo_on_two_cpu_processes(tone_folder, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "apps.cli",
           "train", "--model", "datar_test", "--layout", "folder", "--data", str(tone_folder), "--val-data",
           str(tone_folder), "--noise-dir", "", "--cache-dir", "", "-o", str(out), "--epochs", "1",
           "--steps-per-epoch", "2", "--batch-size", "2", "--min-window", "0.5", "--max-window", "0.8",
           "--device", "cpu", "--no-progress", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_cfg = json.loads((out / "config.json").read_text())
    assert run_cfg["world_size"] == 2
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["step"] == 2
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["step"] == 2 and 0.0 <= summary["val_accuracy"] <= 1.0


# -- metrics ----------------------------------------------------------------------------------------

def test_clip_metrics_on_a_known_case():
    assert average_precision(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0], bool)) == pytest.approx(
        (1 / 1 + 2 / 3) / 2)
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    targets = np.array([0, 1, 1, 2])
    m = clip_metrics(scores, targets)
    assert m["accuracy"] == pytest.approx(0.75)
    # class 0: positives at rank 1 -> AP 1; class 1: ranks 1 and 2 -> AP 1; class 2: rank 1 -> AP 1
    assert m["map"] == pytest.approx(1.0)
    cm = confusion_matrix(np.argmax(scores, 1), targets, 3)
    assert cm.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    # the runtime's clip windows: full windows every hop, no extra tail window; a short clip padded before its start
    fe = FrontEndConfig(num_mel_bins=4)
    f = torch.arange(498 * 4, dtype=torch.float32).reshape(498, 4)
    w = clip_windows(f, 100, 10, fe)
    assert w.shape == (40, 100, 4) and torch.equal(w[-1], f[390:490])
    short = clip_windows(f[:50], 100, 10, fe)
    assert short.shape == (1, 100, 4) and torch.equal(short[0, 50:], f[:50])
    from realtime.frontend import silence_frame
    assert torch.equal(short[0, :50], torch.from_numpy(silence_frame(fe)).expand(50, 4))


def test_event_f1_collars_and_latency_on_a_known_case():
    ref = [StrongLabel("a.wav", 1.0, 3.0, "dog"), StrongLabel("a.wav", 5.0, 5.5, "rain")]
    good = [StrongLabel("a.wav", 1.15, 2.7, "dog"), StrongLabel("a.wav", 5.1, 5.6, "rain")]
    m = event_f1(ref, good, ["dog", "rain"])
    assert m["event_f1"] == pytest.approx(1.0) and m["segment_f1"] == pytest.approx(1.0)
    late = [StrongLabel("a.wav", 1.3, 3.0, "dog"), StrongLabel("a.wav", 5.0, 5.5, "rain")]
    assert event_f1(ref, late, ["dog", "rain"])["event_f1"] == pytest.approx(0.5)  # onset collar is 200 ms
    short = [StrongLabel("a.wav", 1.0, 2.5, "dog")]  # offset 0.5 s early > max(0.2, 20 % of 2 s)
    assert event_f1(ref, short, ["dog", "rain"])["event_f1"] == pytest.approx(0.0)
    lat = latency_stats(ref, {"a.wav": [("dog", 1.1, 1.4), ("rain", 5.0, 5.2), ("rain", 8.0, 8.1)]})
    assert lat["latency_events"] == 2
    assert lat["latency_median_s"] == pytest.approx(0.3) and lat["latency_p90_s"] == pytest.approx(0.38)


class _ToneEngine:
    """A stand-in model: 'tone' scores 1 where a window's loudest bin is well above the background."""

    labels = ["tone"]

    def infer(self, x: np.ndarray) -> np.ndarray:
        return (x.max(axis=(1, 2)) > 0.6).astype(np.float32)[:, None]


def test_event_evaluation_through_the_streaming_detector(synth_inputs, tmp_path):
    from realtime import Detector
    from realtime.config import WindowConfig
    from realtime.detector import DetectorConfig

    events, noise = synth_inputs
    cfg = SynthConfig(duration_s=6.0, events=(1, 2), snr_db=(30.0, 30.0), background_dbfs=-60.0)
    synthesise(events, noise, tmp_path / "scapes", 3, seed=3, cfg=cfg)
    det = Detector(_ToneEngine(), DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64),
                                                 window=WindowConfig(0.5, 0.1)))
    res = evaluate_soundscapes(det, tmp_path / "scapes")
    assert res["files"] == 3 and res["reference_events"] >= 3
    assert res["segment_f1"] > 0.6
    # a 0.5 s window sees a tone within a hop of its onset: emitted a little after the onset, never before
    assert 0.0 <= res["latency_median_s"] <= 0.6 and res["latency_events"] >= 2
    _check_psds1(res, det, tmp_path / "scapes")


class _SilentEngine:
    """A model that never hears anything."""

    labels = ["tone"]

    def infer(self, x: np.ndarray) -> np.ndarray:
        return np.zeros((x.shape[0], 1), np.float32)


def _check_psds1(res: dict, det, scapes: Path) -> None:
    """PSDS1 is what this run computed: unavailable, with the reason, without sed_scores_eval; otherwise a number in
    (0, 1] for a detector that finds the tones, and 0 for one that never fires on the same soundscapes."""
    import importlib.util
    import math

    if importlib.util.find_spec("sed_scores_eval") is None:
        assert res["psds1"] is None and "sed_scores_eval is not installed" in res["psds_note"]
        return
    value = res["psds1"]
    assert isinstance(value, float) and math.isfinite(value), res.get("psds_note")
    assert 0.0 < value <= 1.0                                           # segment F1 > 0.6: it finds the tones
    from realtime import Detector

    silent = evaluate_soundscapes(Detector(_SilentEngine(), det.config), scapes)
    # no detection, no true-positive rate: 0 (or no curve to integrate at all)
    assert silent["psds1"] in (0.0, None) and (silent["psds1"] or 0.0) < value


# -- CLI --------------------------------------------------------------------------------------------

def test_cli_bad_input_is_one_line_exit_2(capsys, tmp_path):
    from apps.cli import main

    assert main(["train", "--model", "no_such_model", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'no_such_model'" in err[0]
    assert main(["evaluate", "--engine", "torch"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_attribution_lists_the_cc_by_clips_used(tmp_path):
    from models.training.attribution import license_entries, write_attribution

    lic = tmp_path / "LICENSE.txt"
    lic.write_text("101 - Dog:\n"
                   "- [1-100032-A.ogg]: clip derived from rose_bark.wav (http://www.freesound.org/people/nfrae/sounds/"
                   "100032/) by nfrae [CC0]\n"
                   "- [1-4211-A.ogg]:  clip derived from fire.crackling.mp3 (http://www.freesound.org/people/dobroide/"
                   "sounds/4211/) by dobroide [CC-BY]\n")
    assert license_entries(lic)["1-4211-A"].author == "dobroide"
    counts = write_attribution(lic, ["1-100032-A-0.flac", "1-4211-A-12.flac"], tmp_path / "ATTRIBUTION.md", "T")
    text = (tmp_path / "ATTRIBUTION.md").read_text()
    assert counts == {"CC0": 1, "CC-BY": 1}
    assert "dobroide" in text and "1-4211-A-12.flac" in text and "nfrae" not in text
    if (ESC50 / "LICENSE.txt").is_file():  # every shippable clip of the real data set has an entry
        entries = license_entries(ESC50 / "LICENSE.txt")
        for it in load_esc50(ESC50).items:
            assert entries[it.path.stem.rsplit("-", 1)[0]].license == it.license


@pytest.mark.skipif(not (ESC50 / "LICENSE.txt").is_file(), reason="needs ../shared/data/esc50 (meta CSV, LICENSE.txt)")
def test_ship_packages_weights_config_onnx_and_attribution(tmp_path):
    from models import create_model, load, save
    from models.training.ship import ship

    ort = pytest.importorskip("onnxruntime")
    model = create_model("datar_nano", num_classes=50, output_activation="softmax").eval()
    ckpt = save(model, tmp_path / "final", training={
        "train_config": {"layout": "esc50", "data": str(ESC50), "train_folds": [1], "licenses": ["CC0", "CC-BY"]},
        "evaluation": {"kept": 1}})
    out = ship(ckpt, tmp_path / "shipped", threshold=0.3, onset_anchor="centre",
               extra={"evaluation": {"fold4": {"accuracy": 0.5}}, "hardware": "test"})
    assert (out / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()
    _, cfg = load(out)
    assert cfg.detection.threshold == 0.3 and cfg.detection.onset_anchor == "centre"
    assert cfg.training["evaluation"] == {"kept": 1, "fold4": {"accuracy": 0.5}}  # merged, not replaced
    assert cfg.training["hardware"] == "test"
    # the ONNX file carries the same weights and config
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert json.loads(sess.get_modelmeta().custom_metadata_map["aed_config"])["thresholds"]["default"] == 0.3
    x = np.random.default_rng(0).standard_normal((1, 100, 64)).astype(np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(sess.run(None, {"fbank": x})[0], ref, atol=1e-4)
    # attribution: exactly the CC-BY clips of fold 1
    n_ccby = sum(1 for it in load_esc50(ESC50, folds=[1], licenses=["CC-BY"]).items)
    text = (out / "ATTRIBUTION.md").read_text()
    assert n_ccby > 0 and text.count("| CC-BY |") == n_ccby
    with pytest.raises(ValueError, match="onset_anchor"):
        ship(ckpt, tmp_path / "bad", onset_anchor="middle")
    with pytest.raises(ValueError, match=r"must be (in \[0, 1\]|a number from 0 to 1)"):
        ship(ckpt, tmp_path / "bad", threshold=1.5)
    assert not (tmp_path / "bad").exists()  # refused before anything is written
