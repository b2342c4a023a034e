"""Synthetic street scenes with exact Cityscapes labels, for training and evaluating MagNet here.

``scene(width, height, seed) -> (image, labels)``; ``magnet-triton synthesize`` writes a folder of them.
Only numpy is needed.
"""

from __future__ import annotations

from magnet_triton.synthetic.classes import DRAWN, IGNORE, NUM_CLASSES, THIN
from magnet_triton.synthetic.scene import scene

__all__ = ["DRAWN", "IGNORE", "NUM_CLASSES", "THIN", "scene"]
