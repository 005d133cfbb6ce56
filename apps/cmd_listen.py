"""``aed listen``: detect events live from a microphone (or a file replayed in real time)."""
from __future__ import annotations

import json
import math
import signal
import sys

from apps.common import (
    add_detector_args, add_model_args, add_source_args, make_detector, open_engine, parse_device,
)
from apps.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("listen", help="detect events live from a microphone; JSON lines, then a summary")
    add_source_args(p)
    p.add_argument("--fast", action="store_true", help="with --source: as fast as possible, not real-time")
    add_model_args(p)
    add_detector_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from realtime.capture import MicrophoneCapture
    from realtime.pipeline import LiveRunner
    from realtime.sources import FileSource

    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise UserError(f"--duration must be a finite number of seconds greater than 0 (e.g. 10 or 2.5), "
                        f"got {args.duration}")
    if args.fast and not args.source:
        raise UserError("--fast only applies with --source FILE")
    engine = open_engine(args)
    try:
        if args.source:
            source = FileSource(args.source, realtime=not args.fast)
        else:
            source = MicrophoneCapture(device=parse_device(args.device), samplerate=args.samplerate).start()
        det = make_detector(args, engine, source.rate)      # built for the stream's rate, used as it is

        def show(e):
            print(json.dumps(e.to_dict()), flush=True)

        runner = LiveRunner(det, source, on_event=show, duration_s=args.duration)
        old = signal.getsignal(signal.SIGINT)
        try:
            runner.run_blocking()
        finally:
            signal.signal(signal.SIGINT, old)
        summary = runner.summary()
        summary["engine"] = getattr(engine, "name", type(engine).__name__)
        print(json.dumps({"summary": summary}), flush=True)
        code = 0
        if runner.error is not None:
            print(f"aed listen: error: {runner.error}", file=sys.stderr)
            code = 1
    finally:
        engine.close()
    return code
