"""The documentation site builds, and the code it points at still exists.

`mkdocs build --strict` turns every warning (a broken link between pages, a missing
anchor, a page left out of the navigation) into an error. The reference checks read the
README and every page under docs/ for paths, dotted modules and config options, so a file
moved or renamed in the code fails here instead of leaving the manual pointing at nothing.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "astrorestore"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# A path into the repository: src/astrorestore/..., bench/..., configs/..., tests/..., sweeps/...
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:src/astrorestore|bench|configs|tests|sweeps)/[\w./*{},-]*)"
)
# A package-relative module path such as `nets/bounded.py` or `inference/psf_cores.py`.
PACKAGE_FILE = re.compile(r"(?<![\w./-])((?:[a-z_]+/)+[a-z_0-9]+\.py)\b")
# A dotted module (and optionally one name in it), e.g. astrorestore.data.augment.Augment.
DOTTED = re.compile(r"(?<![\w.])(astrorestore(?:\.\w+)+)")
# A config-group choice on a command line or in prose, e.g. `model=n2v` or `data=jwst`.
CHOICE = re.compile(r"(?<![\w./-])([a-z_]+(?:/[a-z_]+)?)=([A-Za-z_][\w]*)")

# A Markdown link to a file of the repository, with an optional anchor: [text](docs/x.md#anchor).
LINK = re.compile(r"\]\((?!https?:|mailto:)([^)#\s]*)(?:#([^)\s]+))?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.MULTILINE)

# Outputs that benches and runs write (ignored by git), not files of the repository.
GENERATED = ("bench/results/",)


def _documents_text() -> list[tuple[Path, str]]:
    return [(path, path.read_text(encoding="utf-8")) for path in DOCUMENTS]


def _clean(reference: str) -> str:
    # Prose punctuation after a path is not part of it.
    return reference.rstrip(".,:;)")


def _exists(reference: str) -> bool:
    if "{" in reference:  # bench/results/faint_flux.{md,json,png}: one name per choice
        head, rest = reference.split("{", 1)
        choices, tail = rest.split("}", 1)
        return all(_exists(head + choice + tail) for choice in choices.split(","))
    if "*" in reference:
        return any(ROOT.glob(reference))
    return (ROOT / reference).exists()


@cache
def _top_level_names(module_file: Path) -> frozenset[str]:
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return frozenset(names)


def _dotted_problem(dotted: str) -> str | None:
    """Why `astrorestore.x.y[.Name]` does not resolve to a file (and a name in it), or None."""
    parts = dotted.split(".")[1:]
    where = PACKAGE
    for index, part in enumerate(parts):
        if (where / part).is_dir() and (where / part / "__init__.py").exists():
            where = where / part
            continue
        if (where / f"{part}.py").exists():
            module_file = where / f"{part}.py"
            rest = parts[index + 1 :]
            if rest and rest[0] not in _top_level_names(module_file):
                return f"{rest[0]!r} is not defined in {module_file.relative_to(ROOT)}"
            return None
        if where != PACKAGE and part in _top_level_names(where / "__init__.py"):
            return None  # a name re-exported by the package
        return f"no module or package {part!r} in {where.relative_to(ROOT)}"
    return None


def _slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading; GitHub's agrees for plain text."""
    text = re.sub(r"[`*]", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(markdown_file: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", markdown_file.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_slug(heading) for heading in HEADING.findall(text)}


def test_docs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs / mkdocs-material not installed (pip install -e .[dev])")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "index.html").exists()


def _mentions(pattern: re.Pattern[str]) -> Iterator[tuple[str, re.Match[str], str]]:
    """(document, match, its text) for every match of `pattern` in the README and docs/."""
    for document, text in _documents_text():
        for match in pattern.finditer(text):
            yield str(document.relative_to(ROOT)), match, text


def _is_repository_file(match: re.Match[str], text: str) -> bool:
    reference = _clean(match.group(1))
    placeholder = text[match.end() : match.end() + 1] == "<"  # tests/unit/test_<module>.py
    return placeholder or reference.startswith(GENERATED) or _exists(reference)


def _is_package_file(match: re.Match[str]) -> bool:
    reference = match.group(1)
    return (ROOT / reference).exists() or (PACKAGE / reference).exists()


def test_repository_paths_in_docs_exist() -> None:
    missing = [
        f"{where}: {match.group(1)}"
        for where, match, text in _mentions(REPO_PATH)
        if not _is_repository_file(match, text)
    ]
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


def test_package_module_files_in_docs_exist() -> None:
    # `nets/bounded.py` is read from the repository root or from src/astrorestore/.
    missing = [
        f"{where}: {match.group(1)}"
        for where, match, _ in _mentions(PACKAGE_FILE)
        if not _is_package_file(match)
    ]
    assert not missing, "module files named in the docs that do not exist:\n" + "\n".join(missing)


def test_dotted_modules_in_docs_resolve() -> None:
    problems = [
        f"{where}: {match.group(1)}: {problem}"
        for where, match, _ in _mentions(DOTTED)
        if (problem := _dotted_problem(_clean(match.group(1))))
    ]
    assert not problems, "dotted modules in the docs that do not resolve:\n" + "\n".join(problems)


def test_config_choices_in_docs_exist() -> None:
    groups = {
        str(path.relative_to(ROOT / "configs"))
        for path in (ROOT / "configs").rglob("*")
        if path.is_dir()
    }
    missing = [
        f"{where}: {match.group(0)}"
        for where, match, _ in _mentions(CHOICE)
        if match.group(1) in groups
        and not (ROOT / "configs" / match.group(1) / f"{match.group(2)}.yaml").exists()
    ]
    assert not missing, "config options named in the docs that do not exist:\n" + "\n".join(missing)


def test_links_and_anchors_resolve() -> None:
    # MkDocs checks the links between pages; this also covers the README, which it never builds.
    broken = []
    for document, text in _documents_text():
        for target, anchor in LINK.findall(text):
            path = (document.parent / target).resolve() if target else document
            if not path.exists():
                broken.append(f"{document.relative_to(ROOT)}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{document.relative_to(ROOT)}: {target}#{anchor}")
    assert not broken, "links in the docs that lead nowhere:\n" + "\n".join(broken)


def test_readme_is_a_short_manual() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    # The two commands for a fresh machine open the README, and CI runs the second.
    assert "pip install -r requirements.txt && python train.py" in readme
    assert "pip install -r requirements.txt && python -m pytest" in readme
    assert (
        "pip install -r requirements.txt && python -m pytest" in (ROOT / ".ci" / "run").read_text()
    )
