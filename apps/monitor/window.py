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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PySide6 import QtCore, QtGui, QtWidgets

from apps.monitor.layout import ENGINE_KINDS, build_widgets, fill_devices
from apps.monitor.worker import EventLog, MonitorWorker
from realtime.errors import AedError

__all__ = ["MonitorWindow", "MonitorOptions", "ENGINE_KINDS", "model_settings"]

log = logging.getLogger(__name__)

Settings = Callable[[Any, "int | None"], Any]     # (engine, input rate) -> DetectorConfig


def model_settings(**values: Any) -> Settings:
    """``(engine, input_rate) -> DetectorConfig``: the model's own settings with ``values`` over them, by the one
    route ``DetectorConfig.from_model(engine.config).override(**values)``. ``aed monitor`` uses
    ``apps.common.detector_config(args, engine, rate)`` instead, which is the same with the command line's values.

    Example:
        >>> model_settings(window_s=1.0, hop_s=0.1)(None, 48000).window.hop_s        # doctest: +SKIP
        0.1
    """
    from realtime.detector import DetectorConfig

    def settings(engine: Any, input_rate: int | None):
        return DetectorConfig.from_model(getattr(engine, "config", None)).override(**values, input_rate=input_rate)

    return settings


@dataclass
class MonitorOptions:
    """What the monitor starts with; every field can be changed later from the window.

    Attributes:
        device: input device index or name (None: the system default).
        source: an audio file replayed at real-time pace instead of a microphone.
        samplerate: device rate (None: the device's default).
        settings: ``(engine, input_rate) -> DetectorConfig``, the detector settings for any engine the window
            loads (the model's own by default, see :func:`model_settings`); the controls' changes go over them.
        engine_kind / model_path: shown in the model controls (what ``engine`` was loaded from).
        duration_s: stop after this much audio.
        top_k: score traces drawn.
        history_s: seconds of spectrogram, traces and timeline shown.
        fps: GUI refresh rate.
    """

    device: int | str | None = None
    source: str | None = None
    samplerate: int | None = None
    settings: Settings = model_settings()
    engine_kind: str = "auto"
    model_path: str | None = None
    duration_s: float | None = None
    top_k: int = 5
    history_s: float = 10.0
    fps: float = 30.0


def _default_open_engine(kind: str, path: str | None):
    from engines import create_engine

    return create_engine(kind, path or None, threads=1)


def _list_devices() -> tuple[list[dict], str | None]:
    try:
        from realtime.capture import list_input_devices

        return list_input_devices(), None
    except Exception as e:  # noqa: BLE001 - no PortAudio / no devices: say so, keep the file input
        return [], str(e)


class MonitorWindow(QtWidgets.QMainWindow):
    """Live spectrogram, score traces, event timeline and event list around a :class:`MonitorWorker`.

    The widgets come from :func:`apps.monitor.layout.build_widgets` (``self.ui``, the plots also as
    ``self.plots``); this class wires them to its behaviour: settings, start/stop, the redraw timer, export.

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
        self._controls: dict[str, Any] = {}            # what the user changed in the controls (override values)
        self.per_class: dict[str, float] = {}
        self.gui_cpu_s = 0.0                           # thread CPU spent in timer ticks
        self.ticks = 0
        self.event_seen_at: dict[tuple[str, float], float] = {}    # perf_counter when the GUI took the onset
        self.event_posted_at: dict[tuple[str, float], float] = {}  # perf_counter when the worker posted it
        self.last_summary: dict[str, Any] | None = None
        self._t_audio = 0.0
        self._level = (-120.0, -120.0)
        self._events_changed = False
        self._file_run = False                         # the running source replays a file
        self._unattended: tuple[float, str | None] | None = None
        self.setWindowTitle("aed monitor")
        self.resize(1360, 820)
        o = self.options
        self.ui = build_widgets(self, engine_kind=o.engine_kind, model_path=o.model_path or "",
                                history_s=o.history_s, top_k=o.top_k)
        self.plots = self.ui.plots
        fill_devices(self.ui.device_combo, o.source, o.device, *_list_devices())
        self._connect()
        self._timer = QtCore.QTimer(self)
        self._timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self.tick)
        self._timer.start(int(round(1000.0 / o.fps)))
        self._debounce = QtCore.QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(300)
        self._debounce.timeout.connect(self.apply_settings)
        if engine is not None:
            self._set_engine(engine, o.model_path or "")

    def _connect(self) -> None:
        ui = self.ui
        ui.device_combo.activated.connect(self._device_changed)
        ui.start_button.clicked.connect(self.toggle)
        ui.threshold_slider.valueChanged.connect(self._threshold_moved)
        ui.window_spin.valueChanged.connect(lambda v: self._control_changed("window_s", round(v, 3)))
        ui.hop_spin.valueChanged.connect(lambda v: self._control_changed("hop_s", round(v, 3)))
        ui.override_button.clicked.connect(self._set_override)
        ui.clear_button.clicked.connect(self._clear_override)
        ui.browse_button.clicked.connect(self._browse_model)
        ui.load_button.clicked.connect(lambda: self.load_model(ui.engine_combo.currentText(), ui.model_edit.text()))
        ui.copy_button.clicked.connect(self.copy_events)
        ui.save_button.clicked.connect(self._save_dialog)
        QtGui.QShortcut(QtGui.QKeySequence.StandardKey.Copy, ui.table, activated=self.copy_events)

    # ------------------------------------------------------------------------------------------
    # errors and state
    # ------------------------------------------------------------------------------------------
    def show_error(self, text: str) -> None:
        """Show an error in the banner (and log it); never blocks."""
        log.error("%s", text)
        self.errors.append(text)
        self.ui.banner.setText(text)
        self.ui.banner.show()

    def clear_error(self) -> None:
        self.ui.banner.hide()

    @property
    def running(self) -> bool:
        return self.worker.running

    def _set_running(self, running: bool, state: str | None = None) -> None:
        self.ui.start_button.setText("Stop" if running else "Start")
        self.ui.state_label.setText(state or ("running" if running else "stopped"))

    # ------------------------------------------------------------------------------------------
    # detector settings
    # ------------------------------------------------------------------------------------------
    def _set_engine(self, engine, path: str) -> None:
        """Use ``engine`` from now on: the controls show its settings (``options.settings``), earlier changes in the
        controls are dropped (another model has its own window, hop and thresholds)."""
        from realtime.detector import DetectorConfig

        self.engine = engine
        self._controls = {}
        try:
            cfg = self.detector_config()
        except (ValueError, AedError) as e:
            self.show_error(f"settings do not fit this model, showing its own: {e}")
            cfg = DetectorConfig.from_model(getattr(engine, "config", None))
        labels = list(engine.labels)
        ui = self.ui
        for widget, value in ((ui.window_spin, cfg.window.window_s), (ui.hop_spin, cfg.window.hop_s),
                              (ui.threshold_slider, int(round(cfg.threshold * 100)))):
            widget.blockSignals(True)
            widget.setValue(value)
            widget.blockSignals(False)
        ui.threshold_label.setText(f"{cfg.threshold:.2f}")
        self.per_class = dict(cfg.thresholds)
        ui.class_combo.clear()
        ui.class_combo.addItems(labels)
        self._show_overrides()
        name = getattr(engine, "name", type(engine).__name__)
        ui.engine_label.setText(f"engine: {name} · {len(labels)} classes" + (f" · {Path(path).name}" if path else ""))
        self.plots.set_thresholds(cfg.threshold, self.per_class)
        if not self.running:
            self.plots.set_labels(labels)

    def detector_config(self, input_rate: int | None = None):
        """The detector settings now: ``options.settings(engine, input_rate)`` with the controls' changes over them.

        Raises:
            ValueError, AedError: a setting the front end or the detector cannot take (the message says which).
        """
        return self.options.settings(self.engine, input_rate).override(**self._controls)

    def _make_detector(self, input_rate: int | None):
        from realtime.detector import Detector

        if self.engine is None:
            raise RuntimeError("no model is loaded; choose one with Engine/Model and Load")
        return Detector(self.engine, self.detector_config(input_rate))

    def _control_changed(self, name: str, value: Any) -> None:
        self._controls[name] = value
        self._debounce.start()

    def _threshold_moved(self, value: int) -> None:
        self.ui.threshold_label.setText(f"{value / 100:.2f}")
        self.plots.set_thresholds(value / 100, self.per_class)
        self._control_changed("threshold", value / 100)

    def _set_override(self) -> None:
        label = self.ui.class_combo.currentText()
        if label not in (self.engine.labels if self.engine is not None else []):
            self.show_error(f"unknown class {label!r}: pick one of the model's labels")
            return
        self.per_class[label] = round(self.ui.class_spin.value(), 3)
        self._controls["thresholds"] = dict(self.per_class)
        self._show_overrides()
        self.apply_settings()

    def _clear_override(self) -> None:
        self.per_class.pop(self.ui.class_combo.currentText(), None)
        self._controls["thresholds"] = dict(self.per_class)
        self._show_overrides()
        self.apply_settings()

    def _show_overrides(self) -> None:
        text = ", ".join(f"{k}={v:.2f}" for k, v in sorted(self.per_class.items()))
        self.ui.overrides_label.setText(f"overrides: {text}" if text else "no per-class overrides")

    def apply_settings(self) -> bool:
        """Rebuild the detector from the controls; the events collected so far stay. False on bad settings."""
        self._debounce.stop()
        self.plots.set_thresholds(self.ui.threshold_slider.value() / 100, self.per_class)
        if self.engine is None:
            return False
        try:
            if self.running:
                self.worker.replace_detector(self._make_detector(self.worker.source.rate))
            else:
                self._make_detector(None)        # validate now; the stream's detector is built on Start
        except (ValueError, RuntimeError, AedError) as e:
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
                self.worker.replace_detector(self._make_detector(self.worker.source.rate))
            except (ValueError, RuntimeError, AedError) as e:
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
            self.ui.model_edit.setText(str(Path(path).parent) if path.endswith("config.json") else path)

    # ------------------------------------------------------------------------------------------
    # start / stop
    # ------------------------------------------------------------------------------------------
    def _make_source(self):
        from realtime.capture import MicrophoneCapture
        from realtime.sources import FileSource

        kind, value = self.ui.device_combo.currentData() or ("device", None)
        if kind == "file":
            return FileSource(value, block_s=0.02, realtime=True), True
        if kind == "none":
            raise RuntimeError("no audio input device is available; replay a file with --source FILE")
        return MicrophoneCapture(device=value, samplerate=self.options.samplerate).start(), False

    def start(self) -> bool:
        """Start capture and detection from the selected input; errors go to the banner."""
        if self.running:
            return True
        from realtime.capture import DeviceError

        source = None
        try:
            if self.engine is None:
                raise RuntimeError("no model is loaded; choose one with Engine/Model and Load")
            source, is_file = self._make_source()
            det = self._make_detector(source.rate)       # for the stream's rate: the runner never rebuilds it
            self.plots.set_labels(det.labels)
            self.plots.set_frame_shift(det.config.frontend.frame_shift_ms / 1000.0)    # the model's
            self._file_run = is_file
            self.worker.start(det, source, duration_s=self.options.duration_s, file_time=is_file)
        except (DeviceError, ValueError, RuntimeError, OSError, AedError) as e:
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
                self._take_event(m.data, m.stream_t if self._file_run else None)
            elif m.kind == "swapped":
                self.plots.set_labels(m.data.labels)
                self.plots.set_frame_shift(m.data.config.frontend.frame_shift_ms / 1000.0)
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

    def _take_event(self, e, file_s: float | None = None) -> None:
        i, rec = self.events.add(e, file_s)
        if e.kind == "onset":
            self.event_seen_at.setdefault((e.label, e.onset_s), time.perf_counter())
        n = len(self.events.records)
        row = n - 1 - i                      # newest first
        if self.ui.table.rowCount() < n:
            self.ui.table.insertRow(0)
            row = 0
        dur = "open" if rec.offset_s is None else f"{rec.offset_s - rec.onset_s:.2f} s"
        for col, text in enumerate((rec.time_text(), rec.label, dur, f"{rec.peak:.2f}")):
            self.ui.table.setItem(row, col, QtWidgets.QTableWidgetItem(text))
        self._events_changed = True

    def _update_status(self) -> None:
        rms, peak = self._level
        self._level = (-120.0, -120.0)
        if rms > -120.0:
            self.ui.level_meter.setValue(int(max(-60, min(0, rms))))
            self.ui.level_label.setText(f"level {rms:.0f} dBFS (peak {peak:.0f})")
        st = self.worker.status()
        ms = st["stage_ms"]
        if ms:
            self.ui.stage_label.setText(" · ".join(f"{k} {v:.2f}" for k, v in ms.items()) + " ms")
        self.ui.count_label.setText(f"overruns {st['overruns']} · dropped {st['dropped_samples']} · "
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
