"""The refinement-step kernels and their PyTorch twins.

Tiers, each skipping with a reason where its tool is missing:
- always: the twins (``TorchSteps``) against direct formulas written here with numpy loops;
- nvcc: every ``.cu`` compiles for every default architecture, ``compile_kernels`` writes a manifest;
- g++: the real ``.cu`` code and launcher run in the CPU emulator, equal to the twins;
- ``gpu``: the kernels through pycuda on a GPU, equal to the twins at the presets' sizes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from magnet_triton.errors import MagnetError
from magnet_triton.kernels import build, launcher
from magnet_triton.kernels.launcher import KERNEL_SIGNATURES, CudaSteps
from magnet_triton.ops.steps import TorchSteps, steps_for_device

TWINS = TorchSteps()


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _probs(rng: np.random.Generator, shape: tuple[int, ...], axis: int) -> np.ndarray:
    logits = rng.normal(size=shape).astype(np.float32) * 3
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


# -- direct formulas (numpy, independent of the package) ---------------------------------------------


def direct_margin(planes: np.ndarray) -> np.ndarray:
    """C x H x W -> H x W: largest minus second largest, pixel by pixel."""
    _, h, w = planes.shape
    out = np.empty((h, w), np.float32)
    for y in range(h):
        for x in range(w):
            top = sorted(planes[:, y, x].tolist(), reverse=True)
            out[y, x] = np.float32(top[0]) - np.float32(top[1])
    return out


def direct_nearest(in_len: int, out_len: int) -> list[int]:
    """PyTorch ``nearest``: floor(dst * float32(in / out)) in float32, clamped; identity and x2 special."""
    if in_len == out_len:
        return list(range(out_len))
    if out_len == 2 * in_len:
        return [d // 2 for d in range(out_len)]
    scale = np.float32(in_len) / np.float32(out_len)
    return [min(int(np.floor(np.float32(d) * scale)), in_len - 1) for d in range(out_len)]


def direct_smooth(score: np.ndarray, small_hw: tuple[int, int], kernel: int) -> np.ndarray:
    h, w = score.shape
    sh, sw = small_hw
    rows, cols = direct_nearest(h, sh), direct_nearest(w, sw)
    small = np.array([[score[r, c] for c in cols] for r in rows], np.float32)
    radius = kernel // 2
    median = np.empty_like(small)
    for y in range(sh):
        for x in range(sw):
            window = [
                small[yy, xx] if 0 <= yy < sh and 0 <= xx < sw else 0.0
                for yy in range(y - radius, y + radius + 1)
                for xx in range(x - radius, x + radius + 1)
            ]
            median[y, x] = sorted(window)[len(window) // 2]
    up_rows, up_cols = direct_nearest(sh, h), direct_nearest(sw, w)
    return np.array([[median[r, c] for c in up_cols] for r in up_rows], np.float32)


def direct_topk(values: np.ndarray, k: int) -> list[int]:
    flat = values.reshape(-1).tolist()
    return sorted(range(len(flat)), key=lambda i: (-flat[i], i))[: max(k, 0)]


# -- the twins against the direct formulas (always) --------------------------------------------------


@pytest.mark.parametrize("channels", [2, 3, 7])
def test_uncertainty_twin_is_one_minus_top1_minus_top2(channels: int) -> None:
    probs = _probs(_rng(channels), (1, channels, 9, 13), axis=1)
    probs[0, :, 0, 0] = 1.0 / channels  # all classes tied: margin 0
    probs[0, 0, 1, 1] = probs[0, 1, 1, 1] = 0.5  # two tied leaders
    expected = np.float32(1.0) - direct_margin(probs[0])
    np.testing.assert_array_equal(TWINS.uncertainty(torch.from_numpy(probs)).numpy(), expected)
    assert TWINS.uncertainty(torch.from_numpy(probs))[0, 0] == 1.0


@pytest.mark.parametrize("masked", [False, True])
def test_error_score_twin_is_margin_times_uncertainty_zeroed_by_mask(masked: bool) -> None:
    rng = _rng(3)
    refined = _probs(rng, (5, 8, 11), axis=0)
    uncert = rng.random((8, 11), dtype=np.float32)
    mask = rng.random((8, 11)) < 0.4 if masked else None
    expected = direct_margin(refined) * uncert
    if masked:
        expected[mask] = 0.0
    got = TWINS.error_score(
        torch.from_numpy(refined), torch.from_numpy(uncert), None if mask is None else torch.from_numpy(mask)
    )
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize(
    ("full_hw", "small_hw", "kernel"),
    [
        ((24, 40), (6, 10), 3),
        ((30, 17), (11, 7), 5),
        ((13, 9), (13, 9), 1),
        ((10, 8), (20, 16), 3),
        ((12, 12), (9, 9), 11),
    ],
)
def test_smooth_twin_is_nearest_down_zero_padded_median_nearest_up(
    full_hw: tuple[int, int], small_hw: tuple[int, int], kernel: int
) -> None:
    rng = _rng(sum(full_hw) + kernel)
    score = (rng.integers(0, 6, size=full_hw) / 5).astype(np.float32)  # ties, as in real error maps
    got = TWINS.smooth(torch.from_numpy(score), small_hw, kernel)
    np.testing.assert_array_equal(got.numpy(), direct_smooth(score, small_hw, kernel))


def test_nearest_twin_uses_float32_ratio_where_it_matters() -> None:
    # 508 -> 2448: a float64 ratio would pick other source rows for some outputs.
    from magnet_triton.ops.resize import nearest_source_indices

    assert nearest_source_indices(508, 2448).tolist() == direct_nearest(508, 2448)
    assert nearest_source_indices(2448, 508).tolist() == direct_nearest(2448, 508)


@pytest.mark.parametrize("k", [0, 1, 7, 40, 119, 120, 121, 500])
def test_topk_twin_breaks_ties_by_lowest_index(k: int) -> None:
    values = (_rng(k).integers(0, 3, size=(8, 15)) / 2).astype(np.float32)  # only 0, 0.5 and 1
    got = TWINS.topk(torch.from_numpy(values), k)
    assert got.dtype == torch.int64
    assert got.tolist() == direct_topk(values, k)  # the twin's order is (value desc, index asc) too


def test_replace_twin_copies_every_channel_at_the_indices() -> None:
    rng = _rng(5)
    probs = _probs(rng, (1, 4, 6, 7), axis=1)
    refined = _probs(rng, (4, 6, 7), axis=0)
    indices = [0, 5, 41, 17]
    expected = probs.copy()
    for i in indices:
        expected[0, :, i // 7, i % 7] = refined[:, i // 7, i % 7]
    got = TWINS.replace(torch.from_numpy(probs.copy()), torch.from_numpy(refined), torch.tensor(indices))
    np.testing.assert_array_equal(got.numpy(), expected)


# -- package facts that need no tools ------------------------------------------------------------------


def test_kernel_signatures_match_the_cuda_entry_points() -> None:
    found = {}
    for name in build.KERNEL_SOURCES:
        text = (build.source_dir() / name).read_text()
        for kernel, params in re.findall(r'extern "C" __global__ void (\w+)\(([^)]*)\)', text):
            found[kernel] = len(params.split(","))
    assert found == {name: len(fmt) for name, fmt in KERNEL_SIGNATURES.items()}


def test_launcher_constants_mirror_the_cuda_defines() -> None:
    topk = (build.source_dir() / "topk.cu").read_text()
    smooth = (build.source_dir() / "smooth.cu").read_text()

    def define(text: str, name: str) -> str:
        return re.search(rf"#define {name} (.+?)\s*(//|$)", text, re.M).group(1)

    assert int(define(topk, "TOPK_THREADS")) == launcher.TOPK_THREADS
    assert int(define(topk, "TOPK_THREADS")) * int(define(topk, "TOPK_ITEMS")) == launcher.TOPK_TILE
    assert int(define(topk, "TOPK_PASSES")) == launcher.TOPK_PASSES
    assert int(define(topk, "TOPK_BINS")) == launcher.TOPK_BINS
    assert int(define(topk, "TOPK_HIST_UNROLL")) == launcher.TOPK_HIST_UNROLL
    state_words = int(define(topk, "WS_STATE_WORDS"))
    assert state_words + launcher.TOPK_PASSES * launcher.TOPK_BINS == launcher.TOPK_WS_FIXED_WORDS
    assert int(define(smooth, "SMOOTH_TILE")) == launcher.SMOOTH_TILE


def test_a_build_runs_on_its_archs_newer_minors_and_newer_gpus_through_ptx() -> None:
    manifest = {"archs": ["sm_80", "sm_90"], "ptx": "compute_90"}
    assert (
        build.runs_on(manifest, (8, 6))
        and build.runs_on(manifest, (9, 0))
        and build.runs_on(manifest, (12, 0))
    )
    assert not build.runs_on(manifest, (7, 5))
    assert not build.runs_on({"archs": ["sm_86"], "ptx": None}, (8, 0))


def test_cuda_steps_without_a_gpu_fails_clearly_and_steps_fall_back_to_torch() -> None:
    from magnet_triton.kernels import KernelsUnavailableError, cuda_steps

    with pytest.raises(ValueError, match="CUDA device"):
        cuda_steps("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(KernelsUnavailableError):
            cuda_steps("cuda")
        assert isinstance(steps_for_device("cuda"), TorchSteps)


# -- nvcc ------------------------------------------------------------------------------------------------

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")


@needs_nvcc
@pytest.mark.parametrize("source", build.KERNEL_SOURCES)
def test_every_kernel_source_compiles_without_warnings(source: str, tmp_path) -> None:
    archs = [a for a in build.DEFAULT_ARCHS if a in build.supported_archs(NVCC)]
    assert archs, "nvcc supports none of the default architectures"
    for arch in archs:
        command = [NVCC, "-cubin", f"-arch={arch}", *build.NVCC_FLAGS, "-Werror", "all-warnings"]
        result = subprocess.run(
            [*command, "-o", str(tmp_path / f"{arch}.cubin"), str(build.source_dir() / source)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{source} for {arch}:\n{result.stderr}"


@needs_nvcc
def test_compile_kernels_writes_fatbins_and_a_manifest(tmp_path) -> None:
    manifest_path = build.compile_kernels(tmp_path / "k", archs=("sm_80", "sm_90"), nvcc=NVCC)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["archs"] == ["sm_80", "sm_90"] and manifest["ptx"] == "compute_90"
    assert manifest["sources_sha256"] == build.sources_sha256()
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", manifest["nvcc_version"])
    for entry in manifest["modules"].values():
        assert (manifest_path.parent / entry["file"]).stat().st_size > 0
    assert (
        build.find_kernel_build((9, 0), [tmp_path / "nothing", manifest_path.parent]) == manifest_path.parent
    )
    assert build.find_kernel_build((7, 5), [manifest_path.parent]) is None
    assert set(build.read_modules(manifest_path.parent)) == set(build.KERNEL_SOURCES)


@needs_nvcc
def test_compile_kernels_names_the_archs_nvcc_supports(tmp_path) -> None:
    with pytest.raises(MagnetError, match="sm_90"):
        build.compile_kernels(tmp_path, archs=("sm_35",), nvcc=NVCC)


# -- the kernels in the CPU emulator (g++) -------------------------------------------------------------


@pytest.fixture(scope="module")
def emulated(tmp_path_factory) -> CudaSteps:
    from magnet_triton.kernels import emulator

    cxx = emulator.find_cxx()
    if cxx is None:
        pytest.skip("no C++ compiler (g++) for the kernel emulator")
    library = emulator.build_emulator(tmp_path_factory.mktemp("emu"), cxx=cxx)
    return CudaSteps(emulator.EmulatedBackend(library, sm_count=2), "cpu")


@pytest.fixture
def poisoned(monkeypatch) -> None:
    """Outputs start as NaN / -1, so an element a kernel never writes cannot equal the twin's."""

    def empty(shape, dtype, device):
        fill = float("nan") if dtype.is_floating_point else -1
        return torch.full(shape, fill, dtype=dtype, device=device)

    monkeypatch.setattr(launcher, "_empty", empty)


@pytest.mark.usefixtures("poisoned")
@pytest.mark.parametrize(("channels", "hw"), [(2, (8, 12)), (7, (13, 21)), (19, (16, 32))])
def test_emulated_kernels_equal_twins(emulated: CudaSteps, channels: int, hw: tuple[int, int]) -> None:
    torch.manual_seed(channels)
    probs = torch.rand(1, channels, *hw).softmax(1)
    refined = torch.rand(channels, *hw).softmax(0)
    mask = torch.rand(hw) < 0.3
    u = emulated.uncertainty(probs)
    assert torch.equal(u, TWINS.uncertainty(probs))
    for zero_where in (None, mask, mask.to(torch.uint8)):
        twin_mask = None if zero_where is None else zero_where.bool()
        assert torch.equal(
            emulated.error_score(refined, u, zero_where), TWINS.error_score(refined, u, twin_mask)
        )
    score = TWINS.error_score(refined, u, mask)
    for small_hw, kernel in [
        ((4, 6), 3),
        ((hw[0] // 2 + 1, hw[1] // 3), 5),
        (hw, 1),
        ((2 * hw[0], hw[1]), 11),
    ]:
        expected = TWINS.smooth(score, small_hw, kernel)
        assert torch.equal(emulated.smooth(score, small_hw, kernel), expected)
        assert torch.equal(emulated.smoothed_error_score(refined, u, mask, small_hw, kernel), expected)
    indices = TWINS.topk(score, score.numel() // 3)
    assert torch.equal(
        emulated.replace(probs.clone(), refined, indices), TWINS.replace(probs.clone(), refined, indices)
    )


@pytest.mark.usefixtures("poisoned")
@pytest.mark.parametrize(
    ("kind", "k"),
    [("ties", 1), ("ties", 2500), ("ties", "ones"), ("ties", "ones+1"), ("ties", "N-1"), ("ties", "N"),
     ("ties", "N+5"), ("uniform", 4000), ("signed", 3000), ("constant", 1234), ("upsampled", 700)],
)  # fmt: skip
def test_emulated_topk_selects_the_twins_set_in_index_order(emulated: CudaSteps, kind: str, k) -> None:
    n = 3 * launcher.TOPK_TILE - 777  # three tiles, the last one partial
    gen = torch.Generator().manual_seed(n)
    values = {
        "ties": lambda: torch.randint(0, 3, (n,), generator=gen).float() / 2,
        "uniform": lambda: torch.rand(n, generator=gen),
        "signed": lambda: torch.randn(n, generator=gen).where(torch.arange(n) % 5 != 0, torch.tensor(-0.0)),
        "constant": lambda: torch.full((n,), 0.25),
        "upsampled": lambda: (
            torch.rand(24, 32, generator=gen).repeat_interleave(4, 0).repeat_interleave(4, 1)[:, :96]
        ),
    }[kind]()
    count = values.numel()
    k = {"ones": int((values == 1).sum()), "ones+1": int((values == 1).sum()) + 1, "N-1": count - 1,
         "N": count, "N+5": count + 5}.get(k, k)  # fmt: skip
    got = emulated.topk(values, k)
    expected = TWINS.topk(values, k)
    assert got.dtype == torch.int64 and got.numel() == expected.numel()
    assert torch.equal(got, expected.sort().values)  # the same set, in ascending index order


# -- the kernels on a GPU (pycuda) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_steps():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to PyTorch")
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed (the gpu extra)")
    from magnet_triton.kernels import cuda_steps

    return cuda_steps("cuda")


@pytest.mark.gpu
@pytest.mark.usefixtures("poisoned")
@pytest.mark.parametrize(
    ("hw", "small_hw", "kernel", "channels"),
    [((1024, 2048), (128, 256), 5, 19), ((1024, 2048), (128, 256), 5, 2), ((2448, 2448), (508, 508), 11, 7),
     ((2448, 2448), (508, 508), 11, 3)],
)  # fmt: skip
def test_gpu_kernels_equal_twins(gpu_steps, hw, small_hw, kernel, channels) -> None:
    gen = torch.Generator().manual_seed(channels)
    probs = torch.rand(1, channels, *hw, generator=gen).cuda().softmax(1)
    refined = torch.rand(channels, *hw, generator=gen).cuda().softmax(0)
    mask = (torch.rand(hw, generator=gen) < 0.2).cuda()
    u = gpu_steps.uncertainty(probs)
    assert torch.equal(u, TWINS.uncertainty(probs))
    for zero_where in (None, mask):
        assert torch.equal(
            gpu_steps.error_score(refined, u, zero_where), TWINS.error_score(refined, u, zero_where)
        )
    score = TWINS.error_score(refined, u, mask)
    smoothed = TWINS.smooth(score, small_hw, kernel)
    assert torch.equal(gpu_steps.smooth(score, small_hw, kernel), smoothed)
    assert torch.equal(gpu_steps.smoothed_error_score(refined, u, mask, small_hw, kernel), smoothed)
    n = smoothed.numel()
    for k in (1, 32768, int(0.75 * n), n - 1, n):
        assert torch.equal(gpu_steps.topk(smoothed, k), TWINS.topk(smoothed, k).sort().values), k
    indices = TWINS.topk(smoothed, 32768)
    expected = TWINS.replace(probs.clone(), refined, indices)
    assert torch.equal(gpu_steps.replace(probs.clone(), refined, indices), expected)
    torch.cuda.synchronize()


@pytest.mark.gpu
@pytest.mark.usefixtures("poisoned")
@pytest.mark.parametrize("hw", [(1024, 2048), (2448, 2448)])
def test_gpu_topk_with_heavy_ties_at_the_kth_value(gpu_steps, hw) -> None:
    gen = torch.Generator().manual_seed(hw[0])
    values = (torch.randint(0, 3, hw, generator=gen).float() / 2).cuda()
    n = values.numel()
    ones = int((values == 1).sum())
    for k in (1, 32768, ones, ones + 1, ones + 32768, n - 1, n):
        assert torch.equal(gpu_steps.topk(values, k), TWINS.topk(values, k).sort().values), k
