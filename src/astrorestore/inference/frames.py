"""The frames of a run: each read from disk once, fingerprinted, and known to be done or not.

A :class:`Frame` is what a reader hands the restoration: the decoded image, the checksum of the
input file, and why it cannot be restored (an unreadable file is a failed frame, not a failed
run) or that its output already holds its restoration. Reading is a ``Dataset`` so a
``DataLoader`` with workers decodes the next FITS files while the device restores the current
one, and Lightning's predict loop can split the frames over processes.

An output records what it was made from: FITS outputs in their science header (``ARINSUM``:
SHA-256 of the input file, ``ARCKSUM``: of the checkpoint, ``ARSETSUM``: of the settings that
change pixels); formats without a header are matched through the run's manifest. An output
whose record matches is skipped, so rerunning an interrupted command restores only the rest.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from astrorestore.errors import UserError
from astrorestore.io.formats import LoadedImage, image_format, short_reason
from astrorestore.io.images import read_image

INPUT_KEY, CHECKPOINT_KEY, SETTINGS_KEY = "ARINSUM", "ARCKSUM", "ARSETSUM"


def file_checksum(path: Path) -> str:
    """SHA-256 of a file's bytes (hex), read in blocks (a checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """What an output is made from: the input file, the checkpoint and the settings."""

    input: str
    checkpoint: str
    settings: str

    def keywords(self) -> dict[str, tuple[str, str]]:
        return {
            INPUT_KEY: (self.input, "SHA-256 of the input file"),
            CHECKPOINT_KEY: (self.checkpoint, "SHA-256 of the checkpoint (or the method)"),
            SETTINGS_KEY: (self.settings, "hash of the settings that change pixels"),
        }


def checkpoint_id(ckpt_path: str | None, method: str | None) -> str:
    """The checkpoint's SHA-256, or ``method:<name>`` for a classical method."""
    if method:
        return f"method:{method}"
    path = Path(str(ckpt_path)).expanduser()
    return file_checksum(path) if path.is_file() else f"path:{path}"


def recorded_fingerprint(output: Path) -> Fingerprint | None:
    """The fingerprint a FITS output carries in one of its headers, or None."""
    if image_format(output) != "fits" or not output.is_file():
        return None
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(output, mode="readonly", lazy_load_hdus=True) as hdul:
                for hdu in hdul:
                    header = hdu.header
                    if INPUT_KEY in header:
                        return Fingerprint(
                            str(header[INPUT_KEY]),
                            str(header.get(CHECKPOINT_KEY, "")),
                            str(header.get(SETTINGS_KEY, "")),
                        )
    except Exception:  # a damaged output is not a record: it is made again
        return None
    return None


@dataclass
class FrameJob:
    """One input, its output and its truth (``report=``), numbered in the run's order."""

    index: int
    src: Path
    dst: Path
    truth: Path | None = None


@dataclass
class Frame:
    """A job after reading: the image (None when failed or already done) and its record."""

    job: FrameJob
    fingerprint: Fingerprint | None = None
    image: LoadedImage | None = None
    done_before: bool = False
    error: str | None = None
    read_s: float = 0.0

    @property
    def megapixels(self) -> float:
        return (
            0.0 if self.image is None else self.image.data.shape[0] * self.image.data.shape[1] / 1e6
        )


class FrameReader(torch.utils.data.Dataset):
    """Reads the jobs' inputs; each item is a :class:`Frame`, whatever happened to it.

    ``previous``: the fingerprints of non-FITS outputs from an earlier run's manifest.
    ``overwrite``: restore every frame even if its output records the same fingerprint.
    ``strict``: raise a frame's error instead of returning it (a run of one file).
    """

    def __init__(
        self,
        jobs: list[FrameJob],
        hdu: Any,
        checkpoint: str,
        settings: str,
        overwrite: bool = False,
        previous: dict[str, Fingerprint] | None = None,
        strict: bool = False,
    ) -> None:
        self.jobs = jobs
        self.hdu = hdu
        self.checkpoint = checkpoint
        self.settings = settings
        self.overwrite = overwrite
        self.previous = previous or {}
        self.strict = strict

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> Frame:
        job = self.jobs[index]
        start = time.perf_counter()
        frame = Frame(job)
        try:
            # Read once: the checksum and the decoder take the same bytes.
            content = job.src.read_bytes()
            digest = hashlib.sha256(content).hexdigest()
            fingerprint = Fingerprint(digest, self.checkpoint, self.settings)
            frame.fingerprint = fingerprint
            if not self.overwrite and self._done(job.dst, fingerprint):
                frame.done_before = True
            else:
                frame.image = read_image(job.src, hdu=self.hdu, content=content)
        except Exception as exc:
            if self.strict:
                raise
            frame.error = frame_error(job.src, exc)
        frame.read_s = time.perf_counter() - start
        return frame

    def _done(self, output: Path, fingerprint: Fingerprint) -> bool:
        recorded = recorded_fingerprint(output)
        if recorded is None and output.is_file():
            recorded = self.previous.get(str(output))
        return recorded == fingerprint


def frame_error(src: Path, exc: BaseException) -> str:
    """One line for the manifest: a UserError's own message (naming the file), else the
    exception's first line."""
    message = str(exc).strip() if isinstance(exc, UserError) else short_reason(exc)
    message = message.splitlines()[0] if message else type(exc).__name__
    return message if str(src) in message else f"{src}: {message}"


def as_is(item: Any) -> Any:
    """A DataLoader collate that hands each frame over unchanged (one frame per item)."""
    return item


def frame_loader(reader: torch.utils.data.Dataset, workers: int) -> torch.utils.data.DataLoader:
    """Frames in order, the next ones read by ``workers`` processes while one is restored."""
    return torch.utils.data.DataLoader(
        reader,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=as_is,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )
