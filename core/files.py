"""Atomic writes and output containment.

Every heavy output is written to a temp name in its folder and renamed (:func:`atomic_path`); outputs that
must appear together or not at all are staged and committed at once (:class:`Staging`). Every output path
built from something a run reads (raster tags, STAC ids, file names) goes through :func:`contained`, which
refuses anything that would leave the run's ``output_dir``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``final_path``; rename it into place when the block succeeds.

    On error the temp file (or folder) is removed and ``final_path`` is left untouched.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    _remove(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write of {final}: nothing was written to {tmp}")
        replace_into(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


# every temp name of the project: ".<final name>.<tmp|staged>-<pid>[.<ext>...]" beside its final path (the
# composite's scratch raster ".<cog>.tmp-<pid>.scratch.tif" included)
TEMP_NAME = re.compile(r"^\.(?P<final>.+?)\.(?:tmp|staged)-(?P<pid>\d+)(?:\.[A-Za-z0-9]{1,12}){0,3}$")


def temp_sibling(final: str | os.PathLike[str], kind: str = "tmp", ext: str = "") -> Path:
    """The temp name of ``final`` for this process: ``.<name>.<kind>-<pid><ext>`` in the same folder (hidden,
    never matched by the ``*.tif``/``*.npy`` globs of readers; ``ext`` for writers that insist on a suffix,
    e.g. ``.npy``). :func:`clean_dead_temps` recognises these names and their owning pid."""
    final = Path(final)
    return final.with_name(f".{final.name}.{kind}-{os.getpid()}{ext}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_dead_temps(root: str | os.PathLike[str], skip: tuple[str, ...] = ()) -> list[Path]:
    """Remove the temp files/folders (:data:`TEMP_NAME`) under ``root`` whose owning process is gone;
    returns what was removed. A live process's temps (this one's included) are never touched; a temp
    whose pid was reused by an unrelated live process is kept too (removed by a later run). ``skip``: folder
    names not descended into (e.g. a sample world served read-only)."""
    return _remove_temps(root, lambda pid: not _alive(pid), skip)


def remove_own_temps(root: str | os.PathLike[str], pid: int | None = None) -> list[Path]:
    """Remove the temp files/folders (:data:`TEMP_NAME`, any suffix) under ``root`` written by this process
    (or by ``pid``); returns what was removed."""
    mine = os.getpid() if pid is None else pid
    return _remove_temps(root, lambda p: p == mine)


def _remove_temps(root: str | os.PathLike[str], owned: Callable[[int], bool], skip: tuple[str, ...] = ()
                  ) -> list[Path]:
    """Remove every temp (:data:`TEMP_NAME`) under ``root`` whose pid ``owned`` accepts (a temp folder is
    removed whole, not descended into); returns what was removed."""
    removed: list[Path] = []
    base = Path(root)
    if not base.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in [*filenames, *list(dirnames)]:
            m = TEMP_NAME.match(name)
            if m is None or not owned(int(m["pid"])):
                continue
            p = Path(dirpath) / name
            _remove(p)
            removed.append(p)
            if name in dirnames:
                dirnames.remove(name)
    return removed


def remove_temps_of(folder: str | os.PathLike[str], pids: set[int]) -> list[Path]:
    """Remove the temps (:data:`TEMP_NAME`) directly in ``folder`` written by the processes ``pids``, known
    to be gone (e.g. Dask workers lost during a run, whose pids mean nothing in this process's namespace);
    returns what was removed."""
    base = Path(folder)
    if not pids or not base.is_dir():
        return []
    removed = []
    for p in base.iterdir():
        m = TEMP_NAME.match(p.name)
        if m is not None and int(m["pid"]) in pids:
            _remove(p)
            removed.append(p)
    return removed


CRASH_ENV = "AGB_CRASH_AT_RENAME"  # fault injection for the crash trials, see replace_into
_renames: dict[str, int] = {}


def replace_into(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` onto ``final`` (a folder replaces a folder). The one rename of every atomic write.

    Crash trials (``sampleworld.crashtrials``) set ``AGB_CRASH_AT_RENAME=<path part>:<k>:<before|after>``:
    the process kills itself (SIGKILL) just before or after the k-th rename whose final path contains
    ``<path part>``. Unset (always, outside the trials) it costs one dictionary lookup.
    """
    spec = os.environ.get(CRASH_ENV)
    if spec:
        _crash_point(spec, final, "before")
    if tmp.is_dir() and final.is_dir():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if spec:
        _crash_point(spec, final, "after")


def _crash_point(spec: str, final: Path, moment: str) -> None:
    part, k, when = spec.rsplit(":", 2)
    if part not in str(final):
        return
    if moment == "before":
        _renames[part] = _renames.get(part, 0) + 1
    if when == moment and _renames.get(part) == int(k):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically; returns the final path."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, naming the file in the error when it is not valid JSON."""
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON: {exc}") from exc


class UnsafePathError(ValueError):
    """An output path that would leave its ``output_dir`` (or a name that is not a plain file name)."""


_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\:]")


def safe_component(name: object, what: str = "name") -> str:
    """``name`` when it is a plain, non-empty file or folder name (no ``/``, ``\\``, ``:``, control
    characters, ``.``/``..`` or leading dot-dot), else :class:`UnsafePathError` naming ``what``."""
    s = str(name)
    if not s or s in (".", "..") or "/" in s or _BAD_CHARS.search(s) or s.startswith(".."):
        raise UnsafePathError(f"{what} {s!r} is not a plain file name (path separators, '..', ':' and control "
                              "characters are refused): it must not decide where outputs are written")
    return s


def contained(output_dir: str | os.PathLike[str], *parts: object, what: str = "output path") -> Path:
    """``output_dir / parts...`` after checking every part with :func:`safe_component` (a part may hold
    ``/``-separated plain names) and that the resolved path stays under the resolved ``output_dir``
    (symbolic links included); else :class:`UnsafePathError` naming the parts and ``output_dir``."""
    root = Path(output_dir)
    comps: list[str] = []
    for part in parts:
        text = os.fspath(part) if isinstance(part, os.PathLike) else str(part)
        if text.startswith("/"):
            raise UnsafePathError(f"{what}: {text!r} is an absolute path; outputs must stay under {root}")
        comps += [safe_component(c, what) for c in text.split("/") if c != ""] or [safe_component("", what)]
    path = root.joinpath(*comps)
    base = root.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise UnsafePathError(f"{what} {path} resolves to {resolved}, outside the output folder {base}")
    return path


class Staging:
    """Outputs that replace their earlier versions together or not at all.

    :meth:`path` hands out a temp name beside each final path; :meth:`commit` renames them all into place
    (after the whole stage succeeded); :meth:`discard` removes them. Use :func:`staged`.
    """

    def __init__(self) -> None:
        self.pairs: list[tuple[Path, Path]] = []

    def path(self, final: str | os.PathLike[str]) -> Path:
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(final, kind="staged")
        _remove(tmp)
        self.pairs.append((tmp, final))
        return tmp

    def commit(self) -> None:
        missing = [str(final) for tmp, final in self.pairs if not tmp.exists()]
        if missing:
            raise FileNotFoundError(f"staged outputs were never written: {missing}")
        for tmp, final in self.pairs:
            replace_into(tmp, final)
        self.pairs = []

    def discard(self) -> None:
        for tmp, _ in self.pairs:
            _remove(tmp)
        self.pairs = []


@contextlib.contextmanager
def staged() -> Iterator[Staging]:
    """A :class:`Staging` committed when the block succeeds and discarded when it raises."""
    st = Staging()
    try:
        yield st
    except BaseException:
        st.discard()
        raise
    st.commit()
