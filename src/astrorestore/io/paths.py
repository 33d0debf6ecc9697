"""Turn the user's ``input=`` and ``output=`` (file, folder or glob) into (input, output) pairs."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from astrorestore.errors import UserError
from astrorestore.io.formats import (
    SUPPORTED_SUFFIXES,
    image_format,
    image_suffix,
    require_format,
    same_file,
)


def _is_supported_file(p: Path) -> bool:
    return p.is_file() and image_suffix(p) is not None


def _note_skipped(folder: Path, others: list[Path]) -> None:
    """Say which files of an input folder are not restored (hidden files go unmentioned)."""
    names = sorted(p.name for p in others if not p.name.startswith("."))
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        print(f"note: {folder}: {len(names)} file(s) skipped, not a supported image: {shown}")


def _expand_input(spec: str) -> list[Path]:
    path = Path(spec).expanduser()
    if path.is_file():
        require_format(path)
        return [path]
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file()]
        found = sorted(p for p in files if image_suffix(p) is not None)
        _note_skipped(path, [p for p in files if image_suffix(p) is None])
        if not found:
            raise UserError(
                f"input folder {path} contains no supported images ("
                + " ".join(SUPPORTED_SUFFIXES)
                + "); point input at a folder of images"
            )
        return found
    if glob.has_magic(spec):
        matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(spec)))
        found = [p for p in matches if _is_supported_file(p)]
        if not found:
            raise UserError(
                f"no supported image files match the pattern {spec!r}; check the pattern "
                "(quote it so the shell does not expand it)"
            )
        return found
    raise UserError(f"input file not found: {path}")


def resolve_io(input: str, output: str) -> list[tuple[Path, Path]]:
    """Expand ``input`` (file, folder or glob) and pair each file with its output path.

    ``output`` is a file only for a single input and a supported suffix; otherwise it is a
    folder and outputs keep their input file names. Folders are created by ``write_image``
    when the first file is written, so a failed preflight leaves nothing behind.
    """
    inputs = _expand_input(str(input))
    out = Path(str(output)).expanduser()
    out_is_file = not out.is_dir() and image_suffix(out) is not None
    if out_is_file:
        if len(inputs) != 1:
            raise UserError(
                f"input matches {len(inputs)} files but output {out} looks like a single file; "
                "pass an output folder instead"
            )
        pairs = [(inputs[0], out)]
    else:
        if out.exists() and not out.is_dir():
            raise UserError(
                f"output {out} exists and is not a folder; pass an output folder or an image file name"
            )
        pairs = [(p, out / p.name) for p in inputs]

    seen: dict[Path, Path] = {}
    for src, dst in pairs:
        if same_file(src, dst):
            raise UserError(f"output path equals the input {src}; choose another output")
        in_fmt, out_fmt = image_format(src), image_format(dst)
        if out_fmt != in_fmt:
            raise UserError(
                f"output {dst.name} is {str(out_fmt).upper()} but input {src.name} is "
                f"{str(in_fmt).upper()}; outputs keep the input format — use a matching suffix"
            )
        key = dst.resolve()
        if key in seen:
            raise UserError(
                f"inputs {seen[key]} and {src} would both be written to {dst}; "
                "restore them into separate output folders"
            )
        seen[key] = src
    return pairs
