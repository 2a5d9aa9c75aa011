"""Training configuration (one frozen dataclass; defaults defined once) and the run's torch scope.

:func:`torch_run_scope` sets torch's thread count for a run and restores it, and the global RNG states
(torch, NumPy, ``random``) touched by the run, afterwards: two runs in one long-lived worker process do not
affect each other or the rest of the process.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from core.contracts import Contract
from training.losses import LOSSES

PRESETS = ("tiny", "swin_t", "swin_b")
SCHEDULES = (None, "cosine", "plateau", "constant")


@dataclass(frozen=True)
class TrainConfig(Contract):
    """How to train (or fine-tune) the biomass model on a chips export.

    ``model``: preset (``tiny``, ``swin_t``, ``swin_b`` = granite); None: ``tiny``, or the preset of a
    project ``init_checkpoint``. ``lr`` (AdamW) None: the preset's default (tiny 3e-3, granite swin_b
    3.1e-4). ``schedule``: ``cosine`` (per step, linear warm-up), ``plateau`` (ReduceLROnPlateau on the
    validation loss, as granite) or ``constant``; None: constant for tiny, else cosine. ``steps_per_epoch``
    None: one pass over the train chips (at least 8 batches); ``max_steps_per_epoch`` caps it.
    ``crop_size`` None: 64 px crops on labelled pixels for tiny, else the chip size. ``cpu_threads`` None:
    1 on machines with <= 2 cores, else torch's default. ``time_limit_s``: stop after that many seconds.
    ``freeze_backbone``: train the decoder and head only. ``init_checkpoint``: a local checkpoint (never
    downloaded). ``allow_partial_init``: accept a checkpoint that does not fill every weight.
    ``norm_mean``/``norm_std``: per-band input statistics (raw HLS units x 10000) for a foreign
    ``init_checkpoint`` or training from scratch; None: granite's published ones for a foreign checkpoint,
    the export's training split from scratch; a project checkpoint always keeps its own (training.norm).
    """

    model: str | None = None
    epochs: int = 10
    batch_size: int = 8
    lr: float | None = None
    init_checkpoint: str | None = None
    freeze_backbone: bool = False
    seed: int = 0
    device: str = "auto"
    num_workers: int = 2
    patience: int = 10
    loss: str = "rmse"
    max_steps_per_epoch: int | None = None
    steps_per_epoch: int | None = None
    weight_decay: float = 0.033
    schedule: str | None = None
    warmup_steps: int | None = None
    grad_clip: float = 1.0
    crop_size: int | None = None
    bands: tuple[str, ...] | None = None
    augment: bool = True
    resume: bool = True
    compile: bool = False
    allow_partial_init: bool = False
    time_limit_s: float | None = None
    cpu_threads: int | None = None
    output_lr_mult: float | None = None
    norm_mean: tuple[float, ...] | None = None
    norm_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.model is not None and self.model not in PRESETS:
            raise ValueError(f"model must be one of {PRESETS}, got {self.model!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be cosine, plateau or constant, got {self.schedule!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (the decoder's 1x1 pyramid BatchNorm needs 2 samples), "
                             f"got {self.batch_size}")
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(self.bands))
        if (self.norm_mean is None) != (self.norm_std is None):
            raise ValueError("give both norm_mean and norm_std (one value per band), or neither")
        for name in ("norm_mean", "norm_std"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))


def default_cpu_threads() -> int:
    """1 on machines with <= 2 cores (shared 2-core machines collapse by ~30x with 2 spinning OpenMP threads
    under load, measured), else torch's current setting."""
    return 1 if (os.cpu_count() or 1) <= 2 else torch.get_num_threads()


@contextlib.contextmanager
def torch_run_scope(threads: int | None) -> Iterator[int]:
    """Run with ``threads`` torch CPU threads (None: :func:`default_cpu_threads`); restore the thread
    count and the global torch/NumPy/``random`` RNG states on exit. Yields the thread count used."""
    saved_threads = torch.get_num_threads()
    saved_torch = torch.get_rng_state()
    saved_cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    saved_np = np.random.get_state()
    saved_py = random.getstate()
    torch.set_num_threads(max(1, int(threads if threads is not None else default_cpu_threads())))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(saved_threads)
        torch.set_rng_state(saved_torch)
        if saved_cuda is not None:
            torch.cuda.set_rng_state_all(saved_cuda)
        np.random.set_state(saved_np)
        random.setstate(saved_py)
