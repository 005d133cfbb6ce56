"""The monitor window's widgets and their layout, and nothing else.

:func:`build_widgets` creates the banner, the two rows of controls, the plots, the event list and the status
bar inside a ``QMainWindow`` and returns them as one :class:`WindowWidgets`. It knows nothing of the window's
state or slots and connects no signal: :class:`apps.monitor.window.MonitorWindow` wires the widgets to its
behaviour. Dependencies run one way: window -> layout -> plots.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PySide6 import QtCore, QtWidgets

from apps.monitor.plots import LivePlots
from engines import ENGINE_KINDS as _ENGINES  # the one list of engine kinds

__all__ = ["WindowWidgets", "build_widgets", "fill_devices", "ENGINE_KINDS", "TABLE_COLUMNS"]

ENGINE_KINDS = ("auto",) + tuple(k for k in _ENGINES if k != "auto")     # the combo's order: auto first
TABLE_COLUMNS = ("time", "label", "duration", "peak")
TIME_TIP = "wall-clock time of the onset for live input; the onset's time in the file (m:ss.sss) for a replayed file"


@dataclass
class WindowWidgets:
    """Every widget of the monitor window that its behaviour touches."""

    banner: QtWidgets.QLabel
    device_combo: QtWidgets.QComboBox
    start_button: QtWidgets.QPushButton
    threshold_slider: QtWidgets.QSlider
    threshold_label: QtWidgets.QLabel
    window_spin: QtWidgets.QDoubleSpinBox
    hop_spin: QtWidgets.QDoubleSpinBox
    class_combo: QtWidgets.QComboBox
    class_spin: QtWidgets.QDoubleSpinBox
    override_button: QtWidgets.QPushButton
    clear_button: QtWidgets.QPushButton
    overrides_label: QtWidgets.QLabel
    engine_combo: QtWidgets.QComboBox
    model_edit: QtWidgets.QLineEdit
    browse_button: QtWidgets.QPushButton
    load_button: QtWidgets.QPushButton
    plots: LivePlots
    table: QtWidgets.QTableWidget
    copy_button: QtWidgets.QPushButton
    save_button: QtWidgets.QPushButton
    level_meter: QtWidgets.QProgressBar
    level_label: QtWidgets.QLabel
    stage_label: QtWidgets.QLabel
    count_label: QtWidgets.QLabel
    engine_label: QtWidgets.QLabel
    state_label: QtWidgets.QLabel


def _banner() -> QtWidgets.QLabel:
    banner = QtWidgets.QLabel()
    banner.setWordWrap(True)
    banner.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
    banner.setStyleSheet("background:#7f1d1d; color:white; padding:6px; border-radius:3px;")
    banner.hide()
    return banner


def _table() -> QtWidgets.QTableWidget:
    table = QtWidgets.QTableWidget(0, len(TABLE_COLUMNS))
    table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
    table.horizontalHeaderItem(0).setToolTip(TIME_TIP)
    table.verticalHeader().hide()
    table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
    table.horizontalHeader().setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)
    table.setColumnWidth(0, 96)
    table.setColumnWidth(2, 66)
    table.setColumnWidth(3, 50)
    return table


def build_widgets(window: QtWidgets.QMainWindow, engine_kind: str = "auto", model_path: str = "",
                  history_s: float = 10.0, top_k: int = 5) -> WindowWidgets:
    """Create the window's widgets and lay them out in ``window`` (central widget and status bar).

    Args:
        window: the main window to fill.
        engine_kind / model_path: what the model controls show first.
        history_s / top_k: for the plots.
    """
    central = QtWidgets.QWidget()
    outer = QtWidgets.QVBoxLayout(central)
    outer.setContentsMargins(6, 6, 6, 2)
    banner = _banner()
    outer.addWidget(banner)

    row1 = QtWidgets.QHBoxLayout()
    row1.addWidget(QtWidgets.QLabel("Input"))
    device_combo = QtWidgets.QComboBox()
    device_combo.setMinimumWidth(260)
    row1.addWidget(device_combo)
    start_button = QtWidgets.QPushButton("Start")
    row1.addWidget(start_button)
    row1.addSpacing(16)
    row1.addWidget(QtWidgets.QLabel("Threshold"))
    threshold_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
    threshold_slider.setRange(1, 99)
    threshold_slider.setMinimumWidth(140)
    row1.addWidget(threshold_slider)
    threshold_label = QtWidgets.QLabel("0.50")
    row1.addWidget(threshold_label)
    row1.addSpacing(16)
    row1.addWidget(QtWidgets.QLabel("Window"))
    window_spin = QtWidgets.QDoubleSpinBox(decimals=2, minimum=0.5, maximum=10.0, singleStep=0.1, suffix=" s")
    row1.addWidget(window_spin)
    row1.addWidget(QtWidgets.QLabel("Hop"))
    hop_spin = QtWidgets.QDoubleSpinBox(decimals=2, minimum=0.01, maximum=10.0, singleStep=0.05, suffix=" s")
    row1.addWidget(hop_spin)
    row1.addStretch(1)
    outer.addLayout(row1)

    row2 = QtWidgets.QHBoxLayout()
    row2.addWidget(QtWidgets.QLabel("Class"))
    class_combo = QtWidgets.QComboBox()
    class_combo.setEditable(True)
    class_combo.setInsertPolicy(QtWidgets.QComboBox.InsertPolicy.NoInsert)
    class_combo.setMinimumWidth(160)
    row2.addWidget(class_combo)
    class_spin = QtWidgets.QDoubleSpinBox(decimals=2, minimum=0.01, maximum=0.99, singleStep=0.05, value=0.5)
    row2.addWidget(class_spin)
    override_button = QtWidgets.QPushButton("Override")
    row2.addWidget(override_button)
    clear_button = QtWidgets.QPushButton("Clear")
    row2.addWidget(clear_button)
    overrides_label = QtWidgets.QLabel("no per-class overrides")
    overrides_label.setStyleSheet("color:#666;")
    row2.addWidget(overrides_label, 1)
    row2.addWidget(QtWidgets.QLabel("Engine"))
    engine_combo = QtWidgets.QComboBox()
    engine_combo.addItems(ENGINE_KINDS)
    engine_combo.setCurrentText(engine_kind)
    row2.addWidget(engine_combo)
    model_edit = QtWidgets.QLineEdit(model_path or "")
    model_edit.setPlaceholderText("model: checkpoint dir, .onnx or .plan (empty: the shipped default)")
    model_edit.setMinimumWidth(260)
    row2.addWidget(model_edit)
    browse_button = QtWidgets.QPushButton("Browse…")
    row2.addWidget(browse_button)
    load_button = QtWidgets.QPushButton("Load")
    row2.addWidget(load_button)
    outer.addLayout(row2)

    split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
    plots = LivePlots(history_s=history_s, top_k=top_k)
    split.addWidget(plots.widget)
    side = QtWidgets.QWidget()
    side_layout = QtWidgets.QVBoxLayout(side)
    side_layout.setContentsMargins(0, 0, 0, 0)
    side_layout.addWidget(QtWidgets.QLabel("Recent events"))
    table = _table()
    side_layout.addWidget(table, 1)
    buttons = QtWidgets.QHBoxLayout()
    copy_button = QtWidgets.QPushButton("Copy TSV")
    save_button = QtWidgets.QPushButton("Save TSV…")
    buttons.addWidget(copy_button)
    buttons.addWidget(save_button)
    side_layout.addLayout(buttons)
    split.addWidget(side)
    split.setStretchFactor(0, 4)
    split.setStretchFactor(1, 1)
    split.setSizes([1000, 340])
    outer.addWidget(split, 1)
    window.setCentralWidget(central)

    bar = window.statusBar()
    level_meter = QtWidgets.QProgressBar()
    level_meter.setRange(-60, 0)
    level_meter.setValue(-60)
    level_meter.setFixedWidth(110)
    level_meter.setTextVisible(False)
    level_label = QtWidgets.QLabel("level – dBFS")
    level_label.setMinimumWidth(150)
    bar.addWidget(level_meter)
    bar.addWidget(level_label)
    stage_label = QtWidgets.QLabel("features – · inference – · post – ms")
    count_label = QtWidgets.QLabel("overruns 0 · dropped 0 · lost 0.00 s")
    engine_label = QtWidgets.QLabel("no engine")
    state_label = QtWidgets.QLabel("stopped")
    for w in (stage_label, count_label, engine_label, state_label):
        bar.addWidget(w)
    return WindowWidgets(
        banner=banner, device_combo=device_combo, start_button=start_button, threshold_slider=threshold_slider,
        threshold_label=threshold_label, window_spin=window_spin, hop_spin=hop_spin, class_combo=class_combo,
        class_spin=class_spin, override_button=override_button, clear_button=clear_button,
        overrides_label=overrides_label, engine_combo=engine_combo, model_edit=model_edit,
        browse_button=browse_button, load_button=load_button, plots=plots, table=table, copy_button=copy_button,
        save_button=save_button, level_meter=level_meter, level_label=level_label, stage_label=stage_label,
        count_label=count_label, engine_label=engine_label, state_label=state_label)


def fill_devices(combo: QtWidgets.QComboBox, source: str | None, device: int | str | None,
                 devices: Sequence[dict] | None = None, error: str | None = None) -> None:
    """The input choices: the replayed file (first, selected), the default input, each input device.

    Args:
        combo: the input combo box; each item's data is ``(kind, value)`` with kind ``file``/``device``/``none``.
        source: a file to replay, or None.
        device: the device asked for (index or name substring), selected when there is no file.
        devices: :func:`realtime.capture.list_input_devices` rows (None: none found, see ``error``).
        error: why there are no devices (no PortAudio, none found).
    """
    combo.clear()
    if source:
        combo.addItem(f"file: {Path(source).name}", ("file", source))
    combo.addItem("default input", ("device", None))
    for d in devices or ():
        combo.addItem(f"{d['index']}: {d['name']} ({d['hostapi']})", ("device", d["index"]))
    if error is not None:
        combo.addItem(f"(no audio devices: {error})", ("none", None))
    if device is not None and not source:
        for i in range(combo.count()):
            kind, value = combo.itemData(i)
            if kind == "device" and (value == device or (isinstance(device, str) and device in combo.itemText(i))):
                combo.setCurrentIndex(i)
                break
        else:
            combo.addItem(f"device {device}", ("device", device))
            combo.setCurrentIndex(combo.count() - 1)
