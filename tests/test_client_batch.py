"""``magnet-client segment`` over many files against a real server: palette class maps that read back as
the indices, the optional maps (``--save``, the library's ``outputs=``), folders and globs as input, and
a batch run killed halfway and resumed (every output once, none truncated).

Expected maps come from raw tritonclient calls, not from the client under test.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from magnet_triton import io_spec
from magnet_triton.client import MagnetClient, cli
from magnet_triton.client.errors import BadRequestError
from magnet_triton.client.palettes import get_palette
from tests.tiny_repository import TINY, build_tiny_repository, png_bytes, scene, skip_without_tritonserver

pytestmark = pytest.mark.server
grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")


def raw_outputs(url: str, image: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the pipeline for ``image``, straight from tritonclient."""
    with grpc.InferenceServerClient(url) as raw:
        tensor = grpc.InferInput(io_spec.IMAGE, list(image.shape), "UINT8")
        tensor.set_data_from_numpy(image)
        result = raw.infer(io_spec.PIPELINE_MODEL, [tensor])
    return {t.name: result.as_numpy(t.name) for t in io_spec.pipeline_spec().outputs}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from magnet_triton.server import TritonServer

    skip_without_tritonserver()
    repository = build_tiny_repository(tmp_path_factory.mktemp("client_batch"))
    with TritonServer(repository, log_path=repository.parent / "server.log") as running:
        yield running


def write_scenes(folder, count: int, *, suffix: str = ".png") -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = {f"img{i}": scene(50 + 4 * i, 70, seed=40 + i) for i in range(count)}
    for stem, pixels in images.items():
        (folder / f"{stem}{suffix}").write_bytes(png_bytes(pixels))
    return images


def test_the_class_map_is_a_palette_png_whose_pixels_are_the_class_indices(server, tmp_path):
    from PIL import Image

    images = write_scenes(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert (
        cli.main(
            ["segment", str(tmp_path / "in" / "img0.png"), "--url", server.grpc_url, "--out", str(out), "-q"]
        )
        == 0
    )
    expected = raw_outputs(server.grpc_url, images["img0"])[io_spec.SEGMENTATION]
    with Image.open(out / "img0.png") as written:
        assert written.mode == "P"
        np.testing.assert_array_equal(np.asarray(written), expected)
        colours = np.asarray(written.convert("RGB"))
    # It opens in colour: each pixel has its class's colour of the palette auto picks for TINY.
    palette = get_palette("auto", TINY.num_classes)
    np.testing.assert_array_equal(colours, palette[expected])
    assert (
        cli.main(
            [
                "segment",
                str(tmp_path / "in" / "img0.png"),
                "--url",
                server.grpc_url,
                "--out",
                str(out),
                "--grey",
                "-q",
            ]
        )
        == 0
    )
    with Image.open(out / "img0.png") as written:
        assert written.mode == "L" and np.array_equal(np.asarray(written), expected)


def test_save_writes_the_coarse_map_and_the_confidence_the_server_computes(server, tmp_path):
    from PIL import Image

    images = write_scenes(tmp_path / "in", 1)
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "in"), "--url", server.grpc_url, "--out", str(out), "-q"]
    assert cli.main([*args, "--save", "coarse,confidence"]) == 0
    expected = raw_outputs(server.grpc_url, images["img0"])
    with (
        Image.open(out / "img0_coarse.png") as coarse,
        Image.open(out / "img0_confidence.tiff") as confidence,
    ):
        np.testing.assert_array_equal(np.asarray(coarse), expected[io_spec.COARSE_SEGMENTATION])
        np.testing.assert_array_equal(np.asarray(confidence), expected[io_spec.CONFIDENCE])
    assert cli.main([*args, "--save", "coarse,probabilities"]) == cli.EXIT_BAD_REQUEST


def test_the_library_asks_only_for_the_outputs_named(server):
    image = scene(60, 90, seed=9)
    expected = raw_outputs(server.grpc_url, image)
    with MagnetClient(server.grpc_url) as client:
        alone = client.segment(image, outputs=())
        both = client.segment(image, outputs=["coarse", "confidence"])
        with pytest.raises(BadRequestError, match="unknown output 'probabilities'"):
            client.segment(image, outputs=["probabilities"])
    assert alone.coarse_segmentation is None and alone.confidence is None
    np.testing.assert_array_equal(alone.segmentation, expected[io_spec.SEGMENTATION])
    np.testing.assert_array_equal(both.confidence, expected[io_spec.CONFIDENCE])
    assert alone.scales_done == both.scales_done == TINY.num_scales == int(expected[io_spec.SCALES_DONE][0])


def test_folders_and_quoted_globs_are_expanded_to_their_image_files(server, tmp_path):
    write_scenes(tmp_path / "in", 2)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert cli.main(["segment", str(tmp_path / "in"), "--url", server.grpc_url, "--out", str(out), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png"]
    globbed = tmp_path / "globbed"
    assert (
        cli.main(
            ["segment", str(tmp_path / "in" / "img1*"), "--url", server.grpc_url, "--out", str(globbed), "-q"]
        )
        == 0
    )
    assert sorted(p.name for p in globbed.iterdir()) == ["img1.png"]
    assert (
        cli.main(["segment", str(tmp_path / "in" / "nothing*"), "--url", server.grpc_url, "--out", str(out)])
        == 1
    )


def test_a_batch_killed_halfway_and_resumed_writes_every_output_once_and_whole(server, tmp_path):
    from PIL import Image

    images = write_scenes(tmp_path / "in", 8)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "magnet_triton.client.cli", "segment", str(tmp_path / "in")]
    argv += ["--url", server.grpc_url, "--out", str(out), "--concurrency", "1", "--save", "coarse", "-q"]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(out.glob("img?.png"))) < 3:  # a third of the way: stop it without warning
        assert first.poll() is None and time.monotonic() < deadline, "the first run ended before the kill"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob("img?.png")}
    assert 3 <= len(done_before) < len(images)

    second = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [f"{s}.png" for s in images] + [f"{s}_coarse.png" for s in images]
    )  # no temporaries
    for name, mtime in done_before.items():  # finished before the kill: not written again
        assert (out / name).stat().st_mtime_ns == mtime
    for stem, pixels in images.items():
        expected = raw_outputs(server.grpc_url, pixels)
        with Image.open(out / f"{stem}.png") as written:  # whole: decodes and equals the server's map
            np.testing.assert_array_equal(np.asarray(written), expected[io_spec.SEGMENTATION])


@pytest.mark.parametrize("client_class", ["sync", "async"])
def test_a_server_that_does_not_know_the_outputs_parameter_still_gets_served(
    server, monkeypatch, client_class
):
    # An older export refuses the parameter as unknown. The real server here knows "outputs", so the
    # client is made to send a name it does not know, and must fall back to sending none.
    import asyncio

    from magnet_triton.client import AsyncMagnetClient, base

    monkeypatch.setattr(base, "OUTPUTS_PARAMETER", "outputs_from_the_future")
    picture = png_bytes(scene(60, 90, seed=4))
    if client_class == "sync":
        with MagnetClient(server.grpc_url, retries=0) as client:
            first, second = client.segment(picture, outputs=()), client.segment(picture, outputs=())
    else:

        async def both():
            async with AsyncMagnetClient(server.grpc_url, retries=0) as client:
                return await client.segment(picture, outputs=()), await client.segment(picture, outputs=())

        first, second = asyncio.run(both())
    np.testing.assert_array_equal(first.segmentation, second.segmentation)
    assert first.coarse_segmentation is None and first.confidence is None  # the maps asked for, still
    # Any other refusal is not taken for this one: an unknown override still fails.
    with MagnetClient(server.grpc_url, retries=0) as client, pytest.raises(BadRequestError, match="unknown"):
        client.segment(picture, outputs=(), n_patchs=3)
