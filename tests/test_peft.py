"""Parameter-efficient fine-tuning on every family, and retargeting a trained detector to new sounds.

Tiny registered models and synthetic clips (tones and noise bursts written as real WAV files), a few optimiser
steps: what is checked is the contract (frozen bit for bit, small checkpoints tied to their base, thresholds,
messages), not accuracy; accuracy is measured by ``benchmarks/bench_peft.py``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

import models  # noqa: E402
from models import peft  # noqa: E402
from models.io import save, weights_sha256  # noqa: E402
from models.training.build import HEAD_PREFIXES  # noqa: E402
from models.training.retarget import MIN_THRESHOLD_CLIPS, RetargetConfig, retarget  # noqa: E402
from realtime.errors import ConfigError, ModelFileError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SR = 16000

# family -> (tiny variant, the methods it takes)
FAMILIES = {"datar_mn_test": ("head", "aat", "loaa", "full"), "mn_test": ("head", "loaa", "full"),
            "datar_test": ("head", "aat", "loaa", "full"), "ast_test": ("head", "aat", "loaa", "full")}


def _x(model, T: int = 120) -> torch.Tensor:
    return torch.randn(2, T, model.num_mel_bins)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_takes_its_methods_and_refuses_the_others_in_one_line(name):
    accepted = FAMILIES[name]
    for method in peft.METHODS:
        kw = {"adapter": method} if method in ("aat", "loaa") else {}
        if method not in accepted:
            with pytest.raises((ConfigError, ValueError)) as e:
                model = models.create_model(name, **kw)
                peft.prepare(model, method)
            assert "\n" not in str(e.value) and all(m in str(e.value) for m in ("loaa",))
            continue
        torch.manual_seed(0)
        model = models.create_model(name, **kw).train()
        stats = peft.prepare(model, method)
        assert 0 < stats["trainable"] <= stats["total"]
        assert (stats["fraction"] == 1.0) == (method == "full")
        clip, frames = model.forward_logits(_x(model))
        (clip.square().mean() + frames.square().mean()).backward()
        for n, p in model.named_parameters():
            assert (p.grad is not None) == p.requires_grad, n
        if method in ("aat", "loaa"):      # the adapters train, and start at zero with a non-zero gradient
            ups = [p for n, p in model.named_parameters() if "adapter" in n and n.endswith("up.weight")]
            assert ups and all(p.grad.abs().sum() > 0 for p in ups)
            assert all(float(p.detach().abs().max()) == 0.0 for p in ups)


def test_mobilenet_refuses_aat_naming_what_it_takes():
    with pytest.raises(ConfigError, match=r"cannot take --peft aat; it takes: head, loaa, full"):
        peft.check_method("aat", models.registry.model_class("mn04"), "mn04")


@pytest.mark.parametrize("name,adapter", [("datar_mn_test", "aat"), ("datar_mn_test", "loaa"), ("mn_test", "loaa"),
                                          ("datar_test", "aat"), ("datar_test", "loaa")])
def test_fresh_adapters_leave_the_backbone_output_unchanged(name, adapter):
    torch.manual_seed(0)
    base = models.create_model(name).eval()
    adapted = models.create_model(name, adapter=adapter).eval()
    state = adapted.state_dict()
    assert set(base.state_dict()) < set(state)
    adapted.load_state_dict({**state, **base.state_dict()}, strict=True)
    x = _x(base)
    with torch.no_grad():
        for a, b in zip(base.forward_logits(x), adapted.forward_logits(x)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_loaa_reaches_the_cnn_stem_and_the_deformable_stage_along_both_axes():
    model = models.create_model("datar_mn04", adapter="loaa")
    kinds = {n: m.kind for n, m in model.named_modules() if isinstance(m, models.layers.adapters.MapAdapter)}
    assert any(n.startswith("stem_adapters.") for n in kinds) and any(n.startswith("blocks.") for n in kinds)
    assert {kinds[n] for n in kinds if n.startswith("stem_adapters.")} == {"time", "freq"}
    aat = models.create_model("datar_mn04", adapter="aat")
    assert aat.blocks[0].spatial_adapter is not None
    assert models.create_model("datar_mn04", adapter="aat", spatial_adapter=False).blocks[0].spatial_adapter is None


def test_train_mode_keeps_frozen_batchnorm_statistics():
    torch.manual_seed(0)
    model = models.create_model("mn_test", adapter="loaa")
    peft.prepare(model, "loaa")
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    peft.train_mode(model)
    model.forward_logits(_x(model))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.train()                                  # plain train mode would move them: the check can fail
    model.forward_logits(_x(model))
    assert not all(torch.equal(before[k], model.state_dict()[k]) for k in before)


# -- retargeting ------------------------------------------------------------------------------------------------
def _sound(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = np.zeros(n, np.float32)
    a, b = int(0.1 * n), int(0.9 * n)
    if kind == "whistle":
        x[a:b] = 0.3 * np.sin(2 * np.pi * rng.uniform(1800, 2200) * t[a:b])
    elif kind == "hum":
        x[a:b] = 0.3 * np.sign(np.sin(2 * np.pi * rng.uniform(90, 110) * t[a:b]))
    else:                                           # clicks: noise bursts
        for k in range(a, b, 1600):
            x[k:k + 160] = 0.5 * rng.standard_normal(min(160, b - k))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny sigmoid detector saved as a checkpoint: the 'shipped default' of these tests."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("base")
    model = models.create_model("datar_mn_test", num_classes=4)
    model.train()
    with torch.no_grad():                         # BatchNorm statistics that are not the initial ones
        for _ in range(3):
            model.forward_logits(torch.randn(4, 100, model.num_mel_bins))
    save(model.eval(), d, labels=["dog", "siren", "rain", "whistle"])
    return d


@pytest.fixture(scope="module")
def user_sounds(tmp_path_factory) -> Path:
    """A folder per class: whistle (4 clips; also a base label), hum (4, one of them 0.3 s), clicks (1 clip), an
    unreadable file and an empty folder."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("sounds")
    for kind, n in (("whistle", 4), ("hum", 4), ("clicks", 1)):
        (d / kind).mkdir()
        for i in range(n):
            seconds = 0.3 if (kind == "hum" and i == 0) else 1.5
            sf.write(str(d / kind / f"{kind}_{i}.wav"), _sound(kind, seconds, rng), SR)
    (d / "hum" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (d / "empty").mkdir()
    return d


def _cfg(base: Path, data: Path, out: Path, method: str, **kw) -> RetargetConfig:
    settings = {"epochs": 2, "batch_size": 8, "noise_dir": None, "speech": False, "cache_dir": str(out / "cache"), **kw}
    return RetargetConfig(init=str(base), peft=method, data=str(data), out=str(out), **settings)


@pytest.fixture(scope="module")
def aat_run(base, user_sounds, tmp_path_factory):
    out = tmp_path_factory.mktemp("aat")
    return retarget(_cfg(base, user_sounds, out, "aat")), out


def test_retarget_keeps_the_base_frozen_bit_for_bit(base, aat_run):
    result, _ = aat_run
    tuned, config = models.load(result.out)
    original, _ = models.load(base)
    ours, theirs = tuned.state_dict(), original.state_dict()
    shared = [k for k in theirs if not k.startswith(HEAD_PREFIXES)]
    assert shared and all(torch.equal(ours[k], theirs[k]) for k in shared)   # running statistics included
    assert any("adapter" in k and float(ours[k].abs().max()) > 0 for k in ours)  # the adapters did train
    assert config.labels == ("clicks", "hum", "whistle")


def test_adapter_checkpoint_is_small_and_names_its_base(base, aat_run):
    from safetensors import safe_open

    result, _ = aat_run
    config = json.loads((result.out / "config.json").read_text())
    assert config["base"]["sha256"] == weights_sha256(base) and config["base"]["method"] == "aat"
    with safe_open(str(result.out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys and all("adapter" in k or k.startswith(("head.", "frame_head.")) for k in keys)
    assert result.checkpoint_bytes < (base / "model.safetensors").stat().st_size / 3
    assert 0 < result.fraction < 0.5 and result.cpu_minutes > 0


def test_adapter_checkpoint_refuses_another_base(base, aat_run, tmp_path):
    import shutil

    result, _ = aat_run
    moved = tmp_path / "adapter"
    shutil.copytree(result.out, moved)
    config = json.loads((moved / "config.json").read_text())
    other = tmp_path / "other_base"
    torch.manual_seed(1)
    save(models.create_model("datar_mn_test", num_classes=4), other, labels=["dog", "siren", "rain", "whistle"])
    config["base"]["path"] = str(other)
    (moved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="sha256") as e:
        models.load(moved)
    assert "\n" not in str(e.value)


def test_retarget_onnx_matches_torch_and_serves_the_detector(aat_run):
    from engines import create_engine
    from realtime import Detector

    result, _ = aat_run
    ort_engine = create_engine("onnxruntime", result.out)
    torch_engine = create_engine("torch", result.out)
    x = np.random.default_rng(0).standard_normal((2, 100, ort_engine.spec.num_mel_bins)).astype(np.float32)
    np.testing.assert_allclose(ort_engine.infer(x), torch_engine.infer(x), atol=1e-4)
    tags = Detector(ort_engine).clip_scores(_sound("whistle", 1.5, np.random.default_rng(5)))
    assert tags.shape == (3,) and np.isfinite(tags).all()


def test_retarget_reports_each_bad_input_and_uses_the_good_data(aat_run):
    result, _ = aat_run
    text = "\n".join(result.warnings)
    assert "broken.wav" in text                                   # unreadable: skipped by name
    assert "'clicks' has only 1 clip" in text                     # one clip: trained on, warned
    assert "shorter than the 1 s window" in text                  # short clip: used
    assert "'empty' has no usable clip" in text                   # empty folder: left out
    assert "['whistle'] are also classes of the base model" in text
    assert f"fewer than {MIN_THRESHOLD_CLIPS}" in text and "'clicks'" in text   # too few for a threshold
    assert "clicks" not in result.thresholds


def test_thresholds_come_from_the_examples_where_there_are_enough(base, user_sounds, tmp_path):
    result = retarget(_cfg(base, user_sounds, tmp_path, "head", epochs=6, lr=2e-2))
    config = models.io.read_config(result.out)
    default = config.detection.threshold
    for name in ("whistle", "hum"):                    # 4 clips each: a threshold of their own, or a warning why not
        assert name in result.thresholds or any(f"class {name!r}: its weakest example" in w for w in result.warnings)
    assert dict(config.detection.thresholds) == result.thresholds
    assert all(0.2 <= t <= 0.9 for t in result.thresholds.values()) and 0 < default < 1


def test_retarget_full_writes_a_complete_checkpoint(base, user_sounds, tmp_path):
    result = retarget(_cfg(base, user_sounds, tmp_path, "full", epochs=1))
    config = json.loads((result.out / "config.json").read_text())
    assert "base" not in config and result.fraction == 1.0
    model, _ = models.load(result.out)
    assert model.num_classes == 3


def test_cli_retargets_and_every_command_uses_the_result(base, user_sounds, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "apps.cli", "train", "--init", str(base), "--peft", "loaa", "--data",
           str(user_sounds), "--layout", "folder", "--epochs", "1", "--batch-size", "8", "--noise-dir", "",
           "--cache-dir", str(tmp_path / "cache"), "-o", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "parameters (" in r.stdout and "CPU minutes" in r.stdout
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["classes"] == 3 and 0 < summary["trainable_percent"] < 100
    wav = user_sounds / "whistle" / "whistle_1.wav"
    d = subprocess.run([sys.executable, "-m", "apps.cli", "detect", "--model", str(out / "final"), str(wav), "--tags",
                        "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert d.returncode == 0, d.stderr[-2000:]
    assert len([ln for ln in d.stdout.splitlines() if ln.endswith("tag")]) == 2


def test_cli_refuses_a_method_the_base_cannot_take(tmp_path, user_sounds):
    d = tmp_path / "mn"
    save(models.create_model("mn_test", num_classes=2), d, labels=["a", "b"])
    r = subprocess.run([sys.executable, "-m", "apps.cli", "train", "--init", str(d), "--peft", "aat", "--data",
                        str(user_sounds), "--layout", "folder", "-o", str(tmp_path / "o")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "it takes: head, loaa, full" in err[0], r.stderr


def test_loop_peft_keeps_frozen_tensors_bit_for_bit(tmp_path, user_sounds):
    """``aed train --model ... --peft`` (the generic trainer) freezes the same way: EMA and BatchNorm included."""
    from models.training.loop import TrainConfig, train

    torch.manual_seed(0)
    cfg = TrainConfig(model="mn_test", peft="loaa", data=str(user_sounds), layout="folder", out=str(tmp_path / "r"),
                      epochs=1, batch_size=4, steps_per_epoch=2, noise_dir=None, cache_dir=None, progress=False,
                      model_kwargs={"num_classes": 4}, threads=1, output_activation="sigmoid")
    train(cfg)
    state = json.loads((tmp_path / "r" / "config.json").read_text())
    assert state["train"]["peft"] == "loaa"
    trained, _ = models.load(tmp_path / "r" / "final")
    from models.training.checkpoint import load_state

    raw, _, _, _ = load_state(tmp_path / "r" / "last")
    frozen = [k for k, _ in trained.named_parameters() if "adapter" not in k and not k.startswith("classifier")]
    buffers = [k for k, _ in trained.named_buffers() if k.startswith("features.")]
    # the run seeded torch with cfg.seed before building: rebuild the same initial tensors
    torch.manual_seed(cfg.seed)
    init = models.create_model("mn_test", num_classes=4, adapter="loaa").state_dict()
    ours = trained.state_dict()
    assert all(torch.equal(ours[k], init[k]) for k in frozen + buffers)
    assert all(torch.equal(raw[k], init[k]) for k in frozen + buffers)


def test_readme_synopsis_train_with_peft_runs(tmp_path, user_sounds):
    """``aed train --model datar_tiny --peft aat`` crashed (DATAR took no adapter); the same line on the tiny DATAR."""
    r = subprocess.run([sys.executable, "-m", "apps.cli", "train", "--model", "datar_test", "--peft", "aat", "--data",
                        str(user_sounds), "--layout", "folder", "--epochs", "1", "--steps-per-epoch", "1",
                        "--batch-size", "2", "--noise-dir", "", "--cache-dir", "", "--no-progress", "-o",
                        str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    model, config = models.load(tmp_path / "run" / "final")
    assert config.kwargs["adapter"] == "aat" and any(".spatial_adapter." in k for k in model.state_dict())


def test_cli_refuses_an_adapter_checkpoint_as_init(aat_run, user_sounds, tmp_path):
    result, _ = aat_run
    r = subprocess.run([sys.executable, "-m", "apps.cli", "train", "--init", str(result.out), "--peft", "head",
                        "--data", str(user_sounds), "-o", str(tmp_path / "o")], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    err = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(err) == 1 and "is an adapter checkpoint" in err[0], r.stderr
