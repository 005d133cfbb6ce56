"""Issue 15 on the training and evaluation paths: a user's mistake is one line, a bad file is skipped and named.

Real parts: files on disk through the real decoders, the real CLI entry point (``apps.cli.main``) and, for the
monitor, the installed ``aed`` script in a subprocess. ESC-50 clips come from ``../shared/data`` (skipped with the
reason where absent); the rest are tones written with soundfile.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from apps.cli import main  # noqa: E402
from models.training.augment import AugmentConfig  # noqa: E402
from models.training.data import load_esc50  # noqa: E402
from models.training.datasets import load_train_data  # noqa: E402
from models.training.loop import TrainConfig  # noqa: E402
from realtime.errors import AedError, ConfigError  # noqa: E402
from tests.audio_helpers import esc50_clips  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
HEADER = "filename,fold,target,category,esc10,src_file,take,license"


def _tone(freq: float, seconds: float = 1.2) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(int(freq))
    return (0.5 * np.sin(2 * np.pi * freq * t) + 1e-3 * rng.standard_normal(t.size)).astype(np.float32)


def _tone_folder(root: Path, per_class: int = 2) -> Path:
    for name, f in (("high", 3000.0), ("low", 300.0)):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            sf.write(root / name / f"{name}{k}.wav", _tone(f * (1 + 0.02 * k)), SR)
    return root


def _cfg(data: Path, out: Path, cache: Path | None) -> TrainConfig:
    return TrainConfig(model="datar_test", layout="folder", data=str(data), val_data=None, noise_dir=None,
                       cache_dir=None if cache is None else str(cache), out=str(out), epochs=1, steps_per_epoch=1,
                       batch_size=2, threads=1, progress=False,
                       augment=AugmentConfig(min_window_s=0.5, max_window_s=1.0))


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "datar_test", "--layout", "folder", "--data", str(data), "--val-folds", "",
            "--noise-dir", "", "--cache-dir", "", "-o", str(out), "--epochs", "1", "--steps-per-epoch", "1",
            "--batch-size", "2", "--min-window", "0.5", "--max-window", "0.8", "--device", "cpu", "--no-progress",
            "--threads", "1", *extra]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A checkpoint directory of the smallest registered model with the labels ``a`` and ``b``."""
    import models

    torch.manual_seed(0)
    return models.save(models.create_model("datar_test", num_classes=2), tmp_path_factory.mktemp("model"),
                       labels=["a", "b"])


# -- 1. the ESC-50 CSV -------------------------------------------------------------------------------

def _write_esc50(root: Path, rows: list[str], header: str = HEADER) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "esc50.csv").write_text("\n".join([header, *rows]) + "\n")
    return root / "esc50.csv"


GOOD_ROWS = ["1-100032-A-0.flac,1,0,dog,True,100032,A,CC0", "1-100038-A-14.flac,1,1,rain,False,100038,A,CC-BY",
             "2-100648-A-43.flac,2,1,rain,False,100648,A,CC0"]


def test_esc50_csv_without_a_fold_column_names_the_file_and_the_header_line(tmp_path, capsys):
    header = HEADER.replace("fold,", "")
    csv_path = _write_esc50(tmp_path / "esc", [r.replace(",1,", ",", 1) for r in GOOD_ROWS], header)
    with pytest.raises(ConfigError, match=r"esc50\.csv:1: no fold column"):
        load_esc50(tmp_path / "esc")
    # through the CLI: one line, no traceback
    code = main(["train", "--model", "datar_test", "--data", str(tmp_path / "esc"), "--noise-dir", "",
                 "--cache-dir", "", "-o", str(tmp_path / "run"), "--device", "cpu", "--threads", "1", "--no-progress"])
    line = _one_line(capsys.readouterr().err)
    assert code != 0 and f"{csv_path}:1" in line and "fold" in line and "Traceback" not in line


@pytest.mark.parametrize("bad_row, column", [("1-100038-A-14.flac,1,rain,rain,False,100038,A,CC-BY", "target"),
                                             ("1-100038-A-14.flac,one,1,rain,False,100038,A,CC-BY", "fold")])
def test_esc50_csv_with_a_non_integer_value_names_the_row(tmp_path, capsys, tiny_model, bad_row, column):
    rows = [GOOD_ROWS[0], bad_row, GOOD_ROWS[2]]
    csv_path = _write_esc50(tmp_path / "esc", rows)
    with pytest.raises(ConfigError, match=rf"esc50\.csv:3: {column} must be an integer"):
        load_esc50(tmp_path / "esc", licenses=None)
    # evaluate reads the CSV before it decodes anything: bad usage, exit 2, one line naming file and line
    code = main(["evaluate", str(tiny_model), "--engine", "torch", "--threads", "1", "--data", str(tmp_path / "esc"),
                 "--folds", "1", "-o", str(tmp_path / "eval")])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and f"{csv_path}:3" in line and column in line


def test_esc50_csv_without_a_license_column_says_how_to_keep_every_clip(tmp_path):
    header = HEADER.replace(",license", "")
    _write_esc50(tmp_path / "esc", [r.rsplit(",", 1)[0] for r in GOOD_ROWS], header)
    with pytest.raises(ConfigError, match=r"esc50\.csv:1: no license column.*--licenses all"):
        load_esc50(tmp_path / "esc")
    ds = load_esc50(tmp_path / "esc", licenses=None)
    assert ds.labels == ["dog", "rain"] and [it.fold for it in ds.items] == [1, 1, 2]


def test_no_training_clips_is_an_aed_error(tmp_path):
    _write_esc50(tmp_path / "esc", GOOD_ROWS)
    cfg = TrainConfig(model="datar_test", data=str(tmp_path / "esc"), train_folds=[3], val_folds=[], noise_dir=None,
                      cache_dir=None)
    with pytest.raises(AedError, match="no training clips"):
        load_train_data(cfg, num_mel_bins=64)


# -- 2 and 3. the feature cache --------------------------------------------------------------------

def test_a_corrupt_feature_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
    data = _tone_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    first = load_train_data(_cfg(data, tmp_path / "run", cache), num_mel_bins=64)
    (npz,) = cache.glob("feats-*.npz")
    for garbage in (b"this is not a zip file", npz.read_bytes()[:200]):  # not an archive; a truncated one
        npz.write_bytes(garbage)
        with caplog.at_level(logging.WARNING):
            caplog.clear()
            again = load_train_data(_cfg(data, tmp_path / "run", cache), num_mel_bins=64)
        warned = [r for r in caplog.records if r.levelno == logging.WARNING and str(npz) in r.getMessage()]
        assert warned and "rebuilding" in warned[0].getMessage()
        assert len(again.train_feats) == len(first.train_feats) == 4 and again.train_labels == first.train_labels
        for a, b in zip(first.train_feats, again.train_feats):
            torch.testing.assert_close(a, b)
        with np.load(npz, allow_pickle=False) as z:  # written again, whole
            assert int(z["lengths"].sum()) == z["flat"].shape[0]


def test_the_cache_follows_size_and_mtime_and_counts_skipped_files_on_a_hit(tmp_path, caplog):
    data = _tone_folder(tmp_path / "data")
    broken = data / "high" / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00not really a wave file")
    cache = tmp_path / "cache"

    def load() -> tuple[list[str], str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="models.training"):
            d = load_train_data(_cfg(data, tmp_path / "run", cache), num_mel_bins=64)
        return d.skipped, caplog.text

    built, log_built = load()
    assert built == [str(broken)] and "read 4 cached" not in log_built
    hit, log_hit = load()
    assert "read 4 cached feature arrays" in log_hit       # the second run reads the cache ...
    assert hit == built                                    # ... and reports the same skipped file
    for text in (log_built, log_hit):
        assert "1 file(s) skipped" in text and "broken.wav" in text
    # fixed in place: same path, a new size and time -> decoded again, no longer skipped
    sf.write(broken, _tone(3300.0), SR)
    st = broken.stat()
    os.utime(broken, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    fixed, log_fixed = load()
    assert fixed == [] and "cached" not in log_fixed
    assert len(load_train_data(_cfg(data, tmp_path / "run", cache), num_mel_bins=64).train_feats) == 5


# -- 4. clips too short to score; a missing --init ---------------------------------------------------

def test_train_skips_a_clip_too_short_to_score_and_names_it(tmp_path, caplog, capsys):
    data = _tone_folder(tmp_path / "data")
    sf.write(data / "low" / "blip.wav", _tone(300.0, 0.01), SR)   # 10 ms: less than one 25 ms frame
    with caplog.at_level(logging.WARNING):
        code = main(_train_argv(data, tmp_path / "run"))
    assert code == 0, capsys.readouterr().err
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "blip.wav" in warned and "too short to score" in warned
    cfg = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert [Path(p).name for p in cfg["training"]["skipped_files"]] == ["blip.wav"]
    assert cfg["training"]["train_clips"] == 4


def test_evaluate_skips_a_clip_too_short_to_score_and_names_it(tmp_path, caplog, capsys, tiny_model):
    clips = esc50_clips(2)
    root = tmp_path / "esc"
    (root / "audio").mkdir(parents=True)
    for c in clips:
        shutil.copy(c, root / "audio" / c.name)
    sf.write(root / "audio" / "blip.flac", _tone(1000.0, 0.01), SR)
    _write_esc50(root, [f"{clips[0].name},1,0,a,False,1,A,CC0", f"{clips[1].name},1,1,b,False,2,A,CC0",
                        "blip.flac,1,1,b,False,3,A,CC0"])
    with caplog.at_level(logging.WARNING):
        code = main(["evaluate", str(tiny_model), "--engine", "torch", "--threads", "1", "--data", str(root),
                     "--folds", "1", "-o", str(tmp_path / "eval")])
    assert code == 0, capsys.readouterr().err
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "blip.flac" in warned and "too short" in warned
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["clip"]["clips"] == 2
    assert [Path(p).name for p in summary["clip"]["skipped_files"]] == ["blip.flac"]


def test_a_missing_init_is_one_line_exit_2_before_any_data_is_decoded(tmp_path, caplog, capsys):
    data = _tone_folder(tmp_path / "data")
    (data / "high" / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wave file")  # decoding would warn
    missing = tmp_path / "no_such_checkpoint"
    with caplog.at_level(logging.WARNING):
        code = main(_train_argv(data, tmp_path / "run", "--init", str(missing)))
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and str(missing) in line and "config.json" in line
    assert "broken.wav" not in caplog.text                 # refused before a single clip was decoded
    # a directory that is not a checkpoint names what it lacks
    missing.mkdir()
    assert main(_train_argv(data, tmp_path / "run", "--init", str(missing))) == 2
    assert "no config.json in the checkpoint directory" in _one_line(capsys.readouterr().err)


# -- 5. the monitor without a display --------------------------------------------------------------

def test_check_display_knows_the_headless_platforms():
    from apps.cmd_monitor import check_display
    from apps.errors import UserError

    for env in ({"DISPLAY": ":0"}, {"WAYLAND_DISPLAY": "wayland-0"}, {"QT_QPA_PLATFORM": "offscreen"},
                {"QT_QPA_PLATFORM": "vnc:size=800x600"}, {"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":1"}):
        check_display(env, "linux")
    check_display({}, "darwin")
    check_display({}, "win32")
    for env in ({}, {"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "w"},
                {"QT_QPA_PLATFORM": "wayland", "DISPLAY": ":0"}):
        with pytest.raises(UserError, match="QT_QPA_PLATFORM=offscreen.*xvfb-run"):
            check_display(env, "linux")


@pytest.mark.gui
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is for X11/Wayland systems")
def test_monitor_without_a_display_is_one_line_exit_2(tmp_path):
    pytest.importorskip("PySide6", reason="needs the gui extra (PySide6)")
    aed = ROOT / ".venv" / "bin" / "aed"
    if not aed.is_file():
        pytest.skip(f"no installed aed script at {aed} (pip install -e .)")
    wav = tmp_path / "tone.wav"
    sf.write(wav, _tone(1000.0, 1.0), SR)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run([str(aed), "monitor", "--source", str(wav)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])     # not 134 (SIGABRT from Qt's xcb)
    line = _one_line(proc.stderr)
    assert line.startswith("aed monitor: error: no display")
    assert "QT_QPA_PLATFORM=offscreen" in line and "xvfb-run aed monitor" in line


# -- 6. --model-arg checked against the constructor (issue 16) ---------------------------------------

def test_an_unknown_model_arg_is_one_line_naming_the_accepted_ones(tmp_path, caplog, capsys):
    data = _tone_folder(tmp_path / "data")
    (data / "high" / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wave file")  # decoding would warn
    with caplog.at_level(logging.WARNING):
        code = main(_train_argv(data, tmp_path / "run", "--model-arg", "nonsense=1", "--model-arg", "dims=[8,8,8,8]"))
    line = _one_line(capsys.readouterr().err)
    assert code != 0 and "Traceback" not in line
    assert "'nonsense'" in line and "accepted:" in line and "dims" in line and "num_mel_bins" in line
    assert "'dims'" not in line.split("accepted:")[0]         # a real constructor argument is not refused
    assert "broken.wav" not in caplog.text                    # refused before a single clip was decoded
    with pytest.raises(ConfigError, match="takes no argument 'nonsense'"):
        from models.training.loop import check_model_kwargs

        check_model_kwargs("mn_test", {"nonsense": 1})
