"""EfficientAT's ``mn04_as`` checkpoint: strict loading, AudioSet tags on real clips, ONNX parity, refusal of bad
files (pickled code never runs), the 16 kHz front end against an independent torch reference, and
``aed import-checkpoint`` end to end.

The checkpoint is read from ``../shared/models/efficientat`` and the clips from ``../shared/data/esc50`` (relative to
the repository root); tests that need them skip with a reason when they are absent. Nothing here copies the
checkpoint into the repository: every file written goes to pytest's ``tmp_path``.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from models import create_model, export_onnx, load, load_efficientat_checkpoint  # noqa: E402
from models.efficientat import CheckpointError  # noqa: E402
from realtime.config import efficientat_frontend  # noqa: E402
from realtime.frontend import StreamingFbank, fbank, normalize  # noqa: E402
from tests.helpers_onnx import ort_session  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHECKPOINT = SHARED / "models" / "efficientat" / "mn04_as_mAP_432.pt"
ESC50_AUDIO = SHARED / "data" / "esc50" / "audio"
DOG, RAIN, BIRDS = "1-100032-A-0.flac", "1-17367-A-10.flac", "1-100038-A-14.flac"
LAYOUT = "expected a PyTorch state dict"   # what every layout error names (models.efficientat._LAYOUT)


@pytest.fixture(autouse=True)
def _one_thread():
    # the machine is shared with a training run: one thread for torch in every test
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _need_checkpoint() -> Path:
    if not CHECKPOINT.is_file():
        pytest.skip(f"EfficientAT checkpoint not found at {CHECKPOINT} (see ../shared/models/efficientat/README.md)")
    return CHECKPOINT


def _clip(name: str) -> np.ndarray:
    path = ESC50_AUDIO / name
    if not path.is_file():
        pytest.skip(f"ESC-50 clip not found at {path}")
    audio, rate = sf.read(str(path), dtype="float32")
    if rate != 16000 or audio.ndim != 1:
        pytest.fail(f"{name}: expected mono 16 kHz audio, got shape {audio.shape} at {rate} Hz")
    return audio


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    return _need_checkpoint()


@pytest.fixture(scope="module")
def state(checkpoint):
    return torch.load(str(checkpoint), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def mn04(checkpoint):
    return load_efficientat_checkpoint(checkpoint)


def _features(audio: np.ndarray) -> np.ndarray:
    cfg = efficientat_frontend()
    return normalize(fbank(audio, cfg), cfg)                          # (T, 128)


def _top(scores: np.ndarray, labels: list[str], k: int = 5) -> list[str]:
    return [labels[i] for i in np.argsort(-scores)[:k]]


# -- loading -------------------------------------------------------------------------------------------------------

def test_strict_load_with_audioset_labels(mn04, state):
    assert len(mn04.labels) == 527 and mn04.labels[0] == "Speech"
    assert mn04.num_classes == 527 and not mn04.training
    ours = mn04.state_dict()
    assert set(ours) == set(state)
    for k, v in state.items():
        assert torch.equal(ours[k], v), k
    assert mn04.frontend == efficientat_frontend()
    assert mn04.pretrained_from["file"] == CHECKPOINT.name


@pytest.mark.parametrize("clip, wanted", [(DOG, {"Dog", "Bark"}), (RAIN, {"Rain"})])
def test_audioset_tags_on_real_clips(mn04, clip, wanted):
    """Whole 5 s clip as one window through the NumPy front end at 16 kHz."""
    x = torch.from_numpy(_features(_clip(clip)))[None]               # (T, F) -> (1, T, F)
    with torch.no_grad():
        scores = mn04(x)[0].numpy()
    top5 = _top(scores, mn04.labels)
    assert wanted & set(top5), f"{clip}: top 5 {top5}"


def test_new_head_loads_everything_else(checkpoint, state):
    model = load_efficientat_checkpoint(checkpoint, num_classes=50)
    ours = model.state_dict()
    assert model.num_classes == 50 and model.model_kwargs["num_classes"] == 50
    assert model.labels == [f"class_{i}" for i in range(50)]
    assert tuple(ours["classifier.5.weight"].shape) == (50, 512) and tuple(ours["classifier.5.bias"].shape) == (50,)
    assert torch.equal(ours["classifier.2.weight"], state["classifier.2.weight"])
    for k, v in state.items():
        if not k.startswith("classifier.5."):
            assert torch.equal(ours[k], v), k
    with torch.no_grad():
        assert model(torch.zeros(1, 100, 128)).shape == (1, 50)


# -- ONNX ----------------------------------------------------------------------------------------------------------

def _check_onnx_parity(model, path: Path, windows: np.ndarray) -> None:
    pytest.importorskip("onnx")
    export_onnx(model, path)
    sess = ort_session(path)
    outputs = [o.name for o in sess.get_outputs()]
    for t in (50, 100, 300):
        x = np.ascontiguousarray(windows[:, :t])                      # (B, T, F)
        with torch.no_grad():
            ref_scores, ref_frames = model.forward_with_frames(torch.from_numpy(x))
        got = dict(zip(outputs, sess.run(outputs, {"fbank": x})))
        np.testing.assert_allclose(got["scores"], ref_scores.numpy(), atol=1e-4, rtol=0, err_msg=f"T={t}")
        if ref_frames is not None:
            np.testing.assert_allclose(got["frame_scores"], ref_frames.numpy(), atol=1e-4, rtol=0,
                                       err_msg=f"frames, T={t}")


def test_onnx_parity_mn04_real_weights(mn04, tmp_path):
    windows = np.stack([_features(_clip(DOG))[:300], _features(_clip(RAIN))[:300]])
    _check_onnx_parity(mn04, tmp_path / "mn04.onnx", windows)


def test_onnx_parity_datar_mn04(tmp_path):
    torch.manual_seed(0)
    model = create_model("datar_mn04").eval()
    windows = np.random.default_rng(0).standard_normal((2, 300, 128)).astype(np.float32)
    _check_onnx_parity(model, tmp_path / "datar_mn04.onnx", windows)


def _folded_datar_mn04() -> "torch.nn.Module":
    """``datar_mn04`` with the foldable adaptor, its λ, 1x1 map and first BatchNorm moved off their starting values
    (λ starts at 0.01 and BatchNorm at the identity, where a wrong fold would hardly show)."""
    torch.manual_seed(0)
    model = create_model("datar_mn04", adaptor_act="relu", adaptor_out_kernel=1)
    with torch.no_grad():
        model.input_adaptor.scale.fill_(0.8)
        torch.nn.init.normal_(model.input_adaptor.conv[2].weight)
        bn = model.features[0][1]
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_folded_adaptor_is_the_adaptor_then_the_stem():
    """The fold computes the same map as adapting the image and running the stem's first conv + BatchNorm on it,
    with the BatchNorm in eval mode (folded too) and in training mode (on batch statistics)."""
    from models.datar import InputAdaptor

    model = _folded_datar_mn04()
    adaptor, (conv, bn, _) = model.input_adaptor, model.features[0]
    x = torch.randn(3, 1, 128, 100)
    # (adaptor, BatchNorm) modes: eval; training; a trained adaptor over a frozen BatchNorm, as fine-tuning does
    for modes in ((False, False), (True, True), (True, False)):
        adaptor.train(modes[0]), bn.train(modes[1])
        with torch.no_grad():
            want = bn(conv(adaptor(x)))
            got = adaptor.fold_into(conv, x, bn)
            plain = bn(conv(x))
        assert (want - plain).abs().max() > 0.1                         # the adaptor moves the map: not a no-op check
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5, msg=f"adaptor, bn training: {modes}")
    with pytest.raises(ValueError, match="out_kernel=1"):
        InputAdaptor(4).fold_into(conv, x)
    with pytest.raises(ValueError, match="out_kernel must be 1 or 3"):
        InputAdaptor(4, out_kernel=5)


def test_datar_mn04_runs_the_folded_adaptor_and_exports(tmp_path):
    """The network feeds its second stem block what adapting the image and running the first stem layer gives, and
    its ONNX graph matches torch at 0.5, 1 and 3 s."""
    model = _folded_datar_mn04()
    seen = []
    hook = model.features[1].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x = torch.randn(2, 100, 128)
    with torch.no_grad():
        model.forward_logits(x)
        image = x.transpose(1, 2).unsqueeze(1)                         # (B, T, F) -> (B, 1, F, T)
        want = model.features[0](model.input_adaptor(image))
        plain = model.features[0](image)
    hook.remove()
    assert (want - plain).abs().max() > 0.1                              # the adaptor changes what the stem sees
    torch.testing.assert_close(seen[0], want, atol=2e-5, rtol=1e-5)
    windows = np.random.default_rng(1).standard_normal((2, 300, 128)).astype(np.float32)
    _check_onnx_parity(model, tmp_path / "datar_mn04_fold.onnx", windows)


# -- bad files -----------------------------------------------------------------------------------------------------

class _Payload:
    """Pickles to a call of ``os.system``: loading it unsafely would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_list(p: Path, state, marker: Path) -> None:
    torch.save([torch.zeros(3), torch.ones(2)], str(p))


def _write_missing_key(p: Path, state, marker: Path) -> None:
    torch.save({k: v for k, v in state.items() if k != "features.3.block.1.1.running_var"}, str(p))


def _write_extra_key(p: Path, state, marker: Path) -> None:
    torch.save({**state, "classifier.7.weight": torch.zeros(527, 527)}, str(p))


def _write_torch_payload(p: Path, state, marker: Path) -> None:
    torch.save({**state, "classifier.5.weight": _Payload(marker)}, str(p))


def _write_pickle_payload(p: Path, state, marker: Path) -> None:
    with open(p, "wb") as f:
        pickle.dump(_Payload(marker), f)


def _write_truncated(p: Path, state, marker: Path) -> None:
    data = CHECKPOINT.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _write_garbage(p: Path, state, marker: Path) -> None:
    p.write_bytes(bytes(range(256)) * 16)


def _write_empty(p: Path, state, marker: Path) -> None:
    p.write_bytes(b"")


BAD_FILES: dict[str, Callable[[Path, dict, Path], None]] = {
    "list": _write_list, "missing_key": _write_missing_key, "extra_key": _write_extra_key,
    "torch_save_payload": _write_torch_payload, "pickle_dump_payload": _write_pickle_payload,
    "truncated": _write_truncated, "garbage": _write_garbage, "empty": _write_empty,
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_file_is_refused_in_one_line(kind, state, tmp_path):
    path, marker = tmp_path / f"{kind}.pt", tmp_path / "pwned"
    BAD_FILES[kind](path, state, marker)
    with pytest.raises(CheckpointError) as info:
        load_efficientat_checkpoint(path)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(path.name), msg
    assert LAYOUT in msg, msg
    assert not marker.exists(), "the pickled code ran"


def test_pickled_code_is_reported_as_such(state, tmp_path):
    path, marker = tmp_path / "payload.pt", tmp_path / "pwned"
    _write_torch_payload(path, state, marker)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_efficientat_checkpoint(path)
    assert not marker.exists(), "the pickled code ran"


def test_wrong_width_names_the_width(checkpoint, tmp_path):
    path = tmp_path / "mn10.pt"
    torch.save(create_model("mn10").state_dict(), str(path))
    with pytest.raises(CheckpointError) as info:
        load_efficientat_checkpoint(path)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1, msg
    assert "width 0.4" in msg and "looks like width 1.0" in msg, msg


@pytest.mark.parametrize("content", [b"hello world\n", b"eg", b"Jh"], ids=["text", "indexerror", "struct"])
def test_any_non_checkpoint_bytes_give_checkpoint_error(content, tmp_path):
    path = tmp_path / "not_a_checkpoint.pt"
    path.write_bytes(content)
    try:
        load_efficientat_checkpoint(path)
    except CheckpointError as e:
        assert len(str(e).splitlines()) == 1 and LAYOUT in str(e)
    else:
        pytest.fail("loaded a file that is no checkpoint")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_efficientat_checkpoint(tmp_path / "nope.pt")


# -- front end -----------------------------------------------------------------------------------------------------

def _chunked(fe: StreamingFbank, audio: np.ndarray, sizes) -> np.ndarray:
    out, i = [], 0
    for n in sizes:
        if i >= audio.shape[0]:
            break
        out.append(fe.push(audio[i:i + n]))
        i += n
    return np.concatenate(out)


def test_streaming_equals_offline_on_a_real_clip():
    cfg = efficientat_frontend()
    audio = _clip(DOG)
    ref = fbank(audio, cfg)
    assert ref.shape == (499, 128)
    fe = StreamingFbank(cfg)
    rng = np.random.default_rng(0)
    plans = {160: [160] * 1000, 1024: [1024] * 100, 4000: [4000] * 20,
             "random": rng.integers(1, 5000, size=1000).tolist(), "tiny start": [1, 1, 50, 150, 200, 3] + [997] * 100}
    for name, sizes in plans.items():
        fe.reset()
        got = _chunked(fe, audio, sizes)
        assert got.shape == ref.shape, name
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0, err_msg=str(name))
        assert fe.frames_emitted == ref.shape[0]


def _torch_reference(audio: np.ndarray) -> np.ndarray:
    """EfficientAT's log-mel fed at 16 kHz, written independently of realtime.frontend (float64)."""
    ta = pytest.importorskip("torchaudio")
    x = torch.from_numpy(audio.astype(np.float64))
    spec = torch.stft(x, n_fft=512, hop_length=160, win_length=400,
                      window=torch.hann_window(400, periodic=False, dtype=torch.float64), center=True,
                      pad_mode="reflect", normalized=False, return_complex=True)
    power = spec.real ** 2 + spec.imag ** 2                          # (257, N)
    mel, _ = ta.compliance.kaldi.get_mel_banks(128, 1024, 32000, 0.0, 15000.0, vtln_low=100.0, vtln_high=-500.0,
                                               vtln_warp_factor=1.0)
    mel = torch.nn.functional.pad(mel.double(), (0, 1))[:, :257]      # (128, 512) -> (128, 513) -> (128, 257)
    f = 31.25 * torch.arange(257, dtype=torch.float64)
    a = 0.97
    response = 1 + a * a - 2 * a * torch.cos(2 * torch.pi * f / 32000)
    melspec = (mel * (4 * response)[None, :]) @ power               # (128, N)
    return ((torch.log(melspec + 1e-5) + 4.5) / 5).T.numpy()         # (N, 128)


@pytest.mark.parametrize("clip", [DOG, RAIN, BIRDS])
def test_offline_equals_torch_reference(clip):
    audio = _clip(clip)
    ref = _torch_reference(audio)
    ours = _features(audio)
    assert ref.shape[0] == 1 + audio.shape[0] // 160 and ours.shape[0] == ref.shape[0] - 2
    np.testing.assert_allclose(ours, ref[: ours.shape[0]], atol=1e-4, rtol=0)


# -- aed import-checkpoint -----------------------------------------------------------------------------------------

def test_import_checkpoint_end_to_end(checkpoint, state, tmp_path, capsys):
    from apps.cli import main
    from engines import create_engine
    from realtime import Detector

    out = tmp_path / "mn04_as"
    assert main(["import-checkpoint", str(checkpoint), "-o", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and str(out) in printed[0], printed
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "model.onnx"}
    config = json.loads((out / "config.json").read_text())
    assert config["frontend"]["kind"] == "efficientat" and config["frontend"]["sample_rate"] == 16000
    assert config["labels"][0] == "Speech" and len(config["labels"]) == 527
    assert config["window"] == {"window_s": 1.0, "hop_s": 0.1}
    assert config["training"]["pretrained_from"]["file"] == checkpoint.name
    model, _ = load(out)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k

    with create_engine("onnxruntime", out, threads=1) as engine:
        assert engine.config.frontend.kind == "efficientat"
        scores = Detector(engine).clip_scores(_clip(DOG))
        top5 = _top(scores, list(engine.labels))
    assert {"Dog", "Bark"} & set(top5), top5

    # an existing checkpoint is kept unless --force
    assert main(["import-checkpoint", str(checkpoint), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0], err
    assert main(["import-checkpoint", str(checkpoint), "-o", str(out), "--force", "--num-classes", "50"]) == 0
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())
    assert len(config["labels"]) == 50 and config["kwargs"]["num_classes"] == 50


@pytest.mark.parametrize("argv_of", [
    lambda d: [str(d / "nope.pt")],
    lambda d: [str(d / "list.pt")],
    lambda d: [str(d / "list.pt"), "--num-classes", "0"],
], ids=["missing", "not_a_state_dict", "bad_num_classes"])
def test_import_checkpoint_bad_input_one_line_exit_2(argv_of, tmp_path, capsys):
    from apps.cli import main

    torch.save([1, 2, 3], str(tmp_path / "list.pt"))
    out = tmp_path / "out"
    assert main(["import-checkpoint", *argv_of(tmp_path), "-o", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aed import-checkpoint: error: "), err
    assert captured.out == "" and not (out / "config.json").exists()


def test_a_48khz_microphone_reaches_the_model_band_limited_to_8khz():
    """Audio at 48 kHz is resampled to 16 kHz before the front end: a 12 kHz tone (above the 16 kHz training
    data's 8 kHz band limit) leaves the bands at their floor, a 1 kHz tone does not."""
    from realtime import Detector
    from realtime.detector import DetectorConfig

    class Silent:
        labels = ["x"]

        def infer(self, x):
            return np.zeros((len(x), 1), np.float32)

    fe = efficientat_frontend()
    frames = []
    det = Detector(Silent(), DetectorConfig(frontend=fe, input_rate=48000), on_frames=frames.append)
    t = np.arange(48000 * 2) / 48000
    floor = np.log(1e-5)
    for f_hz, audible in ((12000.0, False), (1000.0, True)):
        frames.clear()
        det.reset()
        det.process((0.3 * np.sin(2 * np.pi * f_hz * t)).astype(np.float32))
        fb = np.concatenate(frames)[20:-20]                      # (n, 128) raw log-mel, away from the edges
        if audible:
            assert fb.max() > floor + 10
        else:
            assert fb.max() < floor + 1.0, fb.max()
