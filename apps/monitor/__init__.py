"""``aed monitor``: a desktop window with the live spectrogram, score traces and detected events.

Needs the ``gui`` extra (``pip install 'aed[gui]'``: pyqtgraph and PySide6). Only
:mod:`apps.monitor.worker` is importable without Qt; the window modules import Qt at import time,
so import them only from ``aed monitor`` (``apps/cmd_monitor.py``) or from tests.
"""
from apps.monitor.worker import EventLog, EventRecord, Message, MonitorWorker

__all__ = ["EventLog", "EventRecord", "Message", "MonitorWorker"]
