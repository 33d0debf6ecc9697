"""Random streams for datasets, one per process: DataLoader workers and DDP ranks differ.

A numpy generator is created lazily in each process (each worker, or the main process) from
``torch.initial_seed()`` and the rank, then consumed item by item. Under
``L.seed_everything(s, workers=True)`` the workers' initial seeds, hence the draws, are
reproducible; fresh workers every epoch (``persistent_workers=False``) get fresh seeds, and with
``num_workers=0`` the one stream simply continues, so epochs differ either way.
"""

from __future__ import annotations

import os

import numpy as np
import torch


class PerProcessRng:
    """Mixin: ``self._generator()`` is this process's numpy generator (see the module doc).

    Set ``rank`` (the data module does, in ``train_dataloader``) so ranks draw differently.
    """

    rank = 0
    _rng: np.random.Generator | None = None
    _rng_key: tuple[int, int, int] | None = None

    def _generator(self) -> np.random.Generator:
        # Keyed on the process and torch seed: a forked worker must not reuse the parent's
        # stream, and re-seeding torch (seed_everything) restarts it.
        key = (os.getpid(), torch.initial_seed(), self.rank)
        if self._rng is None or key != self._rng_key:
            self._rng = np.random.default_rng(np.random.SeedSequence([key[1], key[2]]))
            self._rng_key = key
        return self._rng
