"""Rasters in without silent loss: band choice, the 8-bit scaling (checked against direct formulas), the
refusals that say what to pass, and the declared-size guard; GeoTIFFs are made in the tests."""

from __future__ import annotations

import numpy as np
import pytest

from magnet_triton.errors import MagnetError
from magnet_triton.raster.bands import (
    BandRanges,
    choose_bands,
    parse_bands,
    parse_scaling,
    resolve_ranges,
    to_rgb8,
)
from tests.raster_files import write_geotiff

rasterio = pytest.importorskip("rasterio", reason="rasterio (the raster extra) is not installed")


def sixteen_bit_bands(height=40, width=60, bands=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4096, size=(bands, height, width), dtype=np.uint16)


# ---------------------------------------------------------------------- bands and scaling, pure
def test_four_bands_without_a_choice_are_refused_naming_bands():
    with pytest.raises(
        MagnetError, match=r"has 4 bands; .* pass --bands with the three to use, e.g. --bands 1,2,3"
    ):
        choose_bands(4, [], None, "scene.tif")


def test_three_bands_and_an_alpha_band_need_no_choice():
    assert choose_bands(4, [4], None, "rgba.tif") == (1, 2, 3)
    assert choose_bands(1, [], None, "grey.tif") == (1,)


def test_a_band_the_file_lacks_is_refused():
    with pytest.raises(MagnetError, match=r"has 4 band\(s\); there is no band 5"):
        choose_bands(4, [], (1, 2, 5), "scene.tif")


@pytest.mark.parametrize("text", ["1,2", "1,2,3,4", "0,1,2", "a,b,c"])
def test_band_lists_other_than_three_or_one_positive_numbers_are_refused(text):
    with pytest.raises(MagnetError, match="band"):
        parse_bands(text)


def test_sixteen_bits_without_scaling_are_refused_saying_what_to_pass():
    with pytest.raises(
        MagnetError, match=r"uint16 samples, which do not fit in 8 bits .* --scale percentile:2,98"
    ):
        resolve_ranges(np.uint16, (1, 2, 3), parse_scaling("none"), source="deep.tif")


def test_fixed_scaling_is_the_linear_map_rounded_and_clipped():
    block = np.array([[[0, 1000, 2000, 4095, 5000]]], dtype=np.uint16)
    ranges = resolve_ranges(np.uint16, (1,), parse_scaling("fixed:1000,3000"))
    rgb = to_rgb8(block, ranges)
    expected = np.clip(np.rint((block[0].astype(np.float64) - 1000) * 255 / 2000), 0, 255).astype(np.uint8)
    assert rgb.shape == (1, 5, 3)
    for channel in range(3):  # one band is grey: the same in R, G and B
        np.testing.assert_array_equal(rgb[..., channel], expected)


def test_eight_bit_samples_pass_unchanged_by_default():
    block = np.random.default_rng(1).integers(0, 256, size=(3, 5, 7), dtype=np.uint8)
    ranges = resolve_ranges(np.uint8, (1, 2, 3), None)
    assert ranges.identity and "sent as they are" in ranges.description
    np.testing.assert_array_equal(to_rgb8(block, ranges), block.transpose(1, 2, 0))


def test_a_flat_band_maps_to_zero_instead_of_dividing_by_zero():
    ranges = BandRanges((5.0,), (5.0,), "flat")
    assert (to_rgb8(np.full((1, 2, 2), 5, dtype=np.uint16), ranges) == 0).all()


@pytest.mark.parametrize("text", ["percentile:98,2", "fixed:1", "clip", "percentile:-1,50", "stats:1,2"])
def test_bad_scalings_are_refused(text):
    with pytest.raises(MagnetError):
        parse_scaling(text)


# ---------------------------------------------------------------------- reading GeoTIFFs
def test_a_sixteen_bit_four_band_geotiff_reads_the_chosen_bands_scaled_by_their_percentiles(tmp_path):
    from magnet_triton.raster.reader import RasterSource
    from magnet_triton.raster.tiling import plan_windows

    data = sixteen_bit_bands()
    path = tmp_path / "deep.tif"
    write_geotiff(path, data)
    with RasterSource(path, bands="4,2,1") as source:
        assert source.bands == (4, 2, 1) and source.georeferenced
        window = plan_windows(40, 60, max_pixels=40 * 60, overlap=0).windows[0]
        rgb = source.read(window)
        assert "2-98 percentiles" in source.ranges.description
    for channel, band in enumerate((4, 2, 1)):
        values = data[band - 1].astype(np.float64)
        low, high = np.percentile(values, [2, 98])
        expected = np.clip(np.rint((values - low) * (255.0 / (high - low))), 0, 255)
        # float32 arithmetic in the reader: at most one level apart, where a value sits on a .5.
        assert np.abs(rgb[..., channel].astype(int) - expected).max() <= 1
        assert (rgb[..., channel] == expected).mean() > 0.99


def test_a_window_reads_only_its_pixels(tmp_path):
    from magnet_triton.raster.reader import RasterSource
    from magnet_triton.raster.tiling import plan_windows

    data = np.random.default_rng(3).integers(0, 256, size=(3, 90, 70), dtype=np.uint8)
    path = tmp_path / "rgb.tif"
    write_geotiff(path, data, tiled=True, blockxsize=16, blockysize=16)
    plan = plan_windows(90, 70, max_pixels=40 * 40, overlap=8)
    with RasterSource(path) as source:
        for w in plan.windows:
            np.testing.assert_array_equal(
                source.read(w), data[:, w.row : w.row + w.height, w.col : w.col + w.width].transpose(1, 2, 0)
            )


def test_the_same_four_band_file_without_bands_is_refused(tmp_path):
    from magnet_triton.raster.reader import RasterSource

    path = tmp_path / "deep.tif"
    write_geotiff(path, sixteen_bit_bands())
    with pytest.raises(MagnetError, match=r"deep.tif has 4 bands; .*--bands 1,2,3"):
        RasterSource(path)


def test_a_raster_declaring_too_many_pixels_is_refused_before_reading(tmp_path):
    from magnet_triton.raster.reader import RasterSource

    path = tmp_path / "bomb.tif"
    # A sparse tiled file: 100000 x 100000 declared, a few kilobytes on disk.
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=100_000,
        width=100_000,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=1024,
        blockysize=1024,
        SPARSE_OK=True,
        compress="deflate",
    ):
        pass
    assert path.stat().st_size < 1_000_000
    with pytest.raises(
        MagnetError, match=r"declares 100000x100000 = 10000000000 pixels, over the raster limit"
    ):
        RasterSource(path)


def test_without_rasterio_the_message_names_the_extra(monkeypatch):
    import importlib

    from magnet_triton.raster import RasterDependencyMissing, rasterio_module

    real_import = importlib.import_module

    def no_rasterio(name, *args, **kwargs):
        if name == "rasterio":
            raise ImportError("No module named 'rasterio'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_rasterio)
    with pytest.raises(MagnetError, match=r"pip install 'magnet-triton\[raster\]'") as caught:
        rasterio_module()
    assert isinstance(caught.value, RasterDependencyMissing) and isinstance(caught.value, ImportError)


def test_a_truncated_raster_is_refused_saying_so_not_with_a_traceback(tmp_path):
    from magnet_triton.raster.reader import RasterSource
    from magnet_triton.raster.tiling import plan_windows

    path = tmp_path / "cut.tif"
    data = np.random.default_rng(7).integers(0, 256, size=(3, 256, 256), dtype=np.uint8)
    write_geotiff(path, data, tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with RasterSource(path) as source, pytest.raises(MagnetError, match=r"cut.tif: damaged or truncated"):
        for window in plan_windows(256, 256, max_pixels=64 * 64, overlap=0).windows:
            source.read(window)


def test_raster_options_are_checked_before_any_file_is_read_or_server_called(tmp_path, capsys):
    from magnet_triton.client import cli

    for options, words in (
        (["--bands", "1,2"], "choose three bands"),
        (["--scale", "percentile:98,2"], "needs finite LOW < HIGH"),
        (["--window", "big"], "--window takes WIDTHxHEIGHT"),
        (["--overlap", "-1"], "--overlap must be >= 0"),
    ):
        status = cli.main(["segment", str(tmp_path / "none.tif"), "--out", str(tmp_path), *options])
        assert status == cli.EXIT_BAD_REQUEST
        assert words in capsys.readouterr().err


def test_stats_scaling_uses_the_files_own_statistics(tmp_path):
    from magnet_triton.raster.reader import RasterSource

    data = sixteen_bit_bands(bands=3)
    path = tmp_path / "stats.tif"
    write_geotiff(path, data)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(1, STATISTICS_MINIMUM="100", STATISTICS_MAXIMUM="3000")
    with RasterSource(path, scaling="stats") as source:
        assert source.ranges.lows[0] == 100 and source.ranges.highs[0] == 3000
        # Bands without statistics get GDAL's: their minimum and maximum.
        assert source.ranges.lows[1:] == tuple(float(data[b].min()) for b in (1, 2))
        assert source.ranges.highs[1:] == tuple(float(data[b].max()) for b in (1, 2))
        assert "the file's statistics" in source.ranges.description


def test_the_benchmarks_synthetic_raster_is_a_tiled_georeferenced_rgb_geotiff(tmp_path):
    from benchmarks.raster_memory import write_synthetic_raster

    path = tmp_path / "synthetic.tif"
    write_synthetic_raster(path, 1100)  # more than two 512-row strips, the last one short
    with rasterio.open(path) as ds:
        assert (ds.width, ds.height, ds.count, ds.dtypes[0]) == (1100, 1100, 3, "uint8")
        assert ds.crs is not None and ds.profile["tiled"]
        pixels = ds.read()
    assert len(np.unique(pixels[0])) > 100  # a scene, not a constant
    assert not np.array_equal(pixels[:, :512], pixels[:, 512:1024])  # the strips are shifted apart
