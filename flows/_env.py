"""Environment defaults applied before Prefect is imported (see ../shared/STACK.md traps).

Only ``setdefault``: a user's or deployment's own settings always win.
"""

import os

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # the server phones home at start-up otherwise
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # first start migrates SQLite (~25 s on 2 cores)
    "PREFECT_LOGGING_LOG_PRINTS": "true",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


apply_defaults()
