"""Make the small reference files in this folder from the team's full ones in ``../shared/reference``.

Run from the repository root, beside a ``../shared``: ``python tests/reference/trim.py``. What it keeps
is listed in ``tests/reference/README.md``; ``tests/test_reference_files.py`` checks that every value
kept here equals the full file's wherever that file is present.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "reference"

#: Every LOGIT_STRIDE-th row and column of each network's logits, plus the last ones (borders are where
#: padding and resize corner rules differ).
LOGIT_STRIDE = 4
#: The refiner is local: two 3x3 convolutions, then one 3x3 in each of two bottlenecks, so an output
#: pixel reads input pixels at most 4 away. Its inputs (two 19-channel maps, 1.2 MB) are cut to their
#: top-left corner and its logits kept where the cut edges are out of reach.
REFINER_WINDOW = (32, 64)
REFINER_RADIUS = 4
#: roi_align cases 40 and 41 are MagNet-sized (16 MB together); the small random ones 00-39 stay.
ROI_ALIGN_KEPT = 40


def _grid(n: int) -> np.ndarray:
    return np.unique(np.r_[np.arange(0, n, LOGIT_STRIDE), n - 1]).astype(np.int64)


def trim_network_outputs(full: np.lib.npyio.NpzFile) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in sorted({key.split("/")[0] for key in full.files}):
        logits = full[f"{name}/logits"]
        if name == "refinement":
            h, w = REFINER_WINDOW
            for part in ("fine", "coarse"):
                out[f"{name}/{part}"] = full[f"{name}/{part}"][:, :, :h, :w]
            rows = np.arange(h - REFINER_RADIUS, dtype=np.int64)
            cols = np.arange(w - REFINER_RADIUS, dtype=np.int64)
        else:
            out[f"{name}/input"] = full[f"{name}/input"]
            rows, cols = _grid(logits.shape[2]), _grid(logits.shape[3])
        out[f"{name}/rows"], out[f"{name}/cols"] = rows, cols
        out[f"{name}/logits"] = logits[:, :, rows][:, :, :, cols]
    return out


def trim_operator_cases(full: np.lib.npyio.NpzFile) -> dict[str, np.ndarray]:
    kept = {}
    for key in full.files:
        kind, case = key.split("/")[:2]
        if kind == "roi_align" and int(case) >= ROI_ALIGN_KEPT:
            continue
        kept[key] = full[key]
    return kept


def main() -> None:
    for name in ("official_state_dict.json", "patch_grids.json"):
        shutil.copyfile(SHARED / name, HERE / name)
    with np.load(SHARED / "network_outputs.npz") as full:
        np.savez_compressed(HERE / "network_outputs.npz", **trim_network_outputs(full))
    with np.load(SHARED / "operator_cases.npz") as full:
        np.savez_compressed(HERE / "operator_cases.npz", **trim_operator_cases(full))
    for path in sorted(HERE.iterdir()):
        print(f"{path.name:28s} {path.stat().st_size / 1e6:6.2f} MB")


if __name__ == "__main__":
    main()
