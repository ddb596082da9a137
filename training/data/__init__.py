"""Training data: the dataset format, readers, spatial splits, builders and a synthetic world.

``python -m training.data build | synth | stats | dsm-check``; see ``__main__.py``.
"""

from __future__ import annotations

from .collate import collate_samples
from .format import DatasetFormatError, DatasetInfo, read_manifest
from .reader import ChipDataset, ShardedChipDataset
from .writer import DatasetWriter, SampleRecord

__all__ = [
    "ChipDataset",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetWriter",
    "SampleRecord",
    "ShardedChipDataset",
    "collate_samples",
    "read_manifest",
]
