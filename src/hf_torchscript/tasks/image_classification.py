"""Image classification: pixel values in, label logits out; tensors only (no text pre/post-processing)."""

from __future__ import annotations

from .base import PER_ROW, Task

IMAGE_CLASSIFICATION = Task(
    "image-classification", "AutoModelForImageClassification", {"logits": PER_ROW}, labels=True,
    suffixes=("ForImageClassification",),
)
