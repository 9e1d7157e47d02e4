"""Training sampler that can start part-way through its stream (to resume a run)."""
import itertools
from typing import Optional

from detectron2.data.samplers import TrainingSampler


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's infinite, shuffled, per-process TrainingSampler, skipping the first
    ``skip`` indices of this process's stream. With the same seed, a resumed run reads the
    images that the uninterrupted run would have read next.
    """

    def __init__(self, size: int, *, seed: Optional[int] = None, skip: int = 0):
        super().__init__(size, shuffle=True, seed=seed)
        self._skip = skip

    def __iter__(self):
        yield from itertools.islice(super().__iter__(), self._skip, None)
