"""Issue 16, one implementation shared by training and the runtime: clip scoring, reading audio, normalisation and
seconds to frames each live once, so a validation number during training is the number ``aed evaluate`` prints.

Real parts: ESC-50 clips from ``../shared/data`` (skipped with the reason where absent), real registered models with
a fixed seed, the runtime's ``Detector`` over ``TorchEngine`` wrapping the very same weights.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from models import create_model  # noqa: E402
from models.io import build_config  # noqa: E402
from models.training.augment import draw_window_frames  # noqa: E402
from models.training.data import ClipItem, decode_items, read_audio_at  # noqa: E402
from models.training.evaluate import clip_scores  # noqa: E402
from models.training.features import compute_features, normalise  # noqa: E402
from realtime import Detector  # noqa: E402
from realtime.config import FrontEndConfig, WindowConfig, seconds_to_frames  # noqa: E402
from realtime.detector import DetectorConfig  # noqa: E402
from realtime.errors import AudioError  # noqa: E402
from realtime.frontend import fbank, normalize  # noqa: E402
from realtime.resample import StreamingResampler  # noqa: E402
from realtime.sources import read_audio  # noqa: E402
from tests.audio_helpers import esc50_clips  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: seconds cut from real clips (shorter than one window, between hops, a whole ESC-50 clip of 5 s) and the rate
#: each is stored at (44.1 kHz: both sides resample it)
CUTS = ((0.6, None), (2.37, 44100), (None, None))


@pytest.fixture(scope="module")
def real_clips(tmp_path_factory) -> list[Path]:
    """Real ESC-50 recordings, cut to the lengths of :data:`CUTS`, one of them stored at 44.1 kHz."""
    out = tmp_path_factory.mktemp("clips")
    paths = []
    for src, (seconds, store_rate) in zip(esc50_clips(3), CUTS):
        audio, rate = read_audio(src)
        if seconds is not None:
            audio = audio[:int(seconds * rate)]
        if store_rate is not None and store_rate != rate:
            rs = StreamingResampler(rate, store_rate)
            audio, rate = np.concatenate([rs.push(audio), rs.flush()]), store_rate
        p = out / f"{src.stem}_{len(audio)}.wav"
        sf.write(p, audio, rate, subtype="FLOAT")
        paths.append(p)
    return paths


@pytest.mark.parametrize("name", ["datar_test", "mn_test"])
def test_validation_scores_equal_aed_evaluate_on_real_clips(real_clips, name):
    from engines.torch_engine import TorchEngine

    torch.manual_seed(0)
    model = create_model(name, num_classes=5, output_activation="softmax").eval()
    # the trainer's front end (Kaldi, the model's mel bins); the MobileNet keeps its own EfficientAT one
    fe = model.frontend if name.startswith("mn") else FrontEndConfig(num_mel_bins=model.num_mel_bins)
    window = WindowConfig(1.0, 0.5)
    config = build_config(model, frontend=fe, window=window)

    # training: decode at the front end's rate, features, the trainer's validation scoring
    waves, kept, report = decode_items([ClipItem(p, 0) for p in real_clips], fe.sample_rate)
    assert report.count == 0 and len(kept) == 3
    feats = compute_features(waves, fe)
    win, hop = window.frames(fe)
    assert feats[0].shape[0] < win < feats[1].shape[0]            # one clip shorter than a window
    validation = clip_scores(model, feats, win, hop, fe)

    # the runtime: the file at its own rate through the Detector, on the same weights
    engine = TorchEngine(model=model, config=config, device="cpu")
    evaluated = []
    for p in real_clips:
        audio, rate = read_audio(p)
        det = Detector(engine, DetectorConfig.from_model(config).override(input_rate=rate))
        evaluated.append(det.clip_scores(audio))
    evaluated = np.stack(evaluated)

    assert validation.shape == evaluated.shape == (3, 5)
    np.testing.assert_allclose(validation, evaluated, atol=1e-4, rtol=0)
    assert (validation.argmax(1) == evaluated.argmax(1)).all()


def test_training_reads_audio_with_the_runtime_reader_and_resampler(real_clips, tmp_path, caplog):
    path = real_clips[1]
    audio, rate = read_audio(path)
    assert rate == 44100
    rs = StreamingResampler(rate, 16000)
    expected = np.concatenate([rs.push(audio), rs.flush()])
    got = read_audio_at(path, 16000)
    assert got.dtype == np.float32 and got.ndim == 1
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(read_audio_at(path, rate), audio)          # at its own rate: untouched
    # stereo is mixed to mono by the same reader
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([audio, 0.5 * audio], 1), rate, subtype="FLOAT")
    np.testing.assert_allclose(read_audio_at(stereo, rate), 0.75 * audio, atol=1e-6)
    # the runtime's error types, and a bad clip is skipped by name in a data set
    with pytest.raises(FileNotFoundError):
        read_audio_at(tmp_path / "missing.wav", 16000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00not really a wave file")
    with pytest.raises(AudioError):
        read_audio_at(broken, 16000)
    items = [ClipItem(path, 0), ClipItem(broken, 1), ClipItem(tmp_path / "missing.wav", 1)]
    with caplog.at_level("WARNING"):
        waves, kept, report = decode_items(items, 16000)
    assert [k.path for k in kept] == [path] and len(waves) == 1
    assert [Path(p).name for p in report.skipped] == ["broken.wav", "missing.wav"]
    assert "broken.wav" in caplog.text and "missing.wav" in caplog.text


@pytest.mark.parametrize("fe", [FrontEndConfig(num_mel_bins=64), FrontEndConfig(num_mel_bins=32, mean=-1.5, std=3.0)])
def test_training_features_are_the_runtime_features(real_clips, fe):
    wave = read_audio_at(real_clips[2], fe.sample_rate)
    (ours,) = compute_features([wave], fe)
    theirs = normalize(fbank(wave, fe), fe)
    assert torch.equal(ours, torch.from_numpy(theirs))
    x = torch.randn(3, 7, fe.num_mel_bins)                                   # any shape of raw log-mel
    assert torch.equal(normalise(x, fe), torch.from_numpy(normalize(x.numpy(), fe)))


@pytest.mark.parametrize("shift_ms", [10.0, 20.0])
def test_training_converts_seconds_to_frames_with_the_one_rule(shift_ms):
    fe = FrontEndConfig(num_mel_bins=64, frame_shift_ms=shift_ms)
    gen = torch.Generator().manual_seed(0)
    for s in (0.5, 0.733, 1.0, 2.345):
        assert draw_window_frames(gen, s, s, fe) == seconds_to_frames(s, fe)
    # the conversion is written once: no frame-rate arithmetic of its own left in the trainer
    pattern = re.compile(r"frames_per_second|\bfps\b")
    offenders = [f"{p.name}:{i}" for p in sorted((ROOT / "models" / "training").glob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line) and "seconds" not in line]
    assert offenders == [], offenders
