"""``magnet-triton train``: crops, refiner inputs, BN calibration, resumable runs, checkpoints that load.

The runs use tiny settings (three scales of 32 x 16 patches on 128 x 64 scenes) so that a few steps of
the real networks take seconds on two cores; the code paths are those of the presets.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from magnet_triton.cli import main
from magnet_triton.errors import MagnetError
from magnet_triton.networks import build_network
from magnet_triton.networks.checkpoint import load_checkpoint, read_checkpoint
from magnet_triton.settings import get_preset
from magnet_triton.synthetic.command import synthesize
from magnet_triton.training.batch_norm import recalibrate_batch_norm
from magnet_triton.training.data import SceneSet
from magnet_triton.training.loop import STATE_FILE, TrainConfig, phases, refiner_transitions, train
from magnet_triton.training.progress import Progress
from magnet_triton.training.refiner_inputs import coarse_window, refiner_batch
from magnet_triton.training.settings_args import read_settings
from tests.reference_data import official_layouts
from tests.tiny_repository import TINY_STREET as TINY

CONFIG = TrainConfig(steps=6, refiner_steps=3, batch=2, lr=2e-3, save_every=2, calibration_batches=2, seed=0)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    synthesize(folder, 2, 0, (128, 64))
    return folder


@pytest.fixture(scope="module")
def data(scenes) -> SceneSet:
    return SceneSet(scenes, TINY)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("run")
    return out, train(TINY, data, out, CONFIG)


# ---------------------------------------------------------------------- what each network is trained on
def test_phases_and_transitions_follow_the_presets() -> None:
    cityscapes, deepglobe = get_preset("cityscapes"), get_preset("deepglobe")
    assert phases(cityscapes) == ["backbone", "refiner_1", "refiner_2", "refiner_3"]
    assert [refiner_transitions(cityscapes, r) for r in range(3)] == [[1], [2], [3]]
    assert phases(deepglobe) == ["backbone", "refiner_1"]
    assert refiner_transitions(deepglobe, 0) == [1, 2]


def test_backbone_batches_hold_crops_of_every_scale_and_their_labels(data) -> None:
    batch = data.backbone_batch(np.random.default_rng(0), 6)
    assert batch.images.shape == (6, 3, 16, 32) and batch.images.dtype == torch.float32
    assert batch.labels.shape == (6, 16, 32) and batch.labels.dtype == torch.int64
    assert set(torch.unique(batch.labels).tolist()) <= set(range(19)) | {255}
    # The labels of one box: nearest-resized from the full-resolution map, box by box.
    labels = np.asarray(Image.open(sorted((data.folder / "labels").glob("*.png"))[0]))
    scale_64 = labels[::2, ::2]  # 128 x 64 -> 64 x 32: PyTorch nearest reads every second pixel
    _, target = data.patch(0, 1, (8, 4, 40, 20))
    np.testing.assert_array_equal(target[0].numpy(), scale_64[4:20, 8:40])


@pytest.mark.parametrize("seed", range(20))
def test_a_coarse_window_holds_the_region_and_stays_inside(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scale, crop = (int(rng.integers(64, 300)), int(rng.integers(32, 200))), (32, 16)
    w, h = rng.uniform(1, crop[0] - 1), rng.uniform(1, crop[1] - 1)  # fits in whole pixels
    x0, y0 = rng.uniform(0, scale[0] - w), rng.uniform(0, scale[1] - h)
    box = coarse_window((x0, y0, x0 + w, y0 + h), scale, crop, rng)
    assert (box[2] - box[0], box[3] - box[1]) == crop
    assert box[0] >= 0 and box[2] <= scale[0] and box[1] >= 0 and box[3] <= scale[1]
    assert box[0] <= x0 and x0 + w <= box[2] and box[1] <= y0 and y0 + h <= box[3]


def test_the_coarse_half_of_a_refiner_input_lines_up_with_the_fine_half(tmp_path) -> None:
    # Ramps: red grows with x, green with y. A fake backbone returns them as the first two
    # "probabilities", so a coarse crop cut from the wrong place would not match the fine one.
    w, h = 128, 64
    ys, xs = np.mgrid[0:h, 0:w]
    image = np.stack([xs * 255 // (w - 1), ys * 255 // (h - 1), np.zeros_like(xs)], -1).astype(np.uint8)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "ramp.png")
    Image.fromarray(np.zeros((h, w), np.uint8)).save(tmp_path / "labels" / "ramp.png")
    ramps = SceneSet(tmp_path, TINY)
    mean, std = torch.tensor([0.485, 0.456]), torch.tensor([0.229, 0.224])

    def backbone(patches: torch.Tensor) -> torch.Tensor:
        rgb = patches[:, :2] * std[None, :, None, None] + mean[None, :, None, None]
        return torch.cat([rgb, torch.zeros(len(patches), 17, *patches.shape[2:])], 1)

    batch = refiner_batch(ramps, backbone, np.random.default_rng(0), 16, [1, 2])
    assert batch.images.shape == (16, 38, 16, 32)
    fine, coarse = batch.images[:, :2], batch.images[:, 19:21]
    # The coarse map is a blurrier view of the same place. Measured: mean 0.008, max 0.024; a box one
    # scale-i pixel off gives a mean of 0.013, two pixels off a max of 0.039.
    assert (fine - coarse).abs().mean() < 0.01
    assert (fine - coarse).abs().max() < 0.03


def test_batch_norm_statistics_become_the_average_over_the_batches() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=0.01))
    batches = [torch.randn(4, 3, 5, 6) * (k + 1) + k for k in range(3)]
    assert recalibrate_batch_norm(model, iter(batches)) == 3
    norm = model[0]
    expected_mean = np.mean([b.numpy().mean(axis=(0, 2, 3)) for b in batches], axis=0)
    expected_var = np.mean(
        [b.numpy().transpose(1, 0, 2, 3).reshape(3, -1).var(1, ddof=1) for b in batches], 0
    )
    np.testing.assert_allclose(norm.running_mean.numpy(), expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.running_var.numpy(), expected_var, rtol=1e-5)
    assert norm.momentum == 0.01 and not model.training


def test_the_progress_bar_writes_a_line_per_tenth_to_a_log() -> None:
    stream = io.StringIO()
    bar = Progress("backbone", 0, 20, stream=stream)
    for step in range(1, 21):
        bar.update(step, 1.0 / step)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and "20/20" in lines[-1] and "loss 0.0500" in lines[-1]


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch": 0}, "--batch must be a whole number >= 1"),
        ({"steps": 2.5}, "--steps"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"precision": "fp8"}, "precision must be one of"),
    ],
)
def test_impossible_settings_are_refused(changes, message) -> None:
    fields = {"steps": 1, "refiner_steps": 1, **changes}
    with pytest.raises(MagnetError, match=message):
        TrainConfig(**fields)


def test_fp16_on_the_cpu_is_refused(data, tmp_path) -> None:
    with pytest.raises(MagnetError, match="needs --device cuda"):
        train(TINY, data, tmp_path, TrainConfig(steps=1, refiner_steps=0, precision="fp16"))


def test_labels_outside_the_classes_are_refused(tmp_path) -> None:
    synthesize(tmp_path, 1, 0, (128, 64))
    label = tmp_path / "labels" / "scene_000000.png"
    Image.fromarray(np.full((64, 128), 30, np.uint8)).save(label)
    with pytest.raises(MagnetError, match=r"class\(es\) \[30\]"):
        SceneSet(tmp_path, TINY)


def test_the_train_command_names_a_missing_folder(tmp_path, capsys) -> None:
    argv = ["train", "--preset", "cityscapes", "--scenes", str(tmp_path / "none"), "--out", str(tmp_path)]
    assert main(argv) == 1
    assert "has no images/ folder" in capsys.readouterr().err
    assert main([*argv[:4], str(tmp_path), "--out", str(tmp_path), "--batch", "0"]) == 1
    assert "--batch must be" in capsys.readouterr().err


# ---------------------------------------------------------------------- runs (a few steps of the real networks)
@pytest.mark.slow
def test_a_few_steps_lower_the_loss(finished_run) -> None:
    _, result = finished_run
    backbone = result.losses["backbone"]
    assert len(backbone) == CONFIG.steps and all(np.isfinite(backbone))
    assert np.mean(backbone[-2:]) < np.mean(backbone[:2]) - 0.2
    assert [len(result.losses[f"refiner_{r}"]) for r in (1, 2)] == [3, 3]


@pytest.mark.slow
def test_checkpoints_have_the_authors_keys_and_load_strictly(finished_run) -> None:
    out, _ = finished_run
    layouts = official_layouts()
    for name, network, layout in (
        ("backbone", "hrnet18+ocr", "hrnet18+ocr"),
        ("refiner_1", "refinement", "refinement"),
        ("refiner_2", "refinement", "refinement"),
    ):
        state = read_checkpoint(out / f"{name}.pth")
        expected = layouts[layout]["state_dict"]
        assert {k: list(v.shape) for k, v in state.items()} == {k: list(v) for k, v in expected.items()}
        load_checkpoint(build_network(network, 19), out / f"{name}.pth")  # strict


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_weights(finished_run, data, tmp_path) -> None:
    finished, _ = finished_run

    class StopAtThree(Progress):
        def update(self, step: int, loss: float) -> None:
            if self.name == "backbone" and step == 3:
                raise KeyboardInterrupt
            super().update(step, loss)

    with pytest.raises(KeyboardInterrupt):
        train(TINY, data, tmp_path, CONFIG, progress=lambda *a: StopAtThree(*a, stream=io.StringIO()))
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["step"] == 2  # saved every 2 steps
    with pytest.raises(MagnetError, match="pass --resume"):
        train(TINY, data, tmp_path, CONFIG)
    resumed = train(TINY, data, tmp_path, CONFIG, resume=True)
    assert resumed.first_step["backbone"] == 3 and len(resumed.losses["backbone"]) == 4
    for name in phases(TINY):
        a, b = read_checkpoint(finished / f"{name}.pth"), read_checkpoint(tmp_path / f"{name}.pth")
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{name} {key}")


@pytest.mark.slow
def test_resuming_with_another_learning_rate_is_refused(finished_run, data) -> None:
    out, _ = finished_run
    with pytest.raises(MagnetError, match="resume with the run's own lr"):
        train(TINY, data, out, TrainConfig(**{**CONFIG.__dict__, "lr": 1.0}), resume=True)


@pytest.mark.slow
def test_refiners_alone_train_on_a_given_backbone(finished_run, data, tmp_path) -> None:
    finished, _ = finished_run
    config = TrainConfig(
        **{**CONFIG.__dict__, "refiner_steps": 2, "backbone_from": str(finished / "backbone.pth")}
    )
    result = train(TINY, data, tmp_path, config)
    assert "backbone" not in result.losses and [len(result.losses[f"refiner_{r}"]) for r in (1, 2)] == [2, 2]
    given, copied = read_checkpoint(finished / "backbone.pth"), read_checkpoint(tmp_path / "backbone.pth")
    assert given.keys() == copied.keys() and all(torch.equal(given[k], copied[k]) for k in given)
    with pytest.raises(MagnetError, match=r"checkpoint file not found: none\.pth"):
        train(TINY, data, tmp_path / "other", TrainConfig(steps=1, refiner_steps=1, backbone_from="none.pth"))


# ---------------------------------------------------------------------- --settings FILE
def test_a_settings_file_gives_back_the_settings_written(tmp_path) -> None:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY.to_dict()))
    assert read_settings(path) == TINY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"scales": [[64, 32]], "colour": 1}', "unknown setting"),
    ],
)
def test_a_bad_settings_file_is_refused_with_its_name(tmp_path, text, message) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(MagnetError, match=message):
        read_settings(path)
    with pytest.raises(MagnetError, match="cannot read settings file"):
        read_settings(tmp_path / "missing.json")


def test_the_cpu_run_settings_are_cityscapes_at_a_quarter() -> None:
    quarter = read_settings(Path(__file__).parents[1] / "benchmarks" / "training" / "cityscapes-quarter.json")
    full = get_preset("cityscapes")
    assert [(w * 4, h * 4) for w, h in quarter.scales] == list(full.scales)
    assert (quarter.backbone, quarter.n_refiners, quarter.num_classes) == (full.backbone, 3, 19)
    assert quarter.n_points * 16 == full.n_points


def test_synthesize_train_and_evaluate_are_commands(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listed = capsys.readouterr().out
    assert all(f"    {name} " in listed for name in ("synthesize", "train", "evaluate"))
    for name in ("synthesize", "train", "evaluate"):
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0 and f"magnet-triton {name}" in capsys.readouterr().out


def test_half_precision_checkpoints_load_into_the_bundles_networks(tmp_path) -> None:
    from magnet_triton.networks.checkpoint import save_checkpoint
    from magnet_triton.training.loop import cpu_state_dict

    torch.manual_seed(0)
    refiner = build_network("refinement", 19)
    save_checkpoint(cpu_state_dict(refiner, half=True), tmp_path / "refiner.pth")
    stored = read_checkpoint(tmp_path / "refiner.pth")
    assert stored["conv1.weight"].dtype == torch.float16
    assert stored["bn0.num_batches_tracked"].dtype == torch.int64  # integers stay as they are
    loaded = build_network("refinement", 19)
    load_checkpoint(loaded, tmp_path / "refiner.pth")
    assert loaded.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.conv1.weight, refiner.conv1.weight, rtol=1e-3, atol=1e-4)
