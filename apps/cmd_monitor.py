"""``aed monitor``: the desktop monitor (live spectrogram, score traces, event timeline and list).

Qt and pyqtgraph come from the ``gui`` extra and are imported only inside :func:`run`.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Mapping

from apps.common import add_detector_args, add_model_args, add_source_args, detector_config, parse_device
from apps.errors import UserError

__all__ = ["register", "run", "check_display"]

GUI_HINT = ("aed monitor needs the gui extra (pyqtgraph and PySide6-Essentials): pip install 'aed[gui]'")


def register(sub) -> None:
    p = sub.add_parser("monitor", help="desktop monitor: live spectrogram, score traces and events (gui extra)")
    add_source_args(p, duration_help="stop after S seconds of audio, then exit")
    p.add_argument("--screenshot", metavar="PATH", help="save a PNG of the window before exiting (with --duration, "
                   "or at the end of --source)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="score traces drawn (default: 5)")
    p.add_argument("--fps", type=float, default=30.0, help="screen refresh rate (default: 30)")
    add_model_args(p)
    add_detector_args(p)
    p.set_defaults(func=run)


def _check(args) -> None:
    if args.duration is not None and args.duration <= 0:
        raise UserError(f"--duration must be positive seconds, got {args.duration}")
    if not (1 <= args.top_k <= 8):
        raise UserError(f"--top-k must be between 1 and 8, got {args.top_k}")
    if not (1.0 <= args.fps <= 120.0):
        raise UserError(f"--fps must be between 1 and 120, got {args.fps}")
    if args.screenshot and not str(args.screenshot).lower().endswith(".png"):
        raise UserError(f"--screenshot must name a .png file, got {args.screenshot}")
    if args.screenshot and args.duration is None and not args.source:
        raise UserError("--screenshot needs --duration S (or --source FILE, which ends by itself)")
    detector_config(args, None)        # the detection options, checked where they are merged (UserError)
    if args.source:
        from pathlib import Path

        if not Path(args.source).is_file():
            raise UserError(f"no such audio file: {args.source}")


def check_display(environ: Mapping[str, str] | None = None, platform: str | None = None) -> None:
    """Raise :class:`UserError` where Qt would find no display and abort the process (SIGABRT from xcb).

    On Linux and the BSDs Qt needs ``DISPLAY`` (X11) or ``WAYLAND_DISPLAY`` (Wayland), or ``QT_QPA_PLATFORM``
    set to a plugin that needs no window system; macOS and Windows always have one.
    """
    env = os.environ if environ is None else environ
    plat = sys.platform if platform is None else platform
    if plat.startswith(("win", "darwin", "cygwin")):
        return
    qpa = env.get("QT_QPA_PLATFORM", "").split(":", 1)[0].strip().lower()
    has_x, has_wayland = bool(env.get("DISPLAY")), bool(env.get("WAYLAND_DISPLAY"))
    if qpa == "xcb":
        missing = None if has_x else "QT_QPA_PLATFORM=xcb but DISPLAY is not set"
    elif qpa.startswith("wayland"):
        missing = None if has_wayland else f"QT_QPA_PLATFORM={qpa} but WAYLAND_DISPLAY is not set"
    elif qpa:
        missing = None  # offscreen, minimal, vnc, eglfs, ... or a plugin we do not know: Qt decides
    else:
        missing = None if has_x or has_wayland else "neither DISPLAY nor WAYLAND_DISPLAY is set"
    if missing:
        raise UserError(f"no display ({missing}), so Qt cannot open a window; run headless with "
                        f"QT_QPA_PLATFORM=offscreen (e.g. with --screenshot) or under a virtual X server: "
                        f"xvfb-run aed monitor ...")


def run(args) -> int:
    _check(args)
    try:
        import pyqtgraph  # noqa: F401
        from PySide6 import QtCore, QtWidgets
    except ImportError as e:
        print(f"{GUI_HINT} ({e})", file=sys.stderr)
        return 1
    from apps.common import open_engine
    from apps.monitor.window import MonitorOptions, MonitorWindow

    app = QtWidgets.QApplication.instance()
    if app is None:
        check_display()
        app = QtWidgets.QApplication([sys.argv[0] if sys.argv else "aed"])
    # every model the window loads gets the command line's detection options over its own settings
    opts = MonitorOptions(device=parse_device(args.device), source=args.source, samplerate=args.samplerate,
                          settings=lambda engine, rate: detector_config(args, engine, rate),
                          engine_kind=args.engine, model_path=args.model, duration_s=args.duration,
                          top_k=args.top_k, fps=args.fps)
    engine, load_error = None, None
    try:
        engine = open_engine(args)
    except Exception as e:  # noqa: BLE001 - shown in the window; the user can load another model there
        load_error = f"model could not be loaded ({args.engine}, {args.model or 'default'}): {e}"
    win = MonitorWindow(engine, opts)
    if load_error:
        win.show_error(load_error)
    win.show()
    result = {"code": 0}

    def done(code: int) -> None:
        result["code"] = code
        win.close()
        app.exit(code)

    win.finished.connect(done)
    if engine is not None:
        win.start()
    unattended = args.duration is not None or args.screenshot is not None
    if unattended:
        win.run_unattended(args.duration, args.screenshot)
    old = signal.signal(signal.SIGINT, lambda *_: win.close())
    pump = QtCore.QTimer()
    pump.timeout.connect(lambda: None)      # lets Python see Ctrl-C while Qt's loop runs
    pump.start(200)
    try:
        app.exec()
    finally:
        signal.signal(signal.SIGINT, old)
        pump.stop()
        if win.isVisible():
            win.close()
    if unattended and args.screenshot:
        print(f"screenshot: {args.screenshot}", file=sys.stderr)
    return result["code"]
