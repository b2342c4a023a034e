"""The reference files shipped in ``tests/reference`` hold the full files' values, unchanged.

The operator and network tests read the shipped files, so that they run in any clone; these checks hold
the shipped files to the team's full ones in ``../shared/reference`` where that folder is present (and
skip with a reason where it is not). ``tests/reference/trim.py`` made the shipped files.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.reference_data import shared_file, shipped_file


@pytest.mark.parametrize("name", ["official_state_dict.json", "patch_grids.json"])
def test_shipped_json_files_are_the_full_ones(name):
    assert shipped_file(name).read_bytes() == shared_file("reference", name).read_bytes()


def test_shipped_operator_cases_are_full_cases_of_the_full_file():
    shipped = np.load(shipped_file("operator_cases.npz"))
    full = np.load(shared_file("reference", "operator_cases.npz"))
    assert set(shipped.files) <= set(full.files)
    for key in shipped.files:
        np.testing.assert_array_equal(shipped[key], full[key], err_msg=key)
        assert shipped[key].dtype == full[key].dtype, key
    # Whole cases only: a case is shipped with every array it has, or not at all.
    shipped_cases = {key.rsplit("/", 1)[0] for key in shipped.files}
    assert {key for key in full.files if key.rsplit("/", 1)[0] in shipped_cases} == set(shipped.files)
    kinds = {key.split("/")[0] for key in shipped.files}
    assert kinds == {"roi_align", "median", "nearest"}


def test_shipped_network_outputs_are_the_full_logits_at_the_kept_pixels():
    shipped = np.load(shipped_file("network_outputs.npz"))
    full = np.load(shared_file("reference", "network_outputs.npz"))
    names = {key.split("/")[0] for key in full.files}
    assert {key.split("/")[0] for key in shipped.files} == names
    for name in names:
        rows, cols = shipped[f"{name}/rows"], shipped[f"{name}/cols"]
        expected = full[f"{name}/logits"][:, :, rows][:, :, :, cols]
        np.testing.assert_array_equal(shipped[f"{name}/logits"], expected, err_msg=name)
        assert shipped[f"{name}/logits"].dtype == np.float64
        for part in ("fine", "coarse") if name == "refinement" else ("input",):
            kept = shipped[f"{name}/{part}"]
            h, w = kept.shape[2:]
            # The input is the full one, or its top-left corner (the refiner's, see trim.py).
            np.testing.assert_array_equal(kept, full[f"{name}/{part}"][:, :, :h, :w], err_msg=name)
        if name != "refinement":
            assert shipped[f"{name}/input"].shape == full[f"{name}/input"].shape
            # Every border row and column is among the kept ones.
            full_h, full_w = full[f"{name}/logits"].shape[2:]
            assert {0, full_h - 1} <= set(rows.tolist()) and {0, full_w - 1} <= set(cols.tolist())
