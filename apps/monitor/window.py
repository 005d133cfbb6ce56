"""The monitor's main window: live plots, the event list, controls and a status bar.

The GUI thread only draws: a ``QTimer`` (about 30 fps) drains the worker's queue and updates the
plots; capture and detection run on worker threads (:mod:`apps.monitor.worker`). Changing the
threshold, window, hop, engine or model rebuilds only the detector; the events collected so far
stay in the list and on the timeline. Errors (a vanished device, an unsupported rate, a model that
won't load) appear in a banner at the top of the window, never in a modal dialog.

Example (needs the gui extra and a display or ``QT_QPA_PLATFORM=offscreen``):
    >>> from PySide6.QtWidgets import QApplication                          # doctest: +SKIP
    >>> app = QApplication([])                                              # doctest: +SKIP
    >>> win = MonitorWindow(engine, MonitorOptions(source="clip.wav"))      # doctest: +SKIP
    >>> win.show(); win.start(); app.exec()                                 # doctest: +SKIP
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from PySide6 import QtCore, QtWidgets

from apps.monitor.layout import ENGINE_KINDS, WindowLayout  # noqa: F401 - re-exported
from apps.monitor.worker import EventLog, MonitorWorker

__all__ = ["MonitorWindow", "MonitorOptions", "ENGINE_KINDS"]

log = logging.getLogger(__name__)

@dataclass
class MonitorOptions:
    """What the monitor starts with; every field can be changed later from the window.

    Attributes:
        device: input device index or name (None: the system default).
        source: an audio file replayed at real-time pace instead of a microphone.
        samplerate: device rate (None: the device's default).
        window_s / hop_s / threshold / per_class / min_duration_s / merge_gap_s / onset_anchor: detector overrides
            (None: the model's).
        engine_kind / model_path: shown in the model controls (what ``engine`` was loaded from).
        duration_s: stop after this much audio.
        top_k: score traces drawn.
        history_s: seconds of spectrogram, traces and timeline shown.
        fps: GUI refresh rate.
    """

    device: int | str | None = None
    source: str | None = None
    samplerate: int | None = None
    window_s: float | None = None
    hop_s: float | None = None
    threshold: float | None = None
    per_class: dict[str, float] = field(default_factory=dict)
    min_duration_s: float | None = None
    merge_gap_s: float | None = None
    onset_anchor: str | None = None
    engine_kind: str = "auto"
    model_path: str | None = None
    duration_s: float | None = None
    top_k: int = 5
    history_s: float = 10.0
    fps: float = 30.0


def _default_open_engine(kind: str, path: str | None):
    from engines import create_engine

    return create_engine(kind, path or None, threads=1)


class MonitorWindow(WindowLayout, QtWidgets.QMainWindow):
    """Live spectrogram, score traces, event timeline and event list around a :class:`MonitorWorker`.

    Args:
        engine: the engine to start with (the window owns it and closes it), or None: the controls can
            load one.
        options: start-up settings.
        open_engine: ``(kind, path) -> engine`` used by the model controls.
        worker: the worker glue (tests pass one with a raw-audio hook).
    """

    finished = QtCore.Signal(int)       # unattended run done: exit code

    def __init__(self, engine: Any | None, options: MonitorOptions | None = None,
                 open_engine: Callable[[str, str | None], Any] = _default_open_engine,
                 worker: MonitorWorker | None = None):
        super().__init__()
        self.options = options or MonitorOptions()
        self._open_engine = open_engine
        self.worker = worker or MonitorWorker()
        self.engine = None
        self._retired: list[Any] = []                  # engines still used by a detector being replaced
        self.events = EventLog(self.worker.wall_t0)
        self.errors: list[str] = []
        from realtime.detector import DetectorConfig

        self.model_config = DetectorConfig()
        self.per_class: dict[str, float] = {}
        self.gui_cpu_s = 0.0                           # thread CPU spent in timer ticks
        self.ticks = 0
        self.event_seen_at: dict[tuple[str, float], float] = {}    # perf_counter when the GUI took the onset
        self.event_posted_at: dict[tuple[str, float], float] = {}  # perf_counter when the worker posted it
        self.last_summary: dict[str, Any] | None = None
        self._t_audio = 0.0
        self._level = (-120.0, -120.0)
        self._events_changed = False
        self._unattended: tuple[float, str | None] | None = None
        self.setWindowTitle("aed monitor")
        self.resize(1360, 820)
        self._build_ui()
        self._timer = QtCore.QTimer(self)
        self._timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self.tick)
        self._timer.start(int(round(1000.0 / self.options.fps)))
        self._debounce = QtCore.QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(300)
        self._debounce.timeout.connect(self.apply_settings)
        if engine is not None:
            self._set_engine(engine, self.options.model_path or "", keep_ui=True)

    # ------------------------------------------------------------------------------------------
    # errors and state
    # ------------------------------------------------------------------------------------------
    def show_error(self, text: str) -> None:
        """Show an error in the banner (and log it); never blocks."""
        log.error("%s", text)
        self.errors.append(text)
        self.banner.setText(text)
        self.banner.show()

    def clear_error(self) -> None:
        self.banner.hide()

    @property
    def running(self) -> bool:
        return self.worker.running

    def _set_running(self, running: bool, state: str | None = None) -> None:
        self.start_button.setText("Stop" if running else "Start")
        self.state_label.setText(state or ("running" if running else "stopped"))

    # ------------------------------------------------------------------------------------------
    # detector settings
    # ------------------------------------------------------------------------------------------
    def _set_engine(self, engine, path: str, keep_ui: bool = False) -> None:
        from realtime.detector import DetectorConfig

        self.engine = engine
        self.model_config = DetectorConfig.from_model(getattr(engine, "config", None) or {}).override(
            min_duration_s=self.options.min_duration_s, merge_gap_s=self.options.merge_gap_s,
            onset_anchor=self.options.onset_anchor)
        labels = list(engine.labels)
        o = self.options
        cfg = self.model_config
        win = o.window_s if keep_ui and o.window_s is not None else cfg.window.window_s
        hop = o.hop_s if keep_ui and o.hop_s is not None else cfg.window.hop_s
        th = o.threshold if keep_ui and o.threshold is not None else cfg.threshold
        per = dict(cfg.thresholds)
        per.update({k: v for k, v in o.per_class.items() if k in labels})
        for spin, v in ((self.window_spin, win), (self.hop_spin, hop)):
            spin.blockSignals(True)
            spin.setValue(v)
            spin.blockSignals(False)
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(int(round(th * 100)))
        self.threshold_slider.blockSignals(False)
        self.threshold_label.setText(f"{th:.2f}")
        self.per_class = per
        self.class_combo.clear()
        self.class_combo.addItems(labels)
        self._show_overrides()
        name = getattr(engine, "name", type(engine).__name__)
        self.engine_label.setText(f"engine: {name} · {len(labels)} classes" + (f" · {Path(path).name}" if path else ""))
        self.plots.set_thresholds(th, per)
        if not self.running:
            self.plots.set_labels(labels)

    def detector_config(self, input_rate: int | None = None):
        """The detector settings the controls describe now.

        Raises:
            ValueError: a window/hop the model or the front end cannot take.
        """
        from realtime.config import WindowConfig

        window = WindowConfig(window_s=round(self.window_spin.value(), 3), hop_s=round(self.hop_spin.value(), 3))
        return replace(self.model_config, window=window, threshold=self.threshold_slider.value() / 100.0,
                       thresholds=dict(self.per_class), input_rate=input_rate)

    def _make_detector(self, input_rate: int | None):
        from realtime.detector import Detector

        if self.engine is None:
            raise RuntimeError("no model is loaded; choose one with Engine/Model and Load")
        return Detector(self.engine, self.detector_config(input_rate))

    def _threshold_moved(self, value: int) -> None:
        self.threshold_label.setText(f"{value / 100:.2f}")
        self.plots.set_thresholds(value / 100, self.per_class)
        self._settings_changed()

    def _settings_changed(self, *_) -> None:
        self._debounce.start()

    def _set_override(self) -> None:
        label = self.class_combo.currentText()
        if label not in (self.engine.labels if self.engine is not None else []):
            self.show_error(f"unknown class {label!r}: pick one of the model's labels")
            return
        self.per_class[label] = round(self.class_spin.value(), 3)
        self._show_overrides()
        self.apply_settings()

    def _clear_override(self) -> None:
        self.per_class.pop(self.class_combo.currentText(), None)
        self._show_overrides()
        self.apply_settings()

    def _show_overrides(self) -> None:
        text = ", ".join(f"{k}={v:.2f}" for k, v in sorted(self.per_class.items()))
        self.overrides_label.setText(f"overrides: {text}" if text else "no per-class overrides")

    def apply_settings(self) -> bool:
        """Rebuild the detector from the controls; the events collected so far stay. False on bad settings."""
        self._debounce.stop()
        self.plots.set_thresholds(self.threshold_slider.value() / 100, self.per_class)
        if self.engine is None:
            return False
        try:
            if self.running:
                det = self._make_detector(self.worker.detector.input_rate)
                self.worker.replace_detector(det)
            else:
                self._make_detector(None)        # validate now; the stream's detector is built on Start
        except (ValueError, RuntimeError) as e:
            self.show_error(f"settings not applied: {e}")
            return False
        self.clear_error()
        return True

    def load_model(self, kind: str, path: str | None) -> bool:
        """Load another engine/model; a running stream switches to it without losing events."""
        try:
            engine = self._open_engine(kind, path or None)
        except Exception as e:  # noqa: BLE001 - any load failure is shown, the old model keeps running
            self.show_error(f"model could not be loaded ({kind}, {path or 'default'}): {e}")
            return False
        old = self.engine
        self._set_engine(engine, path or "")
        if self.running:
            try:
                self.worker.replace_detector(self._make_detector(self.worker.detector.input_rate))
            except (ValueError, RuntimeError) as e:
                self.show_error(f"model loaded but not usable: {e}")
                return False
        if old is not None and old is not engine:
            self._retired.append(old)
            if not self.running:
                self._close_retired()
        self.clear_error()
        return True

    def _close_retired(self) -> None:
        for eng in self._retired:
            close = getattr(eng, "close", None)
            if callable(close):
                close()
        self._retired.clear()

    def _browse_model(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Model", "", "Models (*.onnx *.plan config.json)")
        if path:
            self.model_edit.setText(str(Path(path).parent) if path.endswith("config.json") else path)

    # ------------------------------------------------------------------------------------------
    # start / stop
    # ------------------------------------------------------------------------------------------
    def _make_source(self):
        from realtime.capture import MicrophoneCapture
        from realtime.sources import FileSource

        kind, value = self.device_combo.currentData() or ("device", None)
        if kind == "file":
            src = FileSource(value, block_s=0.02, realtime=True)
            return src, src.rate
        if kind == "none":
            raise RuntimeError("no audio input device is available; replay a file with --source FILE")
        cap = MicrophoneCapture(device=value, samplerate=self.options.samplerate).start()
        return cap, cap.samplerate

    def start(self) -> bool:
        """Start capture and detection from the selected input; errors go to the banner."""
        if self.running:
            return True
        from realtime.capture import DeviceError

        source = None
        try:
            if self.engine is None:
                raise RuntimeError("no model is loaded; choose one with Engine/Model and Load")
            source, rate = self._make_source()
            det = self._make_detector(rate)
            self.plots.set_labels(det.labels)
            self.worker.start(det, source, duration_s=self.options.duration_s)
        except (DeviceError, ValueError, RuntimeError, OSError) as e:
            if source is not None and hasattr(source, "stop"):
                source.stop()
            self.show_error(f"cannot start: {e}")
            self._set_running(False, "error")
            return False
        self.clear_error()
        self._set_running(True)
        return True

    def stop(self) -> None:
        """Stop capture and detection; the events stay."""
        self.worker.stop()
        self.tick()

    def toggle(self) -> None:
        self.stop() if self.running else self.start()

    def _device_changed(self, _index: int) -> None:
        if self.running:
            self.worker.stop()
            self.tick()
            self.start()

    # ------------------------------------------------------------------------------------------
    # the 30 fps timer: drain the queue, draw
    # ------------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Drain the worker's queue and redraw (GUI thread)."""
        c0 = time.thread_time()
        finished = None
        for m in self.worker.drain():
            if m.kind == "frames":
                self.plots.add_frames(m.t, m.data)
                self._t_audio = max(self._t_audio, m.t)
            elif m.kind == "scores":
                self.plots.add_scores(m.t, m.data)
            elif m.kind == "level":
                self._level = max(self._level, m.data)
            elif m.kind == "event":
                if m.data.kind == "onset":
                    self.event_posted_at.setdefault((m.data.label, m.data.onset_s), m.at)
                self._take_event(m.data)
            elif m.kind == "swapped":
                self.plots.set_labels(m.data.labels)
                self._close_retired()
            elif m.kind == "error":
                self.show_error(f"input stopped: {m.data}")
            elif m.kind == "finished":
                finished = m.data
        self.plots.redraw(self._t_audio, self.events.records, self._events_changed)
        self._events_changed = False
        if self.ticks % 5 == 0 or finished is not None:
            self._update_status()
        if finished is not None:
            self.last_summary = finished
            self._set_running(False, "error" if finished.get("error") else "finished")
        self.ticks += 1
        self.gui_cpu_s += time.thread_time() - c0
        if finished is not None and self._unattended is not None:
            QtCore.QTimer.singleShot(150, self._finish_unattended)

    def _take_event(self, e) -> None:
        i, rec = self.events.add(e)
        if e.kind == "onset":
            self.event_seen_at.setdefault((e.label, e.onset_s), time.perf_counter())
        n = len(self.events.records)
        row = n - 1 - i                      # newest first
        if self.table.rowCount() < n:
            self.table.insertRow(0)
            row = 0
        stamp = time.strftime("%H:%M:%S", time.localtime(rec.wall_time)) + f"{rec.wall_time % 1:.3f}"[1:]
        dur = "open" if rec.offset_s is None else f"{rec.offset_s - rec.onset_s:.2f} s"
        for col, text in enumerate((stamp, rec.label, dur, f"{rec.peak:.2f}")):
            self.table.setItem(row, col, QtWidgets.QTableWidgetItem(text))
        self._events_changed = True

    def _update_status(self) -> None:
        rms, peak = self._level
        self._level = (-120.0, -120.0)
        if rms > -120.0:
            self.level_meter.setValue(int(max(-60, min(0, rms))))
            self.level_label.setText(f"level {rms:.0f} dBFS (peak {peak:.0f})")
        st = self.worker.status()
        ms = st["stage_ms"]
        if ms:
            self.stage_label.setText(" · ".join(f"{k} {v:.2f}" for k, v in ms.items()) + " ms")
        self.count_label.setText(f"overruns {st['overruns']} · dropped {st['dropped_samples']} · "
                                 f"overflows {st['input_overflows']} · lost {st['lost_s']:.2f} s")

    # ------------------------------------------------------------------------------------------
    # event list export
    # ------------------------------------------------------------------------------------------
    def events_tsv(self) -> str:
        return self.events.to_tsv()

    def copy_events(self) -> None:
        QtWidgets.QApplication.clipboard().setText(self.events_tsv())

    def save_tsv(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.events_tsv())
        return path

    def _save_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save events", "events.tsv", "TSV (*.tsv)")
        if path:
            try:
                self.save_tsv(path)
            except OSError as e:
                self.show_error(f"cannot save {path}: {e}")

    # ------------------------------------------------------------------------------------------
    # unattended runs
    # ------------------------------------------------------------------------------------------
    def run_unattended(self, duration_s: float | None, screenshot: str | None) -> None:
        """Stop after ``duration_s`` (or at the end of the source), save ``screenshot``, emit :attr:`finished`."""
        self._unattended = (duration_s or 0.0, screenshot)
        if not self.running:
            QtCore.QTimer.singleShot(300, self._finish_unattended)      # could not start: still save and leave
        elif duration_s:
            QtCore.QTimer.singleShot(int((duration_s + 3.0) * 1000), self._finish_unattended)   # safety net

    def _finish_unattended(self) -> None:
        if self._unattended is None:
            return
        _, shot = self._unattended
        self._unattended = None
        self.worker.stop()
        self.tick()
        code = 0
        if shot:
            Path(shot).parent.mkdir(parents=True, exist_ok=True)
            if not self.grab().save(str(shot)):
                self.show_error(f"could not write the screenshot {shot}")
                code = 1
        if self.errors:
            code = 1
        self.finished.emit(code)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._timer.stop()
        self.worker.stop()
        if self.engine is not None:
            self._retired.append(self.engine)        # the window owns its engines
            self.engine = None
        self._close_retired()
        super().closeEvent(event)
