"""Prefect flows of the AGB pipeline. Engines live in compositing/, labels/, training/ (no Prefect there).

Run one: ``python -m flows run <flow-name> --params FILE.json``; list them: ``python -m flows list``.
"""

from flows import _env, _procs  # noqa: F401  (_env: environment defaults before prefect is imported)

_procs.install()  # the ephemeral Prefect server dies with the run that started it (even on kill -9)

__version__ = "0.1.0"
