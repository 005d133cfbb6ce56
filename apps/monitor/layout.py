"""The monitor window's widgets and their layout (a mixin of :class:`apps.monitor.window.MonitorWindow`).

Kept apart from the window's behaviour: this module only creates widgets and connects them to the
window's slots (``toggle``, ``apply_settings``, ``load_model``, ``copy_events`` ...).
"""
from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from apps.monitor.plots import LivePlots

__all__ = ["WindowLayout", "ENGINE_KINDS"]

ENGINE_KINDS = ("auto", "onnxruntime", "torch", "tensorrt")


class WindowLayout:
    """Builds the banner, the two rows of controls, the plots, the event list and the status bar."""

    def _build_ui(self) -> None:
        central = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(central)
        outer.setContentsMargins(6, 6, 6, 2)
        self.banner = QtWidgets.QLabel()
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner.setStyleSheet("background:#7f1d1d; color:white; padding:6px; border-radius:3px;")
        self.banner.hide()
        outer.addWidget(self.banner)

        row1 = QtWidgets.QHBoxLayout()
        row1.addWidget(QtWidgets.QLabel("Input"))
        self.device_combo = QtWidgets.QComboBox()
        self.device_combo.setMinimumWidth(260)
        self._fill_devices()
        self.device_combo.activated.connect(self._device_changed)
        row1.addWidget(self.device_combo)
        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.clicked.connect(self.toggle)
        row1.addWidget(self.start_button)
        row1.addSpacing(16)
        row1.addWidget(QtWidgets.QLabel("Threshold"))
        self.threshold_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(1, 99)
        self.threshold_slider.setMinimumWidth(140)
        self.threshold_slider.valueChanged.connect(self._threshold_moved)
        row1.addWidget(self.threshold_slider)
        self.threshold_label = QtWidgets.QLabel("0.50")
        row1.addWidget(self.threshold_label)
        row1.addSpacing(16)
        row1.addWidget(QtWidgets.QLabel("Window"))
        self.window_spin = QtWidgets.QDoubleSpinBox(decimals=2, minimum=0.5, maximum=10.0, singleStep=0.1,
                                                    suffix=" s")
        row1.addWidget(self.window_spin)
        row1.addWidget(QtWidgets.QLabel("Hop"))
        self.hop_spin = QtWidgets.QDoubleSpinBox(decimals=2, minimum=0.01, maximum=10.0, singleStep=0.05, suffix=" s")
        row1.addWidget(self.hop_spin)
        for spin in (self.window_spin, self.hop_spin):
            spin.valueChanged.connect(self._settings_changed)
        row1.addStretch(1)
        outer.addLayout(row1)

        row2 = QtWidgets.QHBoxLayout()
        row2.addWidget(QtWidgets.QLabel("Class"))
        self.class_combo = QtWidgets.QComboBox()
        self.class_combo.setEditable(True)
        self.class_combo.setInsertPolicy(QtWidgets.QComboBox.InsertPolicy.NoInsert)
        self.class_combo.setMinimumWidth(160)
        row2.addWidget(self.class_combo)
        self.class_spin = QtWidgets.QDoubleSpinBox(decimals=2, minimum=0.01, maximum=0.99, singleStep=0.05, value=0.5)
        row2.addWidget(self.class_spin)
        set_button = QtWidgets.QPushButton("Override")
        set_button.clicked.connect(self._set_override)
        row2.addWidget(set_button)
        clear_button = QtWidgets.QPushButton("Clear")
        clear_button.clicked.connect(self._clear_override)
        row2.addWidget(clear_button)
        self.overrides_label = QtWidgets.QLabel("no per-class overrides")
        self.overrides_label.setStyleSheet("color:#666;")
        row2.addWidget(self.overrides_label, 1)
        row2.addWidget(QtWidgets.QLabel("Engine"))
        self.engine_combo = QtWidgets.QComboBox()
        self.engine_combo.addItems(ENGINE_KINDS)
        self.engine_combo.setCurrentText(self.options.engine_kind)
        row2.addWidget(self.engine_combo)
        self.model_edit = QtWidgets.QLineEdit(self.options.model_path or "")
        self.model_edit.setPlaceholderText("model: checkpoint dir, .onnx or .plan (empty: the shipped default)")
        self.model_edit.setMinimumWidth(260)
        row2.addWidget(self.model_edit)
        browse = QtWidgets.QPushButton("Browse…")
        browse.clicked.connect(self._browse_model)
        row2.addWidget(browse)
        load = QtWidgets.QPushButton("Load")
        load.clicked.connect(lambda: self.load_model(self.engine_combo.currentText(), self.model_edit.text()))
        row2.addWidget(load)
        outer.addLayout(row2)

        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        self.plots = LivePlots(history_s=self.options.history_s, top_k=self.options.top_k)
        split.addWidget(self.plots.widget)
        side = QtWidgets.QWidget()
        side_layout = QtWidgets.QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(QtWidgets.QLabel("Recent events"))
        self.table = QtWidgets.QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["time", "label", "duration", "peak"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.table.setColumnWidth(0, 96)
        self.table.setColumnWidth(2, 66)
        self.table.setColumnWidth(3, 50)
        side_layout.addWidget(self.table, 1)
        buttons = QtWidgets.QHBoxLayout()
        copy = QtWidgets.QPushButton("Copy TSV")
        copy.clicked.connect(self.copy_events)
        save = QtWidgets.QPushButton("Save TSV…")
        save.clicked.connect(self._save_dialog)
        buttons.addWidget(copy)
        buttons.addWidget(save)
        side_layout.addLayout(buttons)
        split.addWidget(side)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        split.setSizes([1000, 340])
        outer.addWidget(split, 1)
        self.setCentralWidget(central)
        QtGui.QShortcut(QtGui.QKeySequence.StandardKey.Copy, self.table, activated=self.copy_events)

        bar = self.statusBar()
        self.level_meter = QtWidgets.QProgressBar()
        self.level_meter.setRange(-60, 0)
        self.level_meter.setValue(-60)
        self.level_meter.setFixedWidth(110)
        self.level_meter.setTextVisible(False)
        self.level_label = QtWidgets.QLabel("level – dBFS")
        self.level_label.setMinimumWidth(150)
        bar.addWidget(self.level_meter)
        bar.addWidget(self.level_label)
        self.stage_label = QtWidgets.QLabel("features – · inference – · post – ms")
        self.count_label = QtWidgets.QLabel("overruns 0 · dropped 0 · lost 0.00 s")
        self.engine_label = QtWidgets.QLabel("no engine")
        self.state_label = QtWidgets.QLabel("stopped")
        for w in (self.stage_label, self.count_label, self.engine_label, self.state_label):
            bar.addWidget(w)

    def _fill_devices(self) -> None:
        self.device_combo.clear()
        if self.options.source:
            self.device_combo.addItem(f"file: {Path(self.options.source).name}", ("file", self.options.source))
        self.device_combo.addItem("default input", ("device", None))
        try:
            from realtime.capture import list_input_devices

            for d in list_input_devices():
                self.device_combo.addItem(f"{d['index']}: {d['name']} ({d['hostapi']})", ("device", d["index"]))
        except Exception as e:  # noqa: BLE001 - no PortAudio / no devices: say so, keep the file input
            self.device_combo.addItem(f"(no audio devices: {e})", ("none", None))
        dev = self.options.device
        if dev is not None and not self.options.source:
            for i in range(self.device_combo.count()):
                kind, value = self.device_combo.itemData(i)
                if kind == "device" and (value == dev or (isinstance(dev, str) and dev in self.device_combo.itemText(i))):
                    self.device_combo.setCurrentIndex(i)
                    break
            else:
                self.device_combo.addItem(f"device {dev}", ("device", dev))
                self.device_combo.setCurrentIndex(self.device_combo.count() - 1)
