"""Dataset loaders: the ESC-50 CSV layout, a folder per class, and DCASE strong labels.

Audio is decoded by the runtime's own reader (:func:`realtime.sources.read_audio`) and resampler
(:class:`realtime.resample.StreamingResampler`) to the front end's rate (mono float32), see :func:`read_audio_at`.
A corrupt, unreadable or missing file is logged by name and skipped; :class:`DecodeReport` counts them, so
a bad file never stops a long run and never disappears silently.

Example:
    >>> ds = load_esc50("../shared/data/esc50", folds=[4], licenses=("CC0", "CC-BY"))  # doctest: +SKIP
    >>> len(ds.labels), ds.items[0].label  # doctest: +SKIP
    (50, 0)
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from realtime.errors import AudioError, ConfigError
from realtime.resample import StreamingResampler
from realtime.sources import read_audio

__all__ = [
    "ClipItem", "ClipDataset", "StrongLabel", "DecodeReport", "AUDIO_EXTENSIONS", "SHIPPABLE_LICENSES",
    "read_audio_at", "decode_items", "load_esc50", "load_folder", "read_dcase_tsv", "write_dcase_tsv",
    "load_dcase",
]

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")
# Licences whose clips may go into weights that the project ships (no non-commercial restriction).
SHIPPABLE_LICENSES = ("CC0", "CC-BY")


@dataclass(frozen=True)
class ClipItem:
    """One labelled clip: a path, its class index and optional metadata (fold, group, licence)."""

    path: Path
    label: int
    fold: int | None = None
    group: str | None = None
    license: str | None = None


@dataclass
class ClipDataset:
    """A list of :class:`ClipItem` with the label names indexing their ``label`` fields."""

    items: list[ClipItem]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class StrongLabel:
    """One row of a DCASE strong-label TSV (times in seconds)."""

    filename: str
    onset: float
    offset: float
    event_label: str


@dataclass
class DecodeReport:
    """What :func:`decode_items` could not read: the names and the count."""

    skipped: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.skipped)


def read_audio_at(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Decode a file to mono float32 at ``sample_rate`` Hz: the runtime's decoder, then its resampler.

    :func:`realtime.sources.read_audio` decodes (block by block, every check of the runtime's file input), and
    :class:`realtime.resample.StreamingResampler` brings it to ``sample_rate`` (pushed whole, then flushed), so a
    clip is the same samples in training as in ``aed detect`` and ``aed evaluate``.

    Raises:
        FileNotFoundError: the file does not exist.
        AudioError: the file is unreadable, truncated, empty, not audio, or holds NaN/Inf (the message names it).
    """
    audio, rate = read_audio(path)
    resampler = StreamingResampler(rate, sample_rate)
    if resampler.passthrough:
        return np.ascontiguousarray(audio, dtype=np.float32)
    return np.concatenate([resampler.push(audio), resampler.flush()]).astype(np.float32, copy=False)


def decode_items(items: Sequence[ClipItem], sample_rate: int = 16000
                 ) -> tuple[list[np.ndarray], list[ClipItem], DecodeReport]:
    """Decode every item (:func:`read_audio_at`), skipping (and logging by name) the unreadable or missing ones.

    Returns:
        ``(waves, kept_items, report)``: the decoded audio of the kept items, in order.
    """
    waves: list[np.ndarray] = []
    kept: list[ClipItem] = []
    report = DecodeReport()
    for item in items:
        try:
            waves.append(read_audio_at(item.path, sample_rate))
        except (AudioError, FileNotFoundError) as e:
            log.warning("skipping unreadable audio file %s (%s)", item.path.name, e)
            report.skipped.append(str(item.path))
            continue
        kept.append(item)
    if report.count:
        log.warning("skipped %d unreadable file(s) of %d", report.count, len(items))
    return waves, kept, report


def _parse_list(values: Iterable[int] | None) -> set[int] | None:
    return None if values is None else {int(v) for v in values}


def load_esc50(root: str | Path, folds: Iterable[int] | None = None,
               licenses: Iterable[str] | None = SHIPPABLE_LICENSES, csv_name: str = "esc50.csv",
               audio_dir: str = "audio") -> ClipDataset:
    """Read the ESC-50 layout (``esc50.csv`` + ``audio/``).

    Args:
        root: the folder holding ``esc50.csv`` and ``audio/``.
        folds: folds to keep (all when None).
        licenses: per-clip licences to keep (all when None); the default keeps only clips that
            shipped weights may be trained on.
        csv_name: the metadata file's name.
        audio_dir: the audio folder's name.

    Returns:
        A dataset whose labels are the category names in target order; ``group`` is ``src_file``.

    Raises:
        FileNotFoundError: there is no ``root/csv_name``.
        ConfigError: a column is missing (``license`` only when filtering by licence), or a row's fold or target
            is not an integer; the message names the file and the line.
    """
    root = Path(root)
    meta = root / csv_name
    if not meta.is_file():
        raise FileNotFoundError(f"no ESC-50 metadata at {meta} (expected columns filename, fold, target, category, "
                                f"src_file, license)")
    fold_set = _parse_list(folds)
    lic_set = None if licenses is None else set(licenses)
    rows = _read_esc50_csv(meta, need_license=lic_set is not None)
    names: dict[int, str] = {}
    for _, target, _, r in rows:
        names[target] = r["category"]
    if sorted(names) != list(range(len(names))):
        raise ConfigError(f"{meta}: the targets must number the classes 0..{len(names) - 1} without gaps, got "
                          f"{len(names)} distinct targets from {min(names)} to {max(names)}")
    labels = [names[i] for i in range(len(names))]
    items = []
    for fold, target, lic, r in rows:
        if fold_set is not None and fold not in fold_set:
            continue
        if lic_set is not None and lic not in lic_set:
            continue
        items.append(ClipItem(root / audio_dir / r["filename"], target, fold, r.get("src_file"), lic))
    return ClipDataset(items, labels)


_ESC50_COLUMNS = ("filename", "fold", "target", "category")


def _read_esc50_csv(meta: Path, need_license: bool) -> list[tuple[int, int, str | None, dict[str, str]]]:
    """The rows of an ESC-50 CSV as ``(fold, target, license, row)``; a bad header or row raises naming its line."""
    with open(meta, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in _ESC50_COLUMNS if c not in header]
        if missing:
            raise ConfigError(f"{meta}:1: no {', '.join(missing)} column(s) in the header {header}; accepted: the "
                              f"ESC-50 layout, columns {', '.join(_ESC50_COLUMNS)} (src_file, license optional)")
        if need_license and "license" not in header:
            raise ConfigError(f"{meta}:1: no license column, so clips cannot be filtered by licence; add the column "
                              f"or keep every clip (--licenses all, licenses=None)")
        rows = []
        for r in reader:
            line = reader.line_num
            values = []
            for col in ("fold", "target"):
                text = r.get(col)
                try:
                    values.append(int(text))
                except (TypeError, ValueError):
                    raise ConfigError(f"{meta}:{line}: {col} must be an integer, got {text!r}") from None
            if not r.get("filename") or r.get("category") is None:
                raise ConfigError(f"{meta}:{line}: a row needs a filename and a category, got {dict(r)}")
            rows.append((values[0], values[1], r.get("license"), r))
    return rows


def load_folder(root: str | Path, labels: Sequence[str] | None = None) -> ClipDataset:
    """Read a folder-per-class layout: ``root/<label>/*.wav|flac|ogg...``.

    Args:
        root: the folder whose sub-folders are the classes.
        labels: the label order to use (sorted sub-folder names when None).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if labels is None:
        labels = classes
    missing = set(classes) - set(labels)
    if missing:
        raise ConfigError(f"{root}: folders {sorted(missing)} are not in the label list {list(labels)}")
    index = {name: i for i, name in enumerate(labels)}
    items = []
    for name in classes:
        for p in sorted((root / name).rglob("*")):
            if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS:
                items.append(ClipItem(p, index[name], group=p.stem))
    return ClipDataset(items, list(labels))


def read_dcase_tsv(path: str | Path) -> list[StrongLabel]:
    """Read a DCASE strong-label TSV (``filename onset offset event_label``, header optional).

    Rows with an empty label (a file with no events) are kept out of the result.
    """
    out = []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or (lineno == 1 and row[0] == "filename"):
                continue
            if len(row) < 4 or row[3] == "":
                continue
            try:
                out.append(StrongLabel(row[0], float(row[1]), float(row[2]), row[3]))
            except ValueError as e:
                raise ConfigError(f"{path}:{lineno}: expected 'filename<TAB>onset<TAB>offset<TAB>event_label', "
                                 f"got {row!r}") from e
    return out


def write_dcase_tsv(path: str | Path, rows: Iterable[StrongLabel]) -> None:
    """Write a DCASE strong-label TSV with a header; times are written with millisecond precision."""
    with open(path, "w", newline="") as f:
        f.write("filename\tonset\toffset\tevent_label\n")
        for r in rows:
            f.write(f"{r.filename}\t{r.onset:.3f}\t{r.offset:.3f}\t{r.event_label}\n")


def load_dcase(audio_dir: str | Path, tsv: str | Path, labels: Sequence[str] | None = None
               ) -> tuple[ClipDataset, list[StrongLabel]]:
    """Read DCASE strong labels as clips: each event span becomes one labelled segment item.

    Returns:
        ``(dataset, rows)``: a dataset with one item per distinct file (labelled by its first event, for
        clip-level use) and the strong-label rows themselves for event-level use.
    """
    audio_dir = Path(audio_dir)
    rows = read_dcase_tsv(tsv)
    if labels is None:
        labels = sorted({r.event_label for r in rows})
    index = {name: i for i, name in enumerate(labels)}
    unknown = {r.event_label for r in rows} - set(index)
    if unknown:
        raise ConfigError(f"{tsv}: labels {sorted(unknown)} are not in the label list {list(labels)}")
    first: dict[str, int] = {}
    for r in rows:
        first.setdefault(r.filename, index[r.event_label])
    items = [ClipItem(audio_dir / name, lab, group=name) for name, lab in first.items()]
    return ClipDataset(items, list(labels)), rows
