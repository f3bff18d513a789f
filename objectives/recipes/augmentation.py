"""The augmentation recipe: ``augment_flip`` (each training image flipped left to right with
probability 1/2) and ``augment_shift`` (each moved by up to that many pixels each way, the
border filled with zeros). Both are done by the feed (``objectives.feed.Augment``), in an
order that follows from the trial's seed and the epoch alone, so a resumed training sees the
images the uninterrupted one would have; validation and test images are never augmented.
"""

from __future__ import annotations

from typing import Any

from objectives.entries import Categorical, Entries, Numeric, Shift
from objectives.recipes.base import Recipe


class AugmentationEntries(Entries):
    """``augment_flip`` and ``augment_shift`` (pixels)."""

    augment_flip: Categorical[bool] = Categorical[bool](value=False)
    augment_shift: Numeric[Shift] = Numeric[Shift](value=0)


class Augmentation(Recipe):
    """Training images flipped and shifted, each independently."""

    entries = AugmentationEntries
    # part of CIFAR-10's recipe (benchmarks/recipe_ablation.py); on 8x8 digits flips with
    # shifts of 2 pixels cost the deep reference 0.31, flips alone 0.02 (docs/benchmarks.md)
    reference = {"augment_flip": True, "augment_shift": 2}

    def feed(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"flip": bool(params.get("augment_flip", False)),
                "shift": int(params.get("augment_shift", 0))}
