"""The three live plots of the monitor, on one time axis: spectrogram, score traces, event timeline.

Imported only by the monitor window (it needs pyqtgraph). All methods run on the GUI thread; the
buffers are small NumPy rings so a 30 fps redraw stays cheap.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pyqtgraph as pg

from apps.monitor.worker import EventRecord

__all__ = ["LivePlots", "TRACE_COLORS"]

LOG_FLOOR = float(np.log(np.finfo(np.float32).eps))      # the front end's log floor (silence)
TRACE_COLORS = ["#4cc9f0", "#f72585", "#b5e48c", "#ffb703", "#c77dff", "#ff7f51", "#90e0ef", "#e9edc9"]
MAX_BAR_LABELS = 24
MAX_ROWS = 12
AXIS_WIDTH = 104                # room for a class name on the timeline; the same on every plot keeps x aligned
LANE_TEXT_WIDTH = AXIS_WIDTH - 12   # a lane's name, elided to this: pyqtgraph drops tick text wider than its axis


class _Bars(pg.BarGraphItem):
    """A bar graph that reports when it is really painted (for the latency benchmark)."""

    def __init__(self, on_paint: Callable[[], None], **opts):
        super().__init__(**opts)
        self._on_paint = on_paint

    def paint(self, p, *args) -> None:
        super().paint(p, *args)
        self._on_paint()


class LivePlots:
    """Spectrogram (last ``history_s``), top-K score traces with thresholds, and the event timeline.

    Args:
        history_s: seconds shown.
        top_k: number of score traces.
        frame_shift_s: time between log-mel frames, the model's (``FrontEndConfig.frame_shift_ms``); None until
            :meth:`set_frame_shift` (before the first frames).
    """

    def __init__(self, history_s: float = 10.0, top_k: int = 5, frame_shift_s: float | None = None):
        self.history_s = float(history_s)
        self.top_k = int(top_k)
        self.frame_shift_s = frame_shift_s
        self.widget = pg.GraphicsLayoutWidget()
        self.widget.setBackground("#101418")
        self.t_now = 0.0
        self.painted: dict[tuple[str, float], float] = {}     # bar key -> perf_counter of its first paint
        self._unpainted: set[tuple[str, float]] = set()

        # spectrogram -----------------------------------------------------------------------------
        self.spec_plot = self.widget.addPlot(row=0, col=0)
        self.spec_plot.setLabel("left", "mel band")
        self.spec_plot.setTitle("log-mel spectrogram", size="9pt")
        self.spec_plot.setMouseEnabled(x=False, y=False)
        self.spec_plot.hideButtons()
        self.image = pg.ImageItem(axisOrder="col-major")
        self.image.setColorMap(pg.colormap.get("inferno"))
        self.spec_plot.addItem(self.image)
        self._spec = None                  # (N, F) ring, oldest first after _spec_view()
        self._spec_pos = 0
        self._spec_t = None                # session time at the end of the newest frame
        self._levels = (LOG_FLOOR, 0.0)
        self._frames_seen = 0
        self._spec_dirty = False
        self._image_shape = None

        # score traces ----------------------------------------------------------------------------
        self.score_plot = self.widget.addPlot(row=1, col=0)
        self.score_plot.setLabel("left", "score")
        self.score_plot.setYRange(0.0, 1.05, padding=0)
        self.score_plot.setMouseEnabled(x=False, y=False)
        self.score_plot.hideButtons()
        self.legend = self.score_plot.addLegend(offset=(5, 5), labelTextSize="8pt", colCount=3,
                                                brush=(16, 20, 24, 170))
        self.curves = [self.score_plot.plot([], [], pen=pg.mkPen(c, width=2)) for c in TRACE_COLORS[:self.top_k]]
        self.threshold_line = pg.InfiniteLine(pos=0.5, angle=0, pen=pg.mkPen("#e0e0e0", width=1, style=pg.QtCore.Qt
                                                                             .PenStyle.DashLine))
        self.score_plot.addItem(self.threshold_line)
        self.class_lines = [pg.InfiniteLine(pos=0.5, angle=0, pen=pg.mkPen(c, width=1, style=pg.QtCore.Qt.PenStyle
                                                                           .DotLine)) for c in TRACE_COLORS[:self.top_k]]
        for line in self.class_lines:
            line.hide()
            self.score_plot.addItem(line)
        self.labels: list[str] = []
        self._score_t = np.zeros(0)
        self._scores = np.zeros((0, 0), np.float32)
        self._top: list[int] = []
        self.threshold = 0.5
        self.per_class: dict[str, float] = {}
        self._scores_dirty = False

        # event timeline --------------------------------------------------------------------------
        self.timeline = self.widget.addPlot(row=2, col=0)
        self.timeline.setMouseEnabled(x=False, y=False)
        self.timeline.hideButtons()
        self.timeline.invertY(True)
        self.bars = _Bars(self._bars_painted, x0=[0.0], x1=[0.0], y0=[0.0], y1=[0.0], pen=None, brush="#2a9d8f")
        self.bars.hide()
        self.timeline.addItem(self.bars)
        self.rows: dict[str, int] = {}                 # every class that has fired, in first-fired order
        self._row_of: dict[str, int] = {}              # the rows on screen now
        self._open_brush = pg.mkBrush("#e76f51")       # still open: grows with the stream
        self._closed_brush = pg.mkBrush("#2a9d8f")
        self.timeline.setTitle("events", size="9pt")
        self.timeline.getAxis("left").setTicks([[]])     # rows are named when classes fire
        self._any_open = False
        self._last_layout = -1e9
        self._text_x: list[float] = []
        self._bars_t = 0.0
        self._bar_texts: list[pg.TextItem] = []

        for p in (self.score_plot, self.timeline):
            p.setXLink(self.spec_plot)
            p.getAxis("left").setWidth(AXIS_WIDTH)
        self.spec_plot.getAxis("left").setWidth(AXIS_WIDTH)
        for p in (self.spec_plot, self.score_plot):
            p.hideAxis("bottom")
        self.timeline.setLabel("bottom", "seconds before now")
        for p in (self.spec_plot, self.score_plot, self.timeline):
            p.enableAutoRange(x=False, y=False)
        self.spec_plot.setXRange(-self.history_s, 0.0, padding=0)
        self.spec_plot.setYRange(0, 64, padding=0)
        self.widget.ci.layout.setRowStretchFactor(0, 5)
        self.widget.ci.layout.setRowStretchFactor(1, 3)
        self.widget.ci.layout.setRowStretchFactor(2, 3)

    # -- data in --------------------------------------------------------------------------------
    def set_frame_shift(self, frame_shift_s: float) -> None:
        """The time between the frames that will arrive (the model's front end); another one restarts the image."""
        if frame_shift_s != self.frame_shift_s:
            self.frame_shift_s = float(frame_shift_s)
            self._spec, self._spec_t, self._image_shape = None, None, None

    def add_frames(self, t_end: float, frames: np.ndarray) -> None:
        """Append raw log-mel frames ``(n, F)`` ending at session time ``t_end``."""
        if self.frame_shift_s is None:
            raise RuntimeError("set_frame_shift() before the first frames")
        n, f = frames.shape
        cap = int(round(self.history_s / self.frame_shift_s))
        if self._spec is None or self._spec.shape[1] != f:
            self._spec = np.full((cap, f), LOG_FLOOR, np.float32)
            self._spec_pos = 0
        elif self._spec_t is not None:
            gap = int(round((t_end - n * self.frame_shift_s - self._spec_t) / self.frame_shift_s))
            if gap > 0:                      # audio that never came (stopped, dropped): blank columns
                self._write(np.full((min(gap, cap), f), LOG_FLOOR, np.float32))
        self._write(frames[-cap:])
        self._spec_t = t_end
        self._frames_seen += n
        self._spec_dirty = True

    def _write(self, block: np.ndarray) -> None:
        cap = self._spec.shape[0]
        idx = (self._spec_pos + np.arange(block.shape[0])) % cap
        self._spec[idx] = block
        self._spec_pos = int((self._spec_pos + block.shape[0]) % cap)

    def spectrogram(self) -> np.ndarray | None:
        """The shown spectrogram ``(N, F)``, oldest frame first (a copy)."""
        if self._spec is None:
            return None
        return np.roll(self._spec, -self._spec_pos, axis=0)        # ring -> time order: (N, F)

    def set_labels(self, labels: Sequence[str]) -> None:
        """A new label set (another model): the score history restarts, the timeline stays."""
        if list(labels) != self.labels:
            self.labels = list(labels)
            self._score_t = np.zeros(0)
            self._scores = np.zeros((0, len(self.labels)), np.float32)
            self._top = []
            self._scores_dirty = True

    def add_scores(self, t_end: float, scores: np.ndarray) -> None:
        if scores.shape[0] != len(self.labels):
            return                           # a late window of a previous model
        self._score_t = np.append(self._score_t, t_end)
        self._scores = np.vstack([self._scores, scores[None, :]])    # (N, C) + (1, C)
        keep = self._score_t >= t_end - self.history_s - 1.0
        if not keep.all():
            self._score_t, self._scores = self._score_t[keep], self._scores[keep]
        self._scores_dirty = True

    def set_thresholds(self, threshold: float, per_class: Mapping[str, float]) -> None:
        self.threshold = float(threshold)
        self.per_class = dict(per_class)
        self.threshold_line.setValue(self.threshold)
        self._scores_dirty = True

    def score_traces(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The traces drawn now: label -> (t, score)."""
        out = {}
        for i, curve in zip(self._top, self.curves):
            x, y = curve.getData()
            out[self.labels[i]] = (np.asarray(x), np.asarray(y))
        return out

    # -- drawing --------------------------------------------------------------------------------
    def redraw(self, t_now: float, records: Iterable[EventRecord], events_changed: bool) -> None:
        """Bring every plot to ``t_now`` (session seconds of the newest audio).

        The x axes are fixed at ``[-history_s, 0]`` (seconds before now) and the items slide left by a
        transform: no axis is regenerated per frame, and data are re-sent only when they changed.
        """
        self.t_now = t_now
        left = t_now - self.history_s
        if self._spec_dirty and self._spec is not None:
            img = self.spectrogram()
            if self._frames_seen % 50 < 5 or self._levels == (LOG_FLOOR, 0.0):
                lit = img[img > LOG_FLOOR + 0.5]
                lo, hi = np.percentile(lit, [5, 99.7]) if lit.size else (LOG_FLOOR, 0.0)
                self._levels = (float(lo), float(max(hi, lo + 6.0)))
            self.image.setImage(img, autoLevels=False, levels=self._levels)
            if self._image_shape != img.shape:
                self._image_shape = img.shape
                self.image.setRect(pg.QtCore.QRectF(-img.shape[0] * self.frame_shift_s, 0.0,
                                                    img.shape[0] * self.frame_shift_s, img.shape[1]))
                self.spec_plot.setYRange(0, img.shape[1], padding=0)
            self._spec_dirty = False
        if self._spec_t is not None:
            self.image.setPos(self._spec_t - t_now, 0.0)
        if self._scores_dirty:
            self._draw_scores(left)
            self._scores_dirty = False
        for curve in self.curves:
            curve.setPos(-t_now, 0.0)
        self._draw_timeline(records, left, t_now, events_changed)

    def _draw_scores(self, left: float) -> None:
        if self._scores.shape[0] == 0:
            for c in self.curves:
                c.setData([], [])
            return
        visible = self._score_t >= left
        peak = self._scores[visible].max(axis=0) if visible.any() else self._scores[-1]
        order = list(np.argsort(-peak, kind="stable")[:self.top_k])
        # keep the current order where the set is unchanged, so colours do not jump
        if set(order) == set(self._top):
            order = self._top
        if order != self._top:
            self._top = order
            self.legend.clear()
            for i, curve in zip(order, self.curves):
                self.legend.addItem(curve, self.labels[i])
        for slot, curve in enumerate(self.curves):
            if slot < len(order):
                curve.setData(self._score_t, self._scores[:, order[slot]])
                th = self.per_class.get(self.labels[order[slot]])
                line = self.class_lines[slot]
                if th is None:
                    line.hide()
                else:
                    line.setValue(th)
                    line.show()
            else:
                curve.setData([], [])
                self.class_lines[slot].hide()

    def _draw_timeline(self, records: Iterable[EventRecord], left: float, t_now: float, changed: bool = True) -> None:
        self.bars.setPos(-t_now, 0.0)
        self._bars_t = t_now
        if not changed and not self._any_open and t_now - self._last_layout < 0.25:
            for t, x in zip(self._bar_texts, self._text_x):
                t.setPos(max(x, left) - t_now, t.pos().y())
            return
        self._last_layout = t_now
        shown = [r for r in records if (r.offset_s if r.offset_s is not None else t_now) >= left]
        self._any_open = any(r.offset_s is None for r in shown)
        for r in shown:
            self.rows.setdefault(r.label, len(self.rows))          # classes in the order they first fired
        # one row per class with an event in view (the most recent MAX_ROWS of them), in first-fired order
        active = sorted({r.label for r in shown}, key=self.rows.__getitem__)[-MAX_ROWS:]
        if active != list(self._row_of):
            self._row_of = {lab: i for i, lab in enumerate(active)}
            self.timeline.getAxis("left").setTicks([[(i, self.lane_name(lab)) for lab, i in self._row_of.items()]])
            hidden = len({r.label for r in shown}) - len(active)
            self.timeline.setTitle(f"events ({hidden} more classes not shown)" if hidden > 0 else "events",
                                   size="9pt")
        self.timeline.setYRange(-0.6, max(len(active), 3) - 0.4, padding=0)
        shown = [r for r in shown if r.label in self._row_of]
        if not shown:
            self.bars.hide()
            for t in self._bar_texts:
                t.hide()
            self._text_x = []
            return
        x0 = np.array([r.onset_s for r in shown])
        x1 = np.array([max(r.offset_s if r.offset_s is not None else t_now, r.onset_s + 0.02) for r in shown])
        y = np.array([self._row_of[r.label] for r in shown], dtype=float)
        brushes = [self._open_brush if r.offset_s is None else self._closed_brush for r in shown]
        self.bars.setOpts(x0=x0, x1=x1, y0=y - 0.35, y1=y + 0.35, brushes=brushes, pen=None)
        self.bars.show()
        for r in shown:
            key = (r.label, r.onset_s)
            if key not in self.painted:
                self._unpainted.add(key)
        # a label on each bar while the rows are tall enough to read (the axis names the rows anyway)
        last = shown[-MAX_BAR_LABELS:] if len(active) <= 10 else []
        self._text_x = [r.onset_s for r in last]
        while len(self._bar_texts) < len(last):
            t = pg.TextItem(color="#f1faee", anchor=(0, 0.5))
            t.setZValue(5)
            self.timeline.addItem(t)
            self._bar_texts.append(t)
        for t, r in zip(self._bar_texts, last):
            text = f"{r.label} {r.peak:.2f}"
            if getattr(t, "_shown_text", None) != text:          # setText re-lays out HTML: only on change
                t.setText(text)
                t._shown_text = text
            t.setPos(max(r.onset_s, left) - t_now, self._row_of[r.label])
            t.show()
        for t in self._bar_texts[len(last):]:
            t.hide()

    def lane_name(self, label: str) -> str:
        """``label`` as its lane's name on the timeline's axis: elided ("…") to the room the axis has."""
        axis = self.timeline.getAxis("left")
        font = axis.style.get("tickFont") or pg.QtWidgets.QApplication.font()
        metrics = pg.QtGui.QFontMetrics(font)
        return metrics.elidedText(label, pg.QtCore.Qt.TextElideMode.ElideRight, LANE_TEXT_WIDTH)

    def lane_ticks(self) -> list[tuple[int, str]]:
        """The timeline's lanes now: (row, name on the axis), top row first."""
        return sorted((i, self.lane_name(lab)) for lab, i in self._row_of.items())

    def _bars_painted(self) -> None:
        if self._unpainted:
            now = time.perf_counter()
            for key in self._unpainted:
                self.painted.setdefault(key, now)
            self._unpainted.clear()

    def bar_spans(self) -> list[tuple[str, float, float]]:
        """The bars drawn now: (label, x0, x1)."""
        if not self.bars.isVisible():
            return []
        inv = {i: lab for lab, i in self._row_of.items()}
        o = self.bars.opts
        return [(inv[int(round(y0 + 0.35))], float(a), float(b)) for a, b, y0 in zip(o["x0"], o["x1"], o["y0"])]
