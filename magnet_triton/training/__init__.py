"""Training MagNet's networks on labelled scenes, and the paper's comparison of the trained model.

``magnet-triton train`` (:mod:`.command`, the loop in :mod:`.loop`) and ``magnet-triton evaluate``
(:mod:`.evaluate_command`, the scoring in :mod:`.comparison`, the figure in :mod:`.crops`). Modules
import torch; the package itself does not, so ``--help`` stays light.
"""
