"""Attribution for CC-BY clips: the ESC-50 ``LICENSE.txt`` entries of the clips a model was trained on.

Example:
    >>> entries = license_entries("../shared/data/esc50/LICENSE.txt")  # doctest: +SKIP
    >>> entries["1-100038-A"].license  # doctest: +SKIP
    'CC-BY'
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["LicenseEntry", "license_entries", "write_attribution"]

_LINE = re.compile(r"^- \[(?P<clip>[^\]]+)\]:\s+clip derived from (?P<title>.*) \((?P<url>\S+)\) by (?P<author>.*) "
                   r"\[(?P<license>[^\]]+)\]\s*$")


@dataclass(frozen=True)
class LicenseEntry:
    """One clip's provenance: the Freesound source title, URL, author and licence."""

    clip: str
    title: str
    url: str
    author: str
    license: str


def license_entries(path: str | Path) -> dict[str, LicenseEntry]:
    """Parse ESC-50's ``LICENSE.txt``; keyed by clip id without the class suffix (``1-100038-A``)."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = _LINE.match(line.strip())
        if m:
            clip = Path(m["clip"]).stem
            out[clip] = LicenseEntry(clip, m["title"], m["url"], m["author"], m["license"])
    return out


def _clip_id(filename: str) -> str:
    # ESC-50 file names are {fold}-{src_file}-{take}-{target}.flac; LICENSE.txt names {fold}-{src_file}-{take}
    return Path(filename).stem.rsplit("-", 1)[0]


def write_attribution(license_txt: str | Path, filenames: Iterable[str], out: str | Path, title: str) -> dict[str, int]:
    """Write a Markdown attribution file for the CC-BY clips among ``filenames``; returns licence counts."""
    entries = license_entries(license_txt)
    used, counts, missing = [], {}, []
    for name in sorted(set(filenames)):
        e = entries.get(_clip_id(name))
        if e is None:
            missing.append(name)
            continue
        counts[e.license] = counts.get(e.license, 0) + 1
        if e.license.upper().startswith("CC-BY"):
            used.append((name, e))
    lines = [f"# {title}", "",
             "The shipped weights were trained on these ESC-50 clips (K. J. Piczak, \"ESC: Dataset for Environmental "
             "Sound Classification\", ACM MM 2015), each derived from a Freesound recording. Only clips whose own "
             "licence is CC0 or CC-BY were used. CC-BY clips require attribution; they are listed here with their "
             "authors and sources (from ESC-50's LICENSE.txt). CC BY: https://creativecommons.org/licenses/by/3.0/",
             "", f"Clips used by licence: {', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}.", "",
             "| ESC-50 clip | Freesound source | Author | Licence |", "|---|---|---|---|"]
    for name, e in used:
        t = e.title.replace("|", "\\|")
        lines.append(f"| {name} | [{t}]({e.url}) | {e.author.replace('|', '/')} | {e.license} |")
    if missing:
        lines += ["", f"No LICENSE.txt entry for {len(missing)} clip(s): {', '.join(missing)}"]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return counts
