"""``aed devices``: list audio input devices."""
from __future__ import annotations

import json

#: What to try when PortAudio sees no input device (printed under "no input devices found").
NO_DEVICES_HINT = """\
  - is a sound server running and reachable from this shell? check with `pactl info` (PulseAudio/PipeWire)
    or `arecord -l` (ALSA); on Debian, PortAudio reaches PulseAudio through libasound2-plugins
  - a device that is not listed can still be tried by index or name: aed listen --device N
  - no microphone at all: replay a file through the live path with aed listen --source FILE
    (make run ARGS="--source FILE"), or detect events in files with aed detect FILE..."""


def register(sub) -> None:
    p = sub.add_parser("devices", help="list audio input devices")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from realtime.capture import list_input_devices

    devs = list_input_devices()
    if args.json:
        print(json.dumps(devs, indent=2))
        return 0
    if not devs:
        print("no input devices found")
        print(NO_DEVICES_HINT)
        return 0
    print(f"{'':1} {'index':>5}  {'channels':>8}  {'rate':>7}  {'host API':<12} name")
    for d in devs:
        mark = "*" if d["default"] else " "
        print(f"{mark} {d['index']:>5}  {d['channels']:>8}  {int(d['default_samplerate']):>7}  {d['hostapi']:<12} "
              f"{d['name']}")
    return 0
