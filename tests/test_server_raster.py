"""Rasters against a real server: a 16-bit 4-band GeoTIFF segmented with ``--bands`` into a GeoTIFF class
map on the input's grid, the same file refused without ``--bands``, and a raster three times over the
server's pixel limit segmented window by window and stitched.

Expected maps come from raw tritonclient calls on pixels computed here (direct formulas, numpy slices),
not from the client under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from magnet_triton import io_spec
from magnet_triton.client import MagnetClient, cli
from tests.raster_files import write_geotiff
from tests.tiny_repository import build_tiny_repository, scene, skip_without_tritonserver

pytestmark = pytest.mark.server
grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
rasterio = pytest.importorskip("rasterio", reason="rasterio (the raster extra) is not installed")

#: The tiny repository's pixel limit (600 x 600).
LIMIT = 360_000


def raw_segmentation(url: str, image: np.ndarray) -> np.ndarray:
    """The pipeline's class map for ``image`` (H x W x 3 uint8), straight from tritonclient."""
    with grpc.InferenceServerClient(url) as raw:
        tensor = grpc.InferInput(io_spec.IMAGE, list(image.shape), "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(image))
        result = raw.infer(
            io_spec.PIPELINE_MODEL, [tensor], outputs=[grpc.InferRequestedOutput(io_spec.SEGMENTATION)]
        )
    return result.as_numpy(io_spec.SEGMENTATION)


def raw_outputs(url: str, image: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the pipeline for ``image``, straight from tritonclient."""
    with grpc.InferenceServerClient(url) as raw:
        tensor = grpc.InferInput(io_spec.IMAGE, list(image.shape), "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(image))
        result = raw.infer(io_spec.PIPELINE_MODEL, [tensor])
    return {t.name: result.as_numpy(t.name) for t in io_spec.pipeline_spec().outputs}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from magnet_triton.server import TritonServer

    skip_without_tritonserver()
    repository = build_tiny_repository(tmp_path_factory.mktemp("raster"), max_image_pixels=LIMIT)
    with TritonServer(repository, log_path=repository.parent / "server.log") as running:
        yield running


def deep_scene(height: int, width: int) -> np.ndarray:
    """4 x H x W uint16: a blocky scene in bands 1-3, scaled up to 12 bits, and a fourth band of noise."""
    rgb = scene(height, width, seed=11).transpose(2, 0, 1).astype(np.uint16) * 16 + 7
    noise = np.random.default_rng(12).integers(0, 4096, size=(1, height, width), dtype=np.uint16)
    return np.concatenate([rgb, noise])


def percentile_rgb(bands: np.ndarray) -> np.ndarray:
    """The stated default scaling, computed directly: each band from its 2nd-98th percentiles to 0..255."""
    planes = []
    for band in bands.astype(np.float64):
        low, high = np.percentile(band, [2, 98])
        planes.append(np.clip(np.rint((band - low) * (255.0 / (high - low))), 0, 255))
    return np.stack(planes, axis=-1).astype(np.uint8)


def test_a_sixteen_bit_four_band_geotiff_with_bands_gives_a_geotiff_class_map_on_its_grid(server, tmp_path):
    data = deep_scene(150, 230)
    source = tmp_path / "in" / "deep.tif"
    source.parent.mkdir()
    crs, transform = write_geotiff(source, data)
    out = tmp_path / "out"
    status = cli.main(
        ["segment", str(source), "--out", str(out), "--bands", "1,2,3", "--url", server.grpc_url, "-q"]
    )
    assert status == 0
    with rasterio.open(out / "deep_classes.tif") as written:
        assert written.crs == crs and written.transform == transform
        assert (written.width, written.height, written.count, written.dtypes[0]) == (230, 150, 1, "uint8")
        profile = written.profile
        assert profile["tiled"] and profile["compress"].lower() == "deflate"
        assert written.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"  # Cloud-Optimised
        classes = written.read(1)
        colours = written.colormap(1)  # the palette travels with the GeoTIFF
    assert len(colours) >= 5
    expected = raw_segmentation(server.grpc_url, percentile_rgb(data[:3]))
    # float32 scaling in the reader against float64 here: a pixel may sit one level apart on a .5.
    assert (classes == expected).mean() > 0.99
    from PIL import Image

    with Image.open(out / "deep.png") as png:
        np.testing.assert_array_equal(np.asarray(png), classes)  # the PNG beside it: the same map


def test_the_same_file_without_bands_is_refused_saying_what_to_pass(server, tmp_path, capsys):
    source = tmp_path / "deep.tif"
    write_geotiff(source, deep_scene(60, 80))
    status = cli.main(
        ["segment", str(source), "--out", str(tmp_path / "out"), "--url", server.grpc_url, "-q"]
    )
    assert status == cli.EXIT_BAD_REQUEST
    message = capsys.readouterr().err
    assert "deep.tif has 4 bands" in message and "--bands 1,2,3" in message
    assert not (tmp_path / "out" / "deep.png").exists()


def test_confidence_is_a_georeferenced_float_tiff_beside_the_class_map(server, tmp_path):
    data = deep_scene(80, 100)
    source = tmp_path / "deep.tif"
    crs, transform = write_geotiff(source, data)
    with MagnetClient(server.grpc_url) as client:
        result = client.segment_raster(source, tmp_path / "out", bands=(1, 2, 3), outputs=None)
    assert set(result.files) == {"coarse", "confidence", "geotiff", "segmentation"}  # None: every map
    with rasterio.open(result.files["confidence"]) as written:
        assert written.crs == crs and written.transform == transform and written.dtypes[0] == "float32"
        confidence = written.read(1)
    assert confidence.shape == (80, 100) and confidence.min() >= 0 and confidence.max() <= 1


def tiled_scene(height: int, width: int) -> np.ndarray:
    """H x W x 3 uint8: one blocky 200 x 200 scene repeated, so every window sees the same kind of content."""
    tile = scene(200, 200, seed=21)
    reps = (-(-height // 200), -(-width // 200), 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:height, :width])


def test_a_raster_three_times_over_the_limit_is_segmented_by_windows_and_stitched(server, tmp_path):
    image = tiled_scene(1000, 1100)  # 1.1 MP, three times the 0.36 MP limit
    assert image.shape[0] * image.shape[1] > 3 * LIMIT
    source = tmp_path / "big.tif"
    write_geotiff(source, image.transpose(2, 0, 1), tiled=True, blockxsize=128, blockysize=128)
    seen = []
    with MagnetClient(server.grpc_url) as client:
        result = client.segment_raster(
            source,
            tmp_path / "out",
            max_concurrency=2,
            progress=lambda done, total: seen.append((done, total)),
        )
    plan = result.plan
    assert plan.tiled and len(plan.windows) == 4 and plan.window_size == (600, 600)
    assert plan.overlap == 64  # the tiny preset's patch: 64 x 64
    assert seen == [(i, 4) for i in range(1, 5)]
    assert "sent as they are" in result.scaling
    from PIL import Image

    with Image.open(result.files["segmentation"]) as png:
        stitched = np.asarray(png)
    assert stitched.shape == (1000, 1100)
    # Each window segmented on its own, from numpy slices of the scene: the stitched map is that
    # window's answer everywhere it keeps, i.e. away from the seams; every pixel is kept once.
    covered = np.zeros(stitched.shape, dtype=np.int32)
    for w in plan.windows:
        alone = raw_segmentation(server.grpc_url, image[w.row : w.row + w.height, w.col : w.col + w.width])
        top, left = w.keep_row - w.row, w.keep_col - w.col
        kept = alone[top : top + w.keep_height, left : left + w.keep_width]
        region = (slice(w.keep_row, w.keep_row + w.keep_height), slice(w.keep_col, w.keep_col + w.keep_width))
        np.testing.assert_array_equal(stitched[region], kept)
        covered[region] += 1
    assert (covered == 1).all()
    with rasterio.open(result.files["geotiff"]) as written:
        np.testing.assert_array_equal(written.read(1), stitched)


def test_a_window_option_over_the_served_limit_is_refused_before_sending(server, tmp_path):
    from magnet_triton.errors import MagnetError

    source = tmp_path / "big.tif"
    write_geotiff(source, tiled_scene(700, 700).transpose(2, 0, 1))
    with (
        MagnetClient(server.grpc_url) as client,
        pytest.raises(MagnetError, match=r"over the server's limit of 360000"),
    ):
        client.segment_raster(source, tmp_path / "out", window_size=(650, 650))


def test_the_asyncio_client_segments_a_raster_as_the_synchronous_one_does(server, tmp_path):
    import asyncio

    from PIL import Image

    from magnet_triton.client import AsyncMagnetClient

    image = tiled_scene(700, 650)  # two windows
    source = tmp_path / "big.tif"
    write_geotiff(source, image.transpose(2, 0, 1))

    async def segment() -> object:
        async with AsyncMagnetClient(server.grpc_url) as client:
            return await client.segment_raster(source, tmp_path / "async")

    result = asyncio.run(segment())
    assert result.plan.tiled
    with MagnetClient(server.grpc_url) as client:
        expected = client.segment_raster(source, tmp_path / "sync")
    with Image.open(result.files["segmentation"]) as a, Image.open(expected.files["segmentation"]) as b:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
