"""Regression tests for the reliability issue's file, validation, CLI and multi-stream items.

Real files go through the real decoders (libsndfile via soundfile), the CLI through ``apps.cli.main`` or the
installed ``aed`` script, engines are the real ONNX Runtime and torch engines on exported graphs.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from apps.cli import main
from realtime import Detector, DetectorConfig, FrontEndConfig, WindowConfig
from realtime.errors import AedError, AudioError, ConfigError, ModelFileError
from realtime.multistream import MultiStreamRunner, StreamChunkError
from realtime.sources import AudioReader, FileSource, read_audio
from tests.audio_helpers import LoudnessEngine, tone_burst

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
AED = Path(sys.executable).parent / "aed"
CFG = DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64), window=WindowConfig(1.0, 0.1))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A small checkpoint directory (config.json + safetensors + model.onnx) with random weights."""
    import models

    torch.manual_seed(0)
    m = models.create_model("datar_test", num_classes=3)
    d = tmp_path_factory.mktemp("ckpt") / "tiny"
    models.io.save(m, d, labels=["a", "b", "c"], thresholds={"default": 0.0})
    cfg = json.loads((d / "config.json").read_text())
    models.export_onnx(m, d / "model.onnx", cfg)
    return d


def _copy_ckpt(src: Path, dst: Path, edit=None) -> Path:
    shutil.copytree(src, dst)
    if edit is not None:
        cfg = json.loads((dst / "config.json").read_text())
        edit(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _wav(path: Path, seconds: float = 2.0, rate: int = 16000) -> Path:
    sf.write(path, tone_burst(rate, seconds, 0.5, 0.5), rate, subtype="PCM_16")
    return path


def _lying_flac(path: Path) -> Path:
    """A real FLAC whose STREAMINFO claims 2**36 - 1 samples (about 50 days at 16 kHz)."""
    sf.write(path, tone_burst(16000, 3.0, 0.5, 0.5), 16000, format="FLAC")
    b = bytearray(path.read_bytes())
    assert b[:4] == b"fLaC" and b[4] & 0x7F == 0           # first metadata block is STREAMINFO
    si = 8
    v = int.from_bytes(b[si + 10:si + 18], "big")
    v = (v & ~((1 << 36) - 1)) | ((1 << 36) - 1)
    b[si + 10:si + 18] = v.to_bytes(8, "big")
    path.write_bytes(bytes(b))
    return path


# -- data loss and memory ---------------------------------------------------------------------------------------


def test_detect_refuses_to_write_over_its_input(tiny_checkpoint, tmp_path, capsys):
    wav = _wav(tmp_path / "rec.wav")
    before = wav.read_bytes()
    link = tmp_path / "hard.wav"
    os.link(wav, link)                                            # same inode, other name
    for out in (wav, link):
        code = main(["detect", str(wav), "--model", str(tiny_checkpoint), "-o", str(out)])
        assert code == 2
        assert "is the input file" in capsys.readouterr().err
        assert wav.read_bytes() == before                         # the recording is intact


def test_detect_output_is_atomic_and_an_old_output_survives_a_failed_start(tiny_checkpoint, tmp_path, capsys):
    wav = _wav(tmp_path / "rec.wav")
    out = tmp_path / "events.tsv"
    out.write_text("precious\n")
    code = main(["detect", str(wav), "--model", str(tmp_path / "missing_model"), "-o", str(out)])
    assert code == 1 and out.read_text() == "precious\n"          # the engine never opened: nothing replaced
    assert main(["detect", str(wav), "--model", str(tiny_checkpoint), "-o", str(out)]) == 0
    assert out.read_text().startswith("filename\tonset")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]    # the temporary file was renamed


def test_files_are_decoded_in_bounded_blocks_with_the_same_events(tmp_path):
    rate = 16000
    x = np.concatenate([tone_burst(rate, 4.0, 1.0, 0.8, seed=s) for s in range(5)])      # 20 s
    p = tmp_path / "long.flac"
    sf.write(p, x, rate)
    reader = AudioReader(p, block_s=1.0)
    sizes = [b.shape[0] for b in reader.blocks()]
    assert max(sizes) == rate and sum(sizes) == x.shape[0]         # never more than one block in memory
    audio, r = read_audio(p)
    det = Detector(LoudnessEngine(), CFG)
    whole = det.process(audio)
    assert len(whole) >= 10
    streamed = []
    det.reset()
    for b in AudioReader(p, block_s=0.37).blocks():
        streamed += det.push(b)
    streamed += det.flush()
    assert streamed == whole


def test_streamed_tags_equal_clip_scores():
    eng = LoudnessEngine()
    x = tone_burst(16000, 5.0, 1.0, 2.0)
    det = Detector(eng, CFG)
    for i in range(0, x.shape[0], 3000):
        det.push(x[i:i + 3000])
    det.flush()
    np.testing.assert_allclose(det.stream_tags(), Detector(eng, CFG).clip_scores(x), atol=1e-6)
    short = tone_burst(16000, 0.4, 0.1, 0.2)                       # shorter than a window: one padded window
    det.reset()
    det.push(short)
    det.flush()
    np.testing.assert_allclose(det.stream_tags(), det.clip_scores(short), atol=1e-6)


def test_a_file_that_lies_about_its_length_costs_one_line_and_not_the_others(tiny_checkpoint, tmp_path, capsys):
    lie = _lying_flac(tmp_path / "lie.flac")
    with pytest.raises(AudioError, match="lies about its length"):
        read_audio(lie)                                           # no 256 GiB allocation: decoded in blocks
    good = _wav(tmp_path / "good.wav")
    out = tmp_path / "o.tsv"
    code = main(["detect", str(lie), str(good), "--model", str(tiny_checkpoint), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    lines = [ln for ln in err.splitlines() if "lie.flac" in ln]
    assert len(lines) == 1 and "Traceback" not in err
    rows = out.read_text().splitlines()[1:]
    assert rows and all(r.startswith("good.wav\t") for r in rows)


def test_truncated_and_absurd_wavs_are_read_with_a_warning(tmp_path, caplog):
    full = _wav(tmp_path / "full.wav", seconds=3.0)
    data = full.read_bytes()
    trunc = tmp_path / "trunc.wav"
    trunc.write_bytes(data[: len(data) // 2])
    absurd = bytearray(data)
    i = absurd.find(b"data")
    absurd[i + 4:i + 8] = struct.pack("<I", 0xFFFFFFF0)
    (tmp_path / "absurd.wav").write_bytes(bytes(absurd))
    with caplog.at_level("WARNING"):
        x, _ = read_audio(trunc)
        y, _ = read_audio(tmp_path / "absurd.wav")
    assert x.shape[0] == (len(data) // 2 - 44) // 2 and y.shape[0] == 48000
    msgs = [r.getMessage() for r in caplog.records]
    assert any("trunc.wav" in m and "promises 48000 frames" in m and f"holds {x.shape[0]}" in m for m in msgs), msgs
    assert any("absurd.wav" in m and "holds 48000" in m for m in msgs), msgs


def test_non_regular_files_are_refused_at_once(tiny_checkpoint, tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioError, match="FIFO"):
        FileSource(fifo)
    for cmd in (["detect", str(fifo)], ["listen", "--source", str(fifo), "--fast"]):
        p = subprocess.run([str(AED), *cmd, "--model", str(tiny_checkpoint)], capture_output=True, text=True,
                           timeout=60)                            # a FIFO with no writer used to hang forever
        assert p.returncode != 0 and "FIFO" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_symlink_loop_is_named_as_such(tiny_checkpoint, tmp_path, capsys):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.symlink_to(b)
    b.symlink_to(a)
    assert main(["detect", str(a), "--model", str(tiny_checkpoint)]) == 1
    err = capsys.readouterr().err
    assert "symlink loop" in err and "no such file" not in err


def test_tab_and_newline_in_a_file_name_keep_the_tsv_rectangular(tiny_checkpoint, tmp_path, capsys):
    odd = _wav(tmp_path / "a\tb\nc.wav")
    out = tmp_path / "o.tsv"
    assert main(["detect", str(odd), "--model", str(tiny_checkpoint), "-o", str(out)]) == 0
    rows = out.read_text().split("\n")[1:-1]
    assert rows and all(len(r.split("\t")) == 5 for r in rows)
    assert all(r.split("\t")[0] == "a\\tb\\nc.wav" for r in rows)


def test_broken_pipe_exits_quietly(tiny_checkpoint, tmp_path):
    wavs = [str(_wav(tmp_path / f"w{i}.wav")) for i in range(6)]
    p = subprocess.run(f"'{AED}' detect {' '.join(wavs)} --model '{tiny_checkpoint}' | head -n 1", shell=True,
                       capture_output=True, text=True, timeout=120)
    assert p.stdout.startswith("filename\t")
    assert "Broken pipe" not in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_cli_reports_user_errors_in_one_line_and_keeps_tracebacks_for_bugs(monkeypatch, capsys):
    import apps.cmd_models as cm

    def user(args):
        raise ConfigError("bad setting: accepted are 1..3")

    def bug(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(cm, "run", user)
    assert main(["models"]) == 1
    assert capsys.readouterr().err.strip() == "aed models: error: bad setting: accepted are 1..3"
    monkeypatch.setattr(cm, "run", bug)
    with pytest.raises(TypeError):
        main(["models"])


# -- validation in one place ------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [("frame_shift_ms", 0), ("frame_length_ms", 1e7), ("num_mel_bins", 0),
                                          ("sample_rate", 0), ("std", float("nan")), ("low_freq", -5.0),
                                          ("high_freq", 1e6)])
def test_every_front_end_field_is_bounded(field, value):
    with pytest.raises(ConfigError, match=field):
        FrontEndConfig(**{field: value})


@pytest.mark.parametrize("kw, match", [({"merge_gap_s": float("nan")}, "merge_gap_s"), ({"batch_size": 0}, "batch_size"),
                                       ({"input_rate": 0}, "input_rate"), ({"threshold": 1.5}, "threshold"),
                                       ({"min_duration_s": -1.0}, "min_duration_s"),
                                       ({"thresholds": {"x": float("nan")}}, "threshold of 'x'")])
def test_detector_settings_are_checked_when_built(kw, match):
    with pytest.raises(ConfigError, match=match):
        DetectorConfig(**kw)


def test_batch_size_above_the_engine_limit_is_refused(tiny_checkpoint):
    from engines import create_engine

    eng = create_engine("onnxruntime", tiny_checkpoint, max_batch=4)
    with pytest.raises(ConfigError, match="above the engine's limit of 4"):
        Detector(eng, DetectorConfig.from_model(eng.config).override(batch_size=8))


@pytest.mark.parametrize("what, edit, match", [
    ("labels too few", lambda c: c.update(labels=c["labels"][:2]), "labels"),
    ("duplicate labels", lambda c: c.update(labels=["a", "a", "c"]), "repeated"),
    ("t_min 0", lambda c: c["input"].update(t_min=0), "t_min"),
    ("max_batch 0", lambda c: c["input"].update(max_batch=0), "max_batch"),
    ("frame shift 0", lambda c: c["frontend"].update(frame_shift_ms=0), "frame_shift_ms"),
    ("frame length 1e7", lambda c: c["frontend"].update(frame_length_ms=1e7), "frame_length_ms"),
    ("NaN merge gap", lambda c: c["thresholds"].update(merge_gap_s=float("nan")), "merge_gap_s"),
])
@pytest.mark.parametrize("kind", ["onnxruntime", "torch"])
def test_bad_model_configs_fail_at_load_time(tiny_checkpoint, tmp_path, kind, what, edit, match):
    from engines import create_engine

    bad = _copy_ckpt(tiny_checkpoint, tmp_path / "bad", edit)
    with pytest.raises(AedError, match=match):
        create_engine(kind, bad)


def test_a_label_list_that_does_not_fit_the_graph_fails_at_load(tiny_checkpoint, tmp_path):
    """An .onnx whose embedded config lists the wrong number of labels: the probe window at load catches it."""
    import onnx
    from engines import create_engine

    m = onnx.load(str(tiny_checkpoint / "model.onnx"))
    meta = {p.key: p for p in m.metadata_props}
    cfg = json.loads(meta["aed_config"].value)
    cfg["labels"] = ["a", "b", "c", "d"]
    meta["aed_config"].value = json.dumps(cfg)
    path = tmp_path / "wrong_labels.onnx"
    onnx.save(m, str(path))
    with pytest.raises(ModelFileError, match="4 labels"):
        create_engine("onnxruntime", path)


def test_a_symbolic_f_graph_is_checked_against_the_config(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    from engines import create_engine

    w = helper.make_tensor("W", TensorProto.FLOAT, [128, 2], np.zeros(256, np.float32).tolist())
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["fbank", "axes"], ["m"], keepdims=0),
         helper.make_node("MatMul", ["m", "W"], ["z"]), helper.make_node("Sigmoid", ["z"], ["scores"])],
        "g", [helper.make_tensor_value_info("fbank", TensorProto.FLOAT, ["B", "T", "F"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["B", 2])], initializer=[w, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    cfg = {"labels": ["x", "y"], "frontend": FrontEndConfig(num_mel_bins=64).to_dict(),
           "input": {"num_mel_bins": 64, "t_min": 1, "t_max": 1000}}
    helper.set_model_props(model, {"aed_config": json.dumps(cfg)})
    path = tmp_path / "symbolic_f.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError, match=r"fails on a \(1, 100, 64\) window"):
        create_engine("onnxruntime", path)


def test_onnxruntime_and_torch_read_the_same_config(tiny_checkpoint, tmp_path):
    from engines import create_engine

    tuned = _copy_ckpt(tiny_checkpoint, tmp_path / "tuned", lambda c: c["thresholds"].update(default=0.7))
    ort, pt = create_engine("onnxruntime", tuned), create_engine("torch", tuned)
    assert ort.config == pt.config and ort.config.detection.threshold == 0.7
    stale = _copy_ckpt(tiny_checkpoint, tmp_path / "stale", lambda c: c.update(labels=["x", "y", "z"]))
    with pytest.raises(ModelFileError, match="stale"):
        create_engine("onnxruntime", stale)


def test_huge_float64_samples_are_refused_after_the_cast():
    det = Detector(LoudnessEngine(), CFG)
    x = np.zeros(16000, np.float64)
    x[5] = 1e300                                                   # finite in float64, Inf in float32
    with pytest.raises(AudioError, match="NaN or Inf"):
        det.process(x)


def test_nan_merge_gap_on_the_command_line_is_one_line(tiny_checkpoint, tmp_path, capsys):
    wav = _wav(tmp_path / "w.wav")
    code = main(["detect", str(wav), "--model", str(tiny_checkpoint), "--merge-gap", "nan"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "merge" in err[0]


# -- multi-stream -----------------------------------------------------------------------------------------------


def test_a_bad_chunk_on_one_stream_costs_the_others_nothing():
    a = tone_burst(16000, 6.0, 2.0, 1.0, seed=1)
    ms = MultiStreamRunner(LoudnessEngine(), ["a", "b"], CFG, max_batch=16)
    got = []
    bad = np.full(3200, np.nan, np.float32)
    for i in range(0, a.shape[0], 3200):
        chunks = {"a": a[i:i + 3200], "b": bad if i == 16000 else np.zeros(3200, np.float32)}
        try:
            got += ms.push(chunks)["a"]
        except StreamChunkError as e:
            assert set(e.errors) == {"b"} and "NaN" in str(e)
            got += e.events["a"]
    got += ms.flush()["a"]
    assert got == Detector(LoudnessEngine(), CFG).process(a)     # stream a lost nothing


@pytest.mark.parametrize("max_batch", [128, -1, 0])
def test_max_batch_is_checked_when_the_runner_is_built(tiny_checkpoint, max_batch):
    from engines import create_engine

    eng = create_engine("onnxruntime", tiny_checkpoint)            # its limit is 64
    with pytest.raises(ConfigError, match="max_batch must fit the engine's limit of 64"):
        MultiStreamRunner(eng, ["a"], max_batch=max_batch)


def test_clip_scores_follow_the_shared_clip_window_rule():
    """Detector.clip_scores is the mean over exactly the windows of realtime.windows.clip_window_ends."""
    from realtime.frontend import fbank, normalize, silence_frame
    from realtime.windows import clip_window_ends

    eng = LoudnessEngine()
    det = Detector(eng, CFG)
    fe = CFG.frontend
    for seconds in (0.4, 1.0, 2.37, 5.0):
        x = tone_burst(16000, seconds, 0.1, 0.2)
        feats = normalize(fbank(x, fe), fe)
        wins = []
        for end in clip_window_ends(feats.shape[0], det.T, det.hop_frames):
            w = feats[max(0, end - det.T):end]
            if w.shape[0] < det.T:
                w = np.concatenate([np.repeat(silence_frame(fe)[None], det.T - w.shape[0], 0), w])
            wins.append(w)
        want = eng.infer(np.stack(wins)).mean(axis=0)
        np.testing.assert_allclose(det.clip_scores(x), want, atol=1e-6, err_msg=f"{seconds} s")
