"""Prefect flows of the AGB pipeline. Engines live in compositing/, labels/, training/ (no Prefect there).

Run one: ``python -m flows run <flow-name> --params FILE.json``; list them: ``python -m flows list``.
"""

from flows import _env  # noqa: F401  (environment defaults before prefect is imported)

__version__ = "0.1.0"
