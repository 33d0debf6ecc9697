"""The manifest of a folder run: every frame with its status, time, speed and error.

``<output folder>/manifest.json`` is rewritten atomically as frames finish (a crash leaves the
previous complete file, never half of one), so it can be read while a survey runs and after it
stops. A rerun of the same command reads it back: outputs that cannot carry a header (PNG,
``.npy``) are recognised as done through it. With several processes (``trainer=ddp``), each
writes ``manifest.rank<N>.json`` and rank 0 merges them into ``manifest.json`` at the end.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from astrorestore.errors import UserError
from astrorestore.inference.frames import Fingerprint

MANIFEST_NAME = "manifest.json"
STATUSES = ("done", "skipped", "failed")
# Rewriting the whole file after every frame is cheap for a folder, not for 10^5 frames.
_EVERY_FRAME_UP_TO = 2000
_MIN_INTERVAL_S = 5.0


@dataclass
class FrameRecord:
    """One row: ``status`` is done (restored now), skipped (its output already held this
    restoration) or failed (``error`` says why)."""

    input: str
    output: str
    status: str
    seconds: float = 0.0
    megapixels: float = 0.0
    mp_per_s: float = 0.0
    error: str | None = None
    input_sha256: str | None = None
    checkpoint_sha256: str | None = None
    settings_hash: str | None = None
    rank: int = 0  # the process that handled it (trainer=ddp)

    def fingerprint(self) -> Fingerprint | None:
        if self.input_sha256 is None:
            return None
        return Fingerprint(
            self.input_sha256, self.checkpoint_sha256 or "", self.settings_hash or ""
        )


def write_json_atomically(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_records(folder: Path) -> list[FrameRecord]:
    """The rows of ``folder``'s manifest (and of per-rank parts left by an interrupted run)."""
    rows: list[FrameRecord] = []
    for path in [folder / MANIFEST_NAME, *sorted(folder.glob("manifest.rank*.json"))]:
        try:
            frames = json.loads(path.read_text())["frames"]
            rows += [FrameRecord(**row) for row in frames]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # absent or unreadable: every output is then checked by its own header
    return rows


def previous_fingerprints(folder: Path) -> dict[str, Fingerprint]:
    """Output path -> fingerprint of the frames an earlier run restored into ``folder``."""
    known = {}
    for row in read_records(folder):
        fingerprint = row.fingerprint()
        if row.status in ("done", "skipped") and fingerprint is not None:
            known[row.output] = fingerprint
    return known


class Manifest:
    """Collects one run's (or one rank's) frame records and keeps the file up to date."""

    def __init__(self, path: Path, run: dict[str, Any], total: int) -> None:
        self.path = path
        self.run = run
        self.total = total
        self.records: list[FrameRecord] = []
        self.started = time.time()
        self._saved = 0.0

    def add(self, record: FrameRecord) -> None:
        self.records.append(record)
        if self.total <= _EVERY_FRAME_UP_TO or time.time() - self._saved > _MIN_INTERVAL_S:
            self.save()

    def counts(self) -> dict[str, int]:
        return {status: sum(r.status == status for r in self.records) for status in STATUSES}

    def summary(self) -> dict[str, Any]:
        done = [r for r in self.records if r.status == "done"]
        busy = sum(r.seconds for r in done)
        elapsed = time.time() - self.started
        return {
            **self.run,
            "frames_total": self.total,
            **{f"frames_{k}": v for k, v in self.counts().items()},
            "elapsed_s": round(elapsed, 3),
            "megapixels_restored": round(sum(r.megapixels for r in done), 3),
            # per frame: the restorations' own speed; wall: what the run achieved in all
            "mp_per_s_per_frame": round(sum(r.megapixels for r in done) / busy, 3) if busy else 0,
            "mp_per_s_wall": round(sum(r.megapixels for r in done) / elapsed, 3) if elapsed else 0,
        }

    def save(self) -> None:
        payload = {"run": self.summary(), "frames": [asdict(r) for r in self.records]}
        write_json_atomically(self.path, payload)
        self._saved = time.time()


def merge_rank_manifests(folder: Path, run: dict[str, Any], total: int) -> Manifest:
    """Rank 0's merge of every ``manifest.rank<N>.json`` into ``manifest.json``."""
    parts = sorted(folder.glob("manifest.rank*.json"))
    merged = Manifest(folder / MANIFEST_NAME, run, total)
    longest = 0.0
    for path in parts:
        data = json.loads(path.read_text())
        merged.records += [FrameRecord(**row) for row in data["frames"]]
        longest = max(longest, float(data["run"].get("elapsed_s", 0.0)))
    merged.started = time.time() - longest  # the ranks ran side by side
    merged.records.sort(key=lambda r: r.input)
    merged.save()
    for path in parts:
        path.unlink(missing_ok=True)
    return merged


def outcome_line(path: Path, counts: dict[str, int]) -> str:
    """The run's closing line: where the manifest is and what it counts."""
    return (
        f"manifest: {path} ({counts.get('done', 0)} restored, {counts.get('skipped', 0)} already "
        f"done, {counts.get('failed', 0)} failed)"
    )


def failed_frames_error(failures: list[str], total: int, path: Path | None) -> UserError:
    """The one-line error a run with failed frames ends with."""
    where = f"; each is listed in {path}" if path is not None else ""
    return UserError(f"{len(failures)} of {total} frame(s) failed{where}; the first: {failures[0]}")
