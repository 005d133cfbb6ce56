"""``aed profile``: the latency profiler (measurement in :mod:`apps.profiler.core`, output in
:mod:`apps.profiler.report`). Nothing heavy is imported here."""

__all__ = ["core", "report"]
