"""The dataset contract.

A registered dataset is a builder ``fn(root=None, source="auto", val_size=None, split_seed=0,
augment=True, **kw) -> DatasetBundle``. Each split yields ``(x, y)`` with ``x`` a float tensor of
pixels in [0, 1] (C, H, W) and ``y`` an int label. The validation split is held out of the training
set with ``split_seed`` (budgeted evaluation sets its thresholds there, never on test data).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset


@dataclass
class DatasetBundle:
    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_size: tuple[int, int, int]
    mean: Sequence[float]
    std: Sequence[float]
    source: str  # "bundled", "system:/usr/share/...", "folder:/path"
    split_seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)  # sizes, checksums, augmentation, ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready description, written into every result file."""
        return {
            "name": self.name,
            "source": self.source,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "split_seed": self.split_seed,
            **self.info,
        }


class TensorImageDataset(Dataset):
    """In-memory uint8 images (N, C, H, W) + labels, with an optional transform on float [0,1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        assert images.dtype == torch.uint8 and images.ndim == 4, "images must be uint8 (N, C, H, W)"
        self.images, self.labels, self.transform = images, labels.long(), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i].float().div_(255.0)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])

    def subset(self, n: int | None) -> TensorImageDataset:
        """First ``n`` samples (the splits are stored stratified-shuffled, so a prefix stays balanced)."""
        if n is None or n >= len(self):
            return self
        return TensorImageDataset(self.images[:n], self.labels[:n], self.transform)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All samples as float [0,1] tensors, no augmentation (for fast evaluation)."""
        return self.images.float().div(255.0), self.labels
