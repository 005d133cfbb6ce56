"""The profiler's output: a live rich table with a progress bar, and ``--report DIR`` (JSON, Markdown, PNGs).

Example:
    >>> write_report(result, "out/", config={"engines": ["onnxruntime"]})     # doctest: +SKIP
    {'json': PosixPath('out/profile.json'), 'markdown': PosixPath('out/profile.md'), ...}
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from apps.profiler.core import LATENCY_PARTS, ProfileResult, Session
from realtime.stats import summarize

__all__ = ["LiveView", "summary_table", "machine_info", "versions", "to_json", "write_report", "markdown",
           "PLOTS"]

PLOTS = ("stages_boxplot.png", "latency_over_time.png", "breakdown.png")
_FE_STAGES = ("resample", "features", "windows")


def _ms(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def _pct(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"


def session_row(s: Session) -> dict[str, Any]:
    lat = s.latency_summary()
    cost = s.cost()
    st = s.stage_summary()
    return {"session": s.label, "engine": s.engine_name, "trigger": s.trigger, "window_s": s.window_s, "hop_s": s.hop_s,
            "detected": f"{cost['detected']}/{cost['detected'] + cost['missed']}",
            "latency_p50_ms": lat["total"]["p50_ms"], "latency_p95_ms": lat["total"]["p95_ms"],
            **{f"{p}_p50_ms": lat[p]["p50_ms"] for p in LATENCY_PARTS},
            "inference_p50_ms": st["inference_per_window"]["p50_ms"],
            "inference_p99_ms": st["inference_per_window"]["p99_ms"],
            "frontend_per_hop_p50_ms": st["frontend_per_hop"]["p50_ms"],
            "rtf": cost["rtf"], "frontend_inference_share": cost["frontend_inference_share"],
            "cpu_share": cost["cpu_share"], "windows_per_s": cost["windows_per_s"], "late_chunks": cost["late_chunks"]}


def summary_table(sessions: list[Session], title: str = "aed profile"):
    """A rich table: one row per session with latency, its parts and the cost."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("session", "events", "onset p50", "p95", "hop wait", "smoothing", "buffering", "compute",
                "infer p50", "infer p99", "RTF", "FE+inf", "CPU", "win/s"):
        t.add_column(col, justify="left" if col == "session" else "right")
    for s in sessions:
        r = session_row(s)
        t.add_row(r["session"], r["detected"], _ms(r["latency_p50_ms"]), _ms(r["latency_p95_ms"]),
                  *(_ms(r[f"{p}_p50_ms"]) for p in LATENCY_PARTS), _ms(r["inference_p50_ms"]),
                  _ms(r["inference_p99_ms"]), f"{r['rtf']:.3f}", _pct(r["frontend_inference_share"]),
                  _pct(r["cpu_share"]), f"{r['windows_per_s']:.1f}")
    t.caption = "times in ms (p50 unless marked); latency parts are medians, so they need not add up to the total"
    return t


class LiveView:
    """Progress bar and a table refreshed after every segment (plain text when not on a terminal)."""

    def __init__(self, total: int, enabled: bool | None = None, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self.total = total
        self._live = None
        self._progress = None

    def __enter__(self) -> "LiveView":
        if self.enabled:
            from rich.console import Group
            from rich.live import Live
            from rich.progress import BarColumn, Progress, TimeRemainingColumn

            self._progress = Progress("[progress.description]{task.description}", BarColumn(),
                                      "{task.completed}/{task.total} segments", TimeRemainingColumn())
            self._task = self._progress.add_task("profiling", total=self.total)
            self._group = Group
            self._live = Live(self._progress, console=self.console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def update(self, done: int, total: int, sessions: list[Session]) -> None:
        if self._live is None:
            return
        self._progress.update(self._task, completed=done)
        self._live.update(self._group(summary_table(sessions), self._progress))

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)


# -- machine, versions -------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        load = [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "cores_usable": affinity, "loadavg_1_5_15min": load,
            "platform": platform.platform(),
            "python": sys.version.split()[0], "machine": platform.machine()}


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("aed", "numpy", "onnxruntime", "torch", "soxr", "tensorrt", "sounddevice", "rich", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


# -- JSON --------------------------------------------------------------------------------------------------------


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else round(x, 7)      # 0.1 us is plenty
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return _clean(x.item())
    return x


def to_json(result: ProfileResult, config: dict[str, Any]) -> dict[str, Any]:
    """Everything: machine, versions, config, per-session summaries and every raw timing (seconds)."""
    sessions = []
    for s in result.sessions:
        sessions.append({
            "label": s.label, "kind": s.kind, "engine": s.engine_name, "trigger": s.trigger,
            "window_s": s.window_s, "hop_s": s.hop_s,
            "cost": s.cost(), "stages": s.stage_summary(), "latency": s.latency_summary(),
            "raw": {"latencies": s.latencies, "missed_onsets_s": s.missed, "onsets_emitted": s.emitted,
                    "chunks": s.chunks, "timer": s.stage_samples(), "frontend_per_hop_s": s.frontend_per_hop()},
        })
    cap = dict(result.capture)
    if cap.get("callback_intervals_s"):
        iv = np.asarray(cap["callback_intervals_s"])
        cap["callback_interval"] = summarize(iv)
        cap["callback_jitter"] = summarize(np.abs(iv - cap["nominal_block_s"]))
    return _clean({
        "tool": "aed profile", "units": "seconds in raw data, milliseconds in summaries", "config": config,
        "machine": machine_info(), "versions": versions(), "source": result.source, "wall_s": result.wall_s,
        "process_cpu_s": result.process_cpu_s, "process_cpu_share": result.process_cpu_s / max(result.wall_s, 1e-9),
        "peak_rss_kb": result.peak_rss_kb, "interrupted": result.interrupted, "notes": result.notes,
        "capture": cap, "sessions": sessions,
    })


# -- Markdown ----------------------------------------------------------------------------------------------------


def markdown(data: dict[str, Any], plots: list[str]) -> str:
    """A readable summary of :func:`to_json`'s output."""
    cfg, m = data["config"], data["machine"]
    lines = ["# aed profile", ""]
    lines += [f"- Machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['platform']}; load "
              f"average at the end (1/5/15 min): {m.get('loadavg_1_5_15min')}",
              f"- Versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()),
              f"- Source: `{data['source']}`; wall {data['wall_s']:.1f} s; process CPU {data['process_cpu_s']:.1f} s "
              f"({100 * data['process_cpu_share']:.0f} % of one core over the run, all sessions); peak RSS "
              f"{data['peak_rss_kb'] / 1024:.0f} MiB",
              f"- Config: " + ", ".join(f"{k}={v}" for k, v in cfg.items())]
    if data["interrupted"]:
        lines.append("- **Interrupted** (Ctrl-C): the figures cover the part that ran.")
    for n in data["notes"]:
        lines.append(f"- {n}")
    lines += ["", "## End-to-end onset latency (ms)", "",
              "| session | engine | trigger | detected | p50 | p95 | p99 | max | hop wait p50 | smoothing p50 | "
              "buffering p50 | compute p50 | target (hop + 30 ms) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in data["sessions"]:
        lat, c = s["latency"], s["cost"]
        tgt = 1e3 * s["hop_s"] + 30
        p50 = lat["total"]["p50_ms"]
        ok = "-" if p50 is None else ("met" if p50 <= tgt else "missed")
        lines.append(f"| {s['label']} | {s['engine']} | {s['trigger']} | "
                     f"{c['detected']}/{c['detected'] + c['missed']} | "
                     + " | ".join(_ms(lat["total"][k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
                     + " | " + " | ".join(_ms(lat[p]["p50_ms"]) for p in LATENCY_PARTS) + f" | {tgt:.0f}: {ok} |")
    lines += ["", "Latency = emit time of the onset − time the event's first sample entered the input. "
              "Parts: hop wait (until the first window holding that sample is complete), smoothing (further "
              "windows until the onset is emitted: model needing more of the event, hysteresis), buffering "
              "(capture block, resampler, queueing), compute (the chunk's processing up to the emitted onset).",
              "", "## Cost", "",
              "| session | windows/s | RTF | front end + inference | target < 5 % | CPU share | late chunks |",
              "|---|---|---|---|---|---|---|"]
    for s in data["sessions"]:
        c = s["cost"]
        share = c["frontend_inference_share"]
        ok = "-" if share is None else ("met" if share < 0.05 else "missed")
        lines.append(f"| {s['label']} | {c['windows_per_s']:.1f} | {c['rtf']:.4f} | {_pct(share)} | {ok} | "
                     f"{_pct(c['cpu_share'])} | {c['late_chunks']} |")
    lines += ["", "RTF = processing time / audio time (all stages, wall clock). Front end + inference = resample, "
              "features, window assembly and inference wall time / audio time. CPU share = CPU time of the detector "
              "thread (everything it did) / audio time: on a machine shared with other work, wall-clock stage times "
              "include time the thread waited for a core, CPU time does not. Late chunks = chunks started more than "
              "one hop after they were due.", "",
              "## Stages (ms)", "", "| session | stage | count | p50 | p95 | p99 | max | mean |",
              "|---|---|---|---|---|---|---|---|"]
    for s in data["sessions"]:
        for name, v in s["stages"].items():
            lines.append(f"| {s['label']} | {name} | {v['count']} | " + " | ".join(
                _ms(v[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms")) + " |")
    lines += ["", "resample / features / windows are per chunk (capture block); inference and post per window; "
              "ring_wait is the time the worker waited for the next block; other_per_chunk is the chunk's "
              "processing time "
              "outside the named stages (input checks, timer overhead, Python glue), so that the stages plus other "
              "equal the measured total."]
    cap = data.get("capture") or {}
    if cap.get("callback_interval"):
        lines += ["", "## Capture", "", "| measure | count | p50 | p95 | p99 | max |", "|---|---|---|---|---|---|"]
        for k in ("callback_interval", "callback_jitter"):
            v = cap[k]
            lines.append(f"| {k} | {v['count']} | " + " | ".join(_ms(v[q]) for q in ("p50_ms", "p95_ms", "p99_ms",
                                                                                      "max_ms")) + " |")
        lines.append(f"\nInput overflows {cap['input_overflows']}, ring overruns {cap['overruns']}, dropped samples "
                     f"{cap['dropped_samples']}.")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


# -- plots -------------------------------------------------------------------------------------------------------


def _plots(data: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sessions = data["sessions"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    written = []

    # 1. per-stage box plot, sessions side by side
    stages = ["ring_wait", "resample", "features", "windows", "inference_per_window", "post_per_window"]
    fig, ax = plt.subplots(figsize=(11, 5))
    n = max(1, len(sessions))
    width = 0.8 / n
    for j, s in enumerate(sessions):
        chunks, raw = s["raw"]["chunks"], s["raw"]
        series = [[c["wait"] for c in chunks]] + [[c["stages"][st] for c in chunks] for st in _FE_STAGES]
        series.append([c["stages"]["inference"] / c["windows"] for c in chunks if c["windows"]])
        series.append(raw["timer"].get("post", []))
        series = [np.maximum(np.asarray(v, dtype=float) * 1e3, 1e-4) if len(v) else np.array([np.nan]) for v in series]
        pos = np.arange(len(stages)) + (j - (n - 1) / 2) * width
        bp = ax.boxplot(series, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=True,
                        flierprops={"markersize": 2})
        for b in bp["boxes"]:
            b.set_facecolor(colors[j % len(colors)])
            b.set_alpha(0.6)
        ax.plot([], [], "s", color=colors[j % len(colors)], label=s["label"])
    ax.set_xticks(np.arange(len(stages)), [st.replace("_per_", "/") for st in stages])
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    ax.set_title("Per-stage time: front end per chunk, inference and post per window")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / PLOTS[0], dpi=100)
    plt.close(fig)
    written.append(PLOTS[0])

    # 2. latency over time (per event) with chunk compute time beneath
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    for j, s in enumerate(sessions):
        lat = s["raw"]["latencies"]
        c = colors[j % len(colors)]
        if lat:
            a1.plot([r["t_s"] for r in lat], [1e3 * r["total"] for r in lat], "o-", color=c, ms=3, label=s["label"])
        ch = s["raw"]["chunks"]
        t = np.cumsum([0] + [x["n"] for x in ch[:-1]]) / max(1, data["config"].get("source_rate") or 16000)
        a2.plot(t, [1e3 * (x["end"] - x["start"]) for x in ch], ".", color=c, ms=2, label=s["label"])
    for s in sessions[:1]:
        a1.axhline(1e3 * s["hop_s"] + 30, color="k", ls="--", lw=0.8, label="target: hop + 30 ms")
    a1.set_ylabel("onset latency (ms)")
    a1.set_title("End-to-end onset latency per injected event")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    a2.set_ylabel("chunk compute (ms)")
    a2.set_xlabel("stream time (s)")
    a2.set_yscale("log")
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / PLOTS[1], dpi=100)
    plt.close(fig)
    written.append(PLOTS[1])

    # 3. stacked breakdown: latency parts (mean) and compute per second of audio by stage
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.8))
    labels = [s["label"] for s in sessions]
    x = np.arange(len(sessions))
    bottom = np.zeros(len(sessions))
    for k, p in enumerate(LATENCY_PARTS):
        v = np.array([(s["latency"][p]["mean_ms"] or 0.0) for s in sessions])
        a1.bar(x, v, bottom=bottom, label=p, color=colors[k % len(colors)])
        bottom += v
    a1.set_xticks(x, labels, rotation=15, fontsize=8)
    a1.set_ylabel("ms (mean over events)")
    a1.set_title("Onset latency, stacked by part")
    a1.legend(fontsize=8)
    bottom = np.zeros(len(sessions))
    for k, st in enumerate(("resample", "features", "windows", "inference", "post", "other")):
        v = np.array([1e3 * s["cost"]["stage_totals_s"][st] / max(s["cost"]["audio_s"], 1e-9) for s in sessions])
        a2.bar(x, v, bottom=bottom, label=st, color=colors[(k + 4) % len(colors)])
        bottom += v
    a2.axhline(50, color="k", ls="--", lw=0.8, label="5 % of real time")
    a2.set_xticks(x, labels, rotation=15, fontsize=8)
    a2.set_ylabel("ms of compute per s of audio")
    a2.set_title("Compute per second of audio, stacked by stage")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / PLOTS[2], dpi=100)
    plt.close(fig)
    written.append(PLOTS[2])
    return written


def write_report(result: ProfileResult, directory: str | os.PathLike, config: dict[str, Any]) -> dict[str, Path]:
    """Write ``profile.json``, ``profile.md`` and the PNG plots into ``directory``; return their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    data = to_json(result, config)
    (out / "profile.json").write_text(json.dumps(data, separators=(",", ":"), allow_nan=False))
    plots = _plots(data, out)
    (out / "profile.md").write_text(markdown(data, plots))
    return {"json": out / "profile.json", "markdown": out / "profile.md", **{p: out / p for p in plots}}
