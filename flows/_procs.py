"""Prefect's ephemeral API server dies with the run that started it.

Without a ``PREFECT_API_URL`` a flow run starts a temporary API server in a child process
(``prefect.server.api.server.SubprocessASGIServer``: ``python -m uvicorn ... create_app``). It is stopped at
normal exit (``atexit``), but a ``kill -9`` of the flow process (an OOM kill, a worker's hard cancel) leaves
it running (about 230 MB each). Right after Prefect spawns it, the server is registered with the
process's watchdog (:func:`core.procs.on_death`), which stops it (SIGTERM, SIGKILL after 5 s) when the
flow process goes away. The hook is installed when Prefect's server module is imported (no cost for runs
against a real server), and needs no change to the command line.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any

from core.procs import on_death

_MODULE = "prefect.server.api.server"
def patch(module: Any) -> None:
    """Wrap ``SubprocessASGIServer._run_uvicorn_command`` of ``module`` (once) so every server it spawns is
    watched."""
    cls = module.SubprocessASGIServer
    original = cls._run_uvicorn_command
    if getattr(original, "_agb_watched", False):
        return

    def run_uvicorn_command(self: Any) -> Any:
        proc = original(self)
        on_death(kill=proc.pid, marker="uvicorn")
        return proc

    run_uvicorn_command._agb_watched = True  # type: ignore[attr-defined]
    cls._run_uvicorn_command = run_uvicorn_command


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.inner.exec_module(module)  # type: ignore[attr-defined]
        patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != _MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


def install() -> None:
    """Watch every ephemeral server this process starts (patches now if Prefect's server module is loaded)."""
    if _MODULE in sys.modules:
        patch(sys.modules[_MODULE])
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
