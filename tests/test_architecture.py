"""Layout rules that keep the code base readable (checked on the source, not on behaviour):

* no Prefect import outside ``flows/``; engines are plain libraries;
* no module over 500 lines and no function over 60 lines outside ``tests/``;
* no nodata literal (-9999, or the -1.0 label nodata) outside ``core/constants.py``.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("core", "compositing", "labels", "chips", "training", "sampleworld")
CODE_DIRS = (*ENGINES, "flows", "benchmarks", "scripts")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _files(dirs: tuple[str, ...]) -> list[Path]:
    return sorted(p for d in dirs for p in (REPO / d).rglob("*.py"))


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO))


def test_no_prefect_outside_flows() -> None:
    bad = []
    for path in _files(ENGINES):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{_rel(path)}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in ("prefect", "prefect_dask")]
    assert not bad, "\n".join(bad)


def test_module_and_function_sizes() -> None:
    bad = []
    for path in _files(CODE_DIRS):
        text = path.read_text()
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES:
            bad.append(f"{_rel(path)}: {n} lines > {MAX_MODULE_LINES}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    bad.append(f"{_rel(path)}:{node.lineno} {node.name}() has {length} lines > {MAX_FUNCTION_LINES}")
    assert not bad, "\n".join(bad)


def nodata_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every unary ``-9999``/``-9999.0`` literal, and of ``-1.0`` on a line about label
    nodata (one that mentions nodata, ignore or label), in Python source (strings and comments excluded)."""
    found = []
    lines = source.splitlines()
    skip = (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)
    toks = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in skip]
    for before, minus, tok in zip([None, *toks], toks, toks[1:], strict=False):
        if tok.type != tokenize.NUMBER or minus.type != tokenize.OP or minus.string != "-":
            continue
        if before is not None and (before.type in (tokenize.NAME, tokenize.NUMBER, tokenize.STRING)
                                   or before.string in (")", "]", "}")):
            continue  # binary minus: ``x - 1.0``
        text = tok.string.replace("_", "").lower()
        value = None if text.startswith(("0x", "0o", "0b")) or "j" in text else float(text)
        line = lines[tok.start[0] - 1].lower()
        if value == 9999 or (value == 1 and "." in text and any(w in line for w in ("nodata", "ignore", "label"))):
            found.append((tok.start[0], f"-{tok.string}"))
    return found


@pytest.mark.parametrize(("source", "expected"), [
    ("x = -9999\n", [(1, "-9999")]),
    ("x = -9999.0  # nodata\n", [(1, "-9999.0")]),
    ("f(nodata=-1.0)\n", [(1, "-1.0")]),
    ("LABEL_IGNORE = -1.0\n", [(1, "-1.0")]),
    ("a[-1]\nb = x - 1\nc = abs(s - 1.0)\nd = max(-1.0, v)\n", []),
    ("f(x)-9999\n", []),
    ('"""-9999 in a docstring"""\n', []),
    ("y = 9999 - 1\n", []),
])
def test_nodata_literal_scanner(source: str, expected: list[tuple[int, str]]) -> None:
    assert nodata_literals(source) == expected


def test_no_nodata_literals_outside_constants() -> None:
    bad = []
    for path in _files(CODE_DIRS):
        if _rel(path) == "core/constants.py":
            continue
        bad += [f"{_rel(path)}:{line} {text}" for line, text in nodata_literals(path.read_text())]
    assert not bad, "\n".join(bad)
