"""The repository stands alone: every document the code and docs cite is in the repository.

Code comments cite ``docs/protocol.md §N`` for the wire contract, ``docs/compat.md`` for
differences from vminitd and ``docs/architecture.md`` for the internal design. These tests
fail on a citation of a document that is not here (the external vminitd spec, a design or
style guide kept elsewhere, bare section numbers of that spec), on a document under
``docs/`` that does not exist, and on a ``protocol.md §N`` that names no section of protocol.md.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PROTOCOL = DOCS / "protocol.md"

SCANNED_DIRS = ("trinit", "tests", "bench", "docs", "scripts", "examples", "proto")
SCANNED_FILES = ("README.md",)
SUFFIXES = {".py", ".pyi", ".md", ".proto", ".sh", ".c", ".toml", ".txt"}

# Documents that live outside the repository. The patterns are built from pieces so that
# this file does not match itself.
_SPEC = "spec" + r"(?:ification)?"
FOREIGN = {
    "the external vminitd spec": re.compile(r"vminitd-" + "api"),
    "a design document outside docs/": re.compile(r"(?<![\w/-])" + "design" + r"\.md"),
    "a section of the design document": re.compile(r"\b" + "design" + r' "[A-Z]'),
    "a style guide outside docs/": re.compile(r"(?<![\w/-])" + "style" + r"\.md"),
    "a bare spec section number": re.compile(rf"\b{_SPEC}\s+(?:sections?\s+)?\d", re.I),
    "a bare section number": re.compile(r"\((?:sections?)\s+\d", re.I),
    "a spec quirk label": re.compile(r"\b" + "spec" + r"\s+QUIRK\b"),
}

DOC_PATH = re.compile(r"\bdocs/([\w.-]+\.md)\b")
RELATIVE_LINK = re.compile(r"\]\(([\w.-]+\.md)(?:#[^)]*)?\)")
HEADING = re.compile(r"^#{2,3} §(\d+(?:\.\d+)?)\b", re.M)
CITATION = re.compile(r"protocol\.md[`\]()\w./]*\s+(§[\d.]+(?:(?:,\s*|\s+and\s+)§[\d.]+)*)")
SECTION_REF = re.compile(r"§(\d+(?:\.\d+)*)")


def _scanned() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES]
    for directory in SCANNED_DIRS:
        for path in sorted((ROOT / directory).rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                files.append(path)
    return files


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _where(path: Path, text: str, offset: int) -> str:
    return f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, offset) + 1}"


def _sections() -> set[str]:
    return set(HEADING.findall(_text(PROTOCOL)))


def test_no_reference_points_outside_the_repository() -> None:
    this = Path(__file__).resolve()
    found = [
        f"{_where(path, text, match.start())}: {what}: {match.group(0)!r}"
        for path in _scanned()
        if path.resolve() != this
        for text in [_text(path)]
        for what, pattern in FOREIGN.items()
        for match in pattern.finditer(text)
    ]
    assert not found, "cite docs/protocol.md, docs/compat.md or docs/architecture.md:\n" + (
        "\n".join(found)
    )


def test_every_cited_document_exists() -> None:
    missing = []
    for path in _scanned():
        text = _text(path)
        for match in DOC_PATH.finditer(text):
            if not (DOCS / match.group(1)).is_file():
                missing.append(f"{_where(path, text, match.start())}: docs/{match.group(1)}")
        if path.parent == DOCS and path.suffix == ".md":
            for match in RELATIVE_LINK.finditer(text):
                if not (DOCS / match.group(1)).is_file():
                    missing.append(f"{_where(path, text, match.start())}: {match.group(1)}")
    assert not missing, "documents cited but not in the repository:\n" + "\n".join(missing)


def test_protocol_sections_are_numbered() -> None:
    sections = _sections()
    assert {str(n) for n in range(1, 11)} <= sections
    assert {"4.1", "4.21", "5.5", "6.3", "7.3", "8.4"} <= sections


def test_every_cited_protocol_section_exists() -> None:
    sections = _sections()
    unknown = []
    for path in _scanned():
        text = _text(path)
        if path == PROTOCOL:
            spans = [(m.start(), m.group(0)) for m in SECTION_REF.finditer(text)]
        else:
            spans = [(m.start(), m.group(1)) for m in CITATION.finditer(text)]
        for offset, span in spans:
            for number in SECTION_REF.findall(span):
                if number.rstrip(".") not in sections:
                    unknown.append(f"{_where(path, text, offset)}: §{number}")
    assert not unknown, "protocol.md has no such section:\n" + "\n".join(unknown)
