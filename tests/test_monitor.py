"""The desktop monitor for real: Qt offscreen, a real recording through the PulseAudio virtual microphone."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")      # before Qt is imported

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

from tests.audio_helpers import LoudnessEngine, esc50_clips, tone_burst  # noqa: E402

pytestmark = pytest.mark.gui

RATE = 48000
BURSTS_S = (1.0, 2.8, 4.6)        # tone bursts in the test recording (0.3 s each), 1.8 s apart
BURST_LEN_S = 0.3
HOP_S = 0.1
# an onset is stamped on the hop grid from 25 ms analysis frames, the true one is sample-exact: one hop plus one
# frame apart at most (a burst that starts at a hop's end shows first in a frame that ends in the next hop)
ONSET_TOL_S = HOP_S + 0.025


@pytest.fixture(scope="module")
def qt_modules():
    pytest.importorskip("pyqtgraph", reason="the gui extra is not installed (pip install 'aed[gui]')")
    pytest.importorskip("PySide6", reason="the gui extra is not installed (pip install 'aed[gui]')")
    from apps.monitor.window import MonitorOptions, MonitorWindow
    from apps.monitor.worker import MonitorWorker

    return MonitorWindow, MonitorOptions, MonitorWorker


def _settings(**values):
    from apps.monitor.window import model_settings

    return model_settings(**values)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A real ESC-50 recording (quiet) with three loud 1 kHz tone bursts, 48 kHz, 6.2 s."""
    clip, rate = sf.read(esc50_clips(3)[1], dtype="float32")          # 5 s at 44.1 kHz
    from realtime.resample import StreamingResampler

    rs = StreamingResampler(rate, RATE)
    clip = np.concatenate([rs.push(clip), rs.flush()])
    clip = 0.01 * clip / max(1e-6, float(np.abs(clip).max()))
    x = np.zeros(int(6.2 * RATE), np.float32)
    x[int(0.3 * RATE):int(0.3 * RATE) + clip.shape[0]] += clip
    for t in BURSTS_S:
        x += tone_burst(RATE, 6.2, t, BURST_LEN_S, noise=0.0, amp=0.5)
    path = tmp_path_factory.mktemp("rec") / "esc50_with_bursts.wav"
    sf.write(path, x, RATE, subtype="FLOAT")
    # sanity: offline, the loudness engine finds exactly the three bursts (the clip itself stays below it)
    from realtime import Detector, DetectorConfig, FrontEndConfig, WindowConfig

    det = Detector(LoudnessEngine(), DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64),
                                                    window=WindowConfig(1.0, HOP_S), input_rate=RATE))
    onsets = [e.onset_s for e in det.process(x) if e.kind == "onset"]
    assert len(onsets) == 3 and np.allclose(onsets, BURSTS_S, atol=HOP_S), onsets
    return path


def _pump(qtbot, seconds: float) -> None:
    qtbot.wait(int(seconds * 1000))


def _live_run(qt_modules, qtbot, pulse, path: Path, stall_after_s: float | None = None) -> dict:
    """Open the window on the virtual microphone, play ``path`` into it, collect what the window showed."""
    MonitorWindow, MonitorOptions, MonitorWorker = qt_modules
    audio: list[tuple[float, np.ndarray]] = []
    arrivals: list[tuple[float, int]] = []        # (perf_counter, samples) of every block the detector took

    def tap(t: float, block: np.ndarray) -> None:
        audio.append((t, block.copy()))
        arrivals.append((time.perf_counter(), block.shape[0]))

    worker = MonitorWorker(on_audio=tap)
    opts = MonitorOptions(samplerate=RATE, settings=_settings(window_s=1.0, hop_s=HOP_S))
    win = MonitorWindow(LoudnessEngine(), opts, worker=worker)
    qtbot.addWidget(win)
    win.show()
    assert win.start(), win.errors
    qtbot.waitUntil(lambda: win.plots._frames_seen > 150 and bool(win.plots.score_traces()), timeout=10_000)
    first_img = win.plots.spectrogram()
    first_traces = {k: (v[0].copy(), v[1].copy()) for k, v in win.plots.score_traces().items()}
    stalls = []

    def hang():                                   # the GUI thread hangs for 2 s
        t0 = time.perf_counter()
        time.sleep(2.0)
        stalls.append((t0, time.perf_counter()))

    if stall_after_s is not None:
        from PySide6 import QtCore

        QtCore.QTimer.singleShot(int(stall_after_s * 1000), hang)
    player = pulse.play(path, wait=False)
    while player.poll() is None:
        _pump(qtbot, 0.1)
    _pump(qtbot, 1.6)                              # the last window passes the burst; its event closes
    ticks_before_stop = win.ticks
    win.stop()
    raw = np.concatenate([b for _, b in audio])
    t_first = audio[0][0]
    return {"win": win, "first_img": first_img, "first_traces": first_traces, "raw": raw, "t_first": t_first,
            "stalls": stalls, "ticks": ticks_before_stop, "summary": win.last_summary,
            "onsets": [rec.onset_s for rec in win.events.records], "arrivals": np.array(arrivals),
            "captured": win.worker.source.callbacks * int(round(win.worker.source.block_s * RATE)),
            "fed": win.worker.runner.samples_fed}


def _true_onsets(raw: np.ndarray, t_first: float) -> list[float]:
    loud = np.flatnonzero(np.abs(raw) > 0.25)
    starts = [loud[0]] + [b for a, b in zip(loud[:-1], loud[1:]) if b - a > RATE // 2]
    return [t_first + i / RATE for i in starts]


@pytest.mark.audio
def test_live_window_through_the_virtual_microphone(qt_modules, qtbot, pulse, recording, tmp_path, cache_runs):
    r = _live_run(qt_modules, qtbot, pulse, recording)
    cache_runs["unstalled"] = r
    win = r["win"]
    assert win.errors == [] and r["summary"]["error"] is None
    # the spectrogram image changes, and the bursts are in it (1 kHz tone: bright mid-low mel bands)
    img = win.plots.spectrogram()
    assert img.shape == r["first_img"].shape == (1000, 64)
    assert not np.allclose(img, r["first_img"])
    assert np.array_equal(win.plots.image.image, img)
    assert img.max() > np.percentile(img, 50) + 8.0
    # the score traces move: the burst class goes from quiet to near 1 and back
    traces = win.plots.score_traces()
    t, s = traces["burst"]
    t_early, s_early = r["first_traces"]["burst"]
    assert t[-1] > t_early[-1] + 5.0 and s.shape[0] > s_early.shape[0]
    assert s_early.max() < 0.2 and s.min() < 0.2 and s.max() > 0.95
    # one event bar per burst, each at the burst's true onset (ONSET_TOL_S), painted on screen
    true = _true_onsets(r["raw"], r["t_first"])
    assert len(true) == 3, true
    spans = win.plots.bar_spans()
    assert [lab for lab, _, _ in spans] == ["burst"] * 3, spans
    for (_, x0, x1), t0 in zip(spans, true):
        assert abs(x0 - t0) <= ONSET_TOL_S, (x0, t0)
        assert x1 > x0 + BURST_LEN_S
    assert all(k in win.plots.painted for k in [(rec.label, rec.onset_s) for rec in win.events.records])
    # the list shows the same three events, closed, with durations and peaks
    assert win.ui.table.rowCount() == 3
    assert all(win.ui.table.item(i, 2).text().endswith(" s") for i in range(3))
    assert float(win.ui.table.item(0, 3).text()) > 0.9
    assert r["summary"]["overruns"] == 0 and r["summary"]["dropped_samples"] == 0
    # a screenshot of the window, kept as a test artefact
    shot = tmp_path / "monitor_offscreen.png"
    assert win.grab().save(str(shot))
    from PySide6.QtGui import QImage

    im = QImage(str(shot))
    assert im.width() >= 1000 and shot.stat().st_size > 20_000
    colours = {im.pixel(x, y) for x in range(0, im.width(), 17) for y in range(0, im.height(), 17)}
    assert len(colours) > 50
    print(f"screenshot: {shot}")


@pytest.fixture(scope="module")
def cache_runs():
    return {}


@pytest.mark.audio
def test_a_hung_gui_loses_no_audio(qt_modules, qtbot, pulse, recording, cache_runs):
    ref = cache_runs.get("unstalled")
    if ref is None:
        ref = _live_run(qt_modules, qtbot, pulse, recording)
    r = _live_run(qt_modules, qtbot, pulse, recording, stall_after_s=1.5)
    (h0, h1), = r["stalls"]
    assert h1 - h0 >= 1.95                                    # the GUI thread really hung for 2 s
    assert len(r["onsets"]) == len(ref["onsets"]) == 3        # same events as without the hang
    s = r["summary"]
    assert s["error"] is None and s["overruns"] == 0 and s["dropped_samples"] == 0 and s["input_overflows"] == 0
    # the detector kept taking audio in real time while the GUI hung ...
    at, n = r["arrivals"][:, 0], r["arrivals"][:, 1]
    during = (at > h0) & (at < h1)
    assert n[during].sum() / RATE > 1.6, n[during].sum() / RATE
    assert np.diff(at).max() < 0.35
    # ... and every captured sample reached it (all but the last read's worth, left in the ring at stop)
    assert 0 <= r["captured"] - r["fed"] < 0.3 * RATE, (r["captured"], r["fed"])
    # and the onsets are still where the bursts were
    for got, true in zip(r["onsets"], _true_onsets(r["raw"], r["t_first"])):
        assert abs(got - true) <= ONSET_TOL_S, (got, true)


def test_changing_threshold_and_window_keeps_the_events(qt_modules, qtbot, tmp_path):
    MonitorWindow, MonitorOptions, _ = qt_modules
    x = tone_burst(16000, 5.5, 1.5, 0.3) + tone_burst(16000, 5.5, 4.0, 0.3, seed=1)   # after the first 1 s window
    path = tmp_path / "two_bursts.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    opts = MonitorOptions(source=str(path), settings=_settings(window_s=1.0, hop_s=HOP_S))
    win = MonitorWindow(LoudnessEngine(), opts)
    qtbot.addWidget(win)
    win.show()
    assert win.start()
    qtbot.waitUntil(lambda: len(win.events.records) == 1, timeout=8000)
    first = win.events.records[0]
    win.ui.threshold_slider.setValue(60)
    win.ui.window_spin.setValue(0.8)
    win.ui.hop_spin.setValue(0.05)
    qtbot.waitUntil(lambda: win.worker.swaps >= 1, timeout=3000)
    qtbot.waitUntil(lambda: not win.running, timeout=10_000)
    win.tick()
    from realtime.detector import Detector

    det = win.worker.detector
    assert type(det) is Detector                        # the detector itself, no proxy around it
    assert det.config.threshold == pytest.approx(0.6) and det.config.window.window_s == pytest.approx(0.8)
    assert det.config.window.hop_s == pytest.approx(0.05)
    recs = win.events.records
    assert len(recs) == 2 and recs[0] is first and recs[0].offset_s is not None     # kept, closed by the swap
    assert recs[1].onset_s - recs[0].onset_s == pytest.approx(2.5, abs=0.15)           # one clock across the swap
    assert win.ui.table.rowCount() == 2
    assert win.worker.swaps == 1                        # the debounce folded three changes into one rebuild
    # the list shows each event's time in the file, on one stream clock across the swap
    assert [r.file_s for r in recs] == pytest.approx([1.5, 4.0], abs=HOP_S + 1e-6)
    assert [win.ui.table.item(i, 0).text() for i in (1, 0)] == [r.time_text() for r in recs]
    tsv = win.save_tsv(tmp_path / "events.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["time", "label", "onset_s", "offset_s", "duration_s", "peak_score"]
    assert [line.split("\t")[1] for line in tsv[1:]] == ["burst", "burst"]
    # a model that will not load: shown in the window, the events stay
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    assert not win.load_model("onnxruntime", str(bad))
    assert win.ui.banner.isVisibleTo(win) and "model could not be loaded" in win.ui.banner.text()
    assert len(win.events.records) == 2 and win.engine.labels == ["burst"]


@pytest.mark.audio
def test_unsupported_rate_is_shown_in_the_window(qt_modules, qtbot, pulse):
    MonitorWindow, MonitorOptions, _ = qt_modules
    win = MonitorWindow(LoudnessEngine(), MonitorOptions(samplerate=1000))
    qtbot.addWidget(win)
    assert not win.start()
    assert win.ui.banner.isVisibleTo(win) and "unsupported sample rate" in win.ui.banner.text()
    assert win.ui.state_label.text() == "error"


@pytest.mark.audio
def test_vanished_device_is_shown_in_the_window(qt_modules, qtbot, pulse, tmp_path):
    from tests.conftest import PulseServer, _rescan_portaudio

    MonitorWindow, MonitorOptions, _ = qt_modules
    saved = {k: os.environ.get(k) for k in pulse.env}
    server = PulseServer(tmp_path / "p2")
    try:
        server.start()
    except (FileNotFoundError, RuntimeError) as e:
        pytest.skip(f"cannot start a second private pulseaudio: {e}")
    _rescan_portaudio()
    win = MonitorWindow(LoudnessEngine(), MonitorOptions(samplerate=16000))
    qtbot.addWidget(win)
    try:
        assert win.start(), win.errors
        qtbot.waitUntil(lambda: win.plots._frames_seen > 20, timeout=10_000)
        win.worker.source.stall_timeout_s = 1.0
        server.kill()                                              # the device vanishes
        qtbot.waitUntil(lambda: win.ui.state_label.text() == "error", timeout=15_000)
        assert "input stopped" in win.ui.banner.text() and "device" in win.ui.banner.text()
        assert win.ui.start_button.text() == "Start"
    finally:
        win.worker.stop()
        server.stop()
        for k, v in saved.items():
            if v is not None:
                os.environ[k] = v
        _rescan_portaudio()


def test_cli_unattended_run_saves_a_screenshot(qt_modules, tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from apps.cli import main
    from models import create_model
    from models.io import export_onnx

    model = export_onnx(create_model("datar_test"), tmp_path / "tiny.onnx")
    clip = esc50_clips(3)[0]
    shot = tmp_path / "cli.png"
    t0 = time.perf_counter()
    rc = main(["monitor", "--source", str(clip), "--duration", "2", "--screenshot", str(shot), "--model", str(model),
               "--engine", "onnxruntime", "--threshold", "0.4"])
    assert rc == 0, capsys.readouterr().err
    assert time.perf_counter() - t0 < 20
    from PySide6.QtGui import QImage

    im = QImage(str(shot))
    assert not im.isNull() and im.width() >= 1000


def test_missing_pyqtgraph_prints_what_to_install(tmp_path, capsys):
    from apps.cli import main

    path = tmp_path / "s.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    with mock.patch.dict(sys.modules, {"pyqtgraph": None}):
        rc = main(["monitor", "--source", str(path), "--duration", "1"])
    assert rc == 1
    assert "pip install 'aed[gui]'" in capsys.readouterr().err


def test_status_line_shows_lost_audio(qt_modules, qtbot):
    """The status bar reports lost audio (ring drops + clock discontinuities) next to the counts."""
    from realtime.capture import MicrophoneCapture, StreamClock
    from realtime.ring import RingBuffer
    from tests.test_live_reliability import _drive

    MonitorWindow, MonitorOptions, _ = qt_modules
    win = MonitorWindow(LoudnessEngine(), MonitorOptions(settings=_settings(window_s=1.0, hop_s=HOP_S)))
    qtbot.addWidget(win)
    assert "lost 0.00 s" in win.ui.count_label.text()
    rate = 16000
    cap = MicrophoneCapture(samplerate=rate, channels=1)
    cap.samplerate, cap.channels = rate, 1
    cap.ring, cap.clock = RingBuffer(2 * rate, 1), StreamClock(rate)
    _drive(cap, tone_burst(rate, 6.0, 1.0, 0.2), rate, lost=(2.0, 1.2))     # 1.2 s never delivered ...
    win.worker.source = cap                                                   # ... and 1 s more the ring dropped
    st = win.worker.status()
    assert st["lost_s"] == pytest.approx(cap.lost_s) and cap.ring.dropped_samples > 0
    assert st["lost_s"] == pytest.approx(1.2 + cap.ring.dropped_samples / rate, abs=0.05)
    win._update_status()
    assert f"lost {st['lost_s']:.2f} s" in win.ui.count_label.text(), win.ui.count_label.text()


def test_event_table_shows_the_time_in_a_replayed_file(qt_modules, qtbot, tmp_path):
    """For a replayed file the first column is the event's stream (file) time, not the wall clock of the replay."""
    MonitorWindow, MonitorOptions, _ = qt_modules
    path = tmp_path / "one_burst.wav"
    sf.write(path, tone_burst(16000, 3.0, 1.7, 0.3), 16000, subtype="FLOAT")
    win = MonitorWindow(LoudnessEngine(), MonitorOptions(source=str(path), settings=_settings(window_s=1.0,
                                                                                               hop_s=HOP_S)))
    qtbot.addWidget(win)
    win.show()
    time.sleep(1.2)                                   # the session clock runs ahead of the file's
    assert win.start()
    qtbot.waitUntil(lambda: not win.running, timeout=10_000)
    win.tick()
    (rec,) = win.events.records
    assert rec.file_s == pytest.approx(1.7, abs=HOP_S + 1e-6)
    assert rec.onset_s - rec.file_s > 1.0                 # session time is another clock
    text = win.ui.table.item(0, 0).text()
    assert text == rec.time_text() == f"0:{rec.file_s:06.3f}"
    m, s = text.split(":")
    assert int(m) * 60 + float(s) == pytest.approx(rec.file_s, abs=1e-3)
    assert win.ui.table.horizontalHeaderItem(0).toolTip()      # says which clock it is


def test_live_input_keeps_wall_clock_times():
    from apps.monitor.worker import EventRecord

    rec = EventRecord("dog", 5.0, 6.0, 0.9, wall_time=time.mktime((2024, 1, 2, 3, 4, 5, 0, 0, -1)) + 0.25)
    assert rec.time_text() == "03:04:05.250"


def _drawn_axis_texts(axis) -> list[str]:
    """The tick texts pyqtgraph really draws on ``axis`` (it drops those that do not fit)."""
    from PySide6 import QtGui

    img = QtGui.QImage(400, 400, QtGui.QImage.Format.Format_ARGB32)
    p = QtGui.QPainter(img)
    try:
        if axis.style.get("tickFont") is not None:
            p.setFont(axis.style["tickFont"])
        specs = axis.generateDrawSpecs(p)
    finally:
        p.end()
    return [text for _, _, text in specs[2]]


def test_every_event_lane_is_labelled(qt_modules, qtbot):
    """Long class names (the last lane of the README screenshot, ``door_wood_knock``) are elided, never dropped."""
    from apps.monitor.plots import LivePlots
    from apps.monitor.worker import EventRecord

    plots = LivePlots(history_s=10.0, top_k=3, frame_shift_s=0.01)
    qtbot.addWidget(plots.widget)
    plots.widget.resize(1000, 600)
    plots.widget.show()
    labels = ["dog", "door_wood_knock", "vacuum_cleaner", "crackling_fire", "church_bells"]
    recs = [EventRecord(lab, 1.0 + i, 1.5 + i, 0.9, 0.0) for i, lab in enumerate(labels)]
    plots.redraw(8.0, recs, True)
    qtbot.wait(50)
    ticks = plots.lane_ticks()
    assert [i for i, _ in ticks] == list(range(len(labels)))
    drawn = _drawn_axis_texts(plots.timeline.getAxis("left"))
    assert sorted(drawn) == sorted(name for _, name in ticks), (drawn, ticks)
    assert "dog" in drawn and any(t.startswith("door_wood") for t in drawn)


def test_frame_shift_comes_from_the_model(qt_modules, qtbot, tmp_path):
    """A model with 20 ms frames: the spectrogram holds history_s / 20 ms columns, placed at 20 ms steps."""
    MonitorWindow, MonitorOptions, _ = qt_modules

    class Shift20(LoudnessEngine):
        def __init__(self):
            super().__init__()
            self.config = {"frontend": {"num_mel_bins": 64, "frame_shift_ms": 20.0}, "labels": self.labels}

    path = tmp_path / "short.wav"
    sf.write(path, tone_burst(16000, 2.5, 1.2, 0.3), 16000, subtype="FLOAT")
    win = MonitorWindow(Shift20(), MonitorOptions(source=str(path), settings=_settings(window_s=1.0, hop_s=HOP_S)))
    qtbot.addWidget(win)
    win.show()
    assert win.start(), win.errors
    qtbot.waitUntil(lambda: not win.running, timeout=10_000)
    win.tick()
    assert win.plots.frame_shift_s == pytest.approx(0.02)
    assert win.plots.spectrogram().shape == (500, 64)
    assert win.plots._frames_seen == pytest.approx(2.5 / 0.02, abs=3)


def test_detector_settings_come_by_the_one_route(qt_modules, qtbot):
    """``MonitorOptions.settings`` (``aed monitor``: ``apps.common.detector_config``) gives every model its settings;
    the controls go over them with ``override``; nothing else merges settings."""
    MonitorWindow, MonitorOptions, _ = qt_modules
    from apps.common import detector_config
    from realtime.detector import DetectorConfig

    args = mock.Mock(window=1.5, hop=0.25, threshold=0.7, min_duration=0.2, merge_gap=None, onset_anchor="centre",
                     onset_refine=None)
    win = MonitorWindow(LoudnessEngine(), MonitorOptions(settings=lambda e, r: detector_config(args, e, r)))
    qtbot.addWidget(win)
    assert win.ui.threshold_slider.value() == 70 and win.ui.window_spin.value() == pytest.approx(1.5)
    want = DetectorConfig.from_model(LoudnessEngine().config).override(
        window_s=1.5, hop_s=0.25, threshold=0.7, min_duration_s=0.2, onset_anchor="centre", input_rate=48000)
    assert win.detector_config(48000) == want
    win.ui.threshold_slider.setValue(40)
    assert win.detector_config(48000) == want.override(threshold=0.4)
