"""The shipped default model as an artefact: what it is built on, that it was trained, that it stays quiet.

Accuracy claims live in benchmarks/results/ (held-out data); these are regression tests of the shipped files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines import create_engine
from realtime import Detector

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "models" / "pretrained" / "aed_default"
CHECKPOINT = ROOT.parent / "shared" / "models" / "efficientat" / "mn04_as_mAP_432.pt"
ESC50 = ROOT.parent / "shared" / "data" / "esc50" / "audio"


@pytest.fixture(scope="module")
def engine():
    with create_engine("onnxruntime", DEFAULT) as eng:
        yield eng


def test_default_is_the_pretrained_hybrid_detector(engine):
    cfg = engine.config
    assert cfg.name == "datar_mn04" and cfg.output_activation == "sigmoid"
    assert cfg.frontend.kind == "efficientat" and cfg.frontend.sample_rate == 16000
    assert cfg.detection.onset_source in ("frames", "max", "ola") and engine.has_frames
    assert set(cfg.training["licenses"]) == {"CC0", "CC-BY"}
    attribution = (DEFAULT / "ATTRIBUTION.md").read_text()
    assert "EfficientAT" in attribution and "MIT License" in attribution and "Permission is hereby granted" in attribution
    assert "CC-BY" in attribution or "CC BY" in attribution


def test_no_shipped_tensor_is_the_pretrained_one_unchanged():
    if not CHECKPOINT.is_file():
        pytest.skip(f"the pretrained checkpoint is not at {CHECKPOINT}")
    torch = pytest.importorskip("torch")  # noqa: F841
    import models
    from models.training.ship import unchanged_pretrained_tensors

    model, _ = models.load(DEFAULT)
    from models.efficientat import read_efficientat_state

    shared = set(read_efficientat_state(CHECKPOINT)) & set(model.state_dict())
    assert len(shared) > 200                      # the stem really is the pretrained network's shape
    assert unchanged_pretrained_tensors(model, CHECKPOINT) == []


@pytest.mark.parametrize("kind", ["silence", "dither", "pink"])
def test_quiet_inputs_give_no_events(engine, kind):
    rng = np.random.default_rng(0)
    n = 16000 * 20
    audio = {"silence": np.zeros(n, np.float32),
             "dither": ((rng.random(n) - rng.random(n)) / 32768.0).astype(np.float32),
             "pink": None}[kind]
    if audio is None:
        from models.training.sed_data import coloured_noise

        audio = coloured_noise("pink", 20.0, rng, -50.0)
    det = Detector(engine)
    assert [e for e in det.process(audio) if e.kind == "onset"] == []


def test_a_bark_shorter_than_the_window_is_tagged_and_detected(engine):
    sf = pytest.importorskip("soundfile")
    path = ESC50 / "1-100032-A-0.flac"
    if not path.is_file():
        pytest.skip(f"ESC-50 clip not found at {path}")
    x, sr = sf.read(str(path), dtype="float32")
    i = int(np.argmax(np.abs(x)))
    short = x[max(0, i - 3000):max(0, i - 3000) + 6400]          # 0.4 s around the loudest bark
    det = Detector(engine)
    scores = det.clip_scores(short)
    assert det.labels[int(np.argmax(scores))] == "dog"
    assert any(e.label == "dog" and e.kind == "onset" for e in det.process(short))
