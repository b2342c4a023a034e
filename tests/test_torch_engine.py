"""The torch engine: network files, probabilities, precision and CUDA graphs (the latter on a GPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from magnet_triton.errors import MagnetError  # noqa: E402
from magnet_triton.networks.weights import network_with_weights  # noqa: E402
from magnet_triton.torch_engine import TorchEngine, load_network_file, save_network_file  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")


@pytest.fixture(scope="module")
def fpn_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("torch_engine") / "fpn.pt"
    save_network_file(path, "fpn", 4, network_with_weights("fpn", 4, random_seed=2))
    return path


def test_a_network_file_rebuilds_the_same_network(fpn_file):
    name, num_classes, model = load_network_file(fpn_file)
    original = network_with_weights("fpn", 4, random_seed=2)
    assert (name, num_classes, model.training) == ("fpn", 4, False)
    for key, value in original.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_the_engine_returns_fp32_softmax_of_the_networks_logits(fpn_file):
    engine = TorchEngine.from_file(fpn_file)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.softmax(network_with_weights("fpn", 4, random_seed=2)(x), dim=1)
    got = engine(x)
    assert got.dtype == torch.float32 and got.shape == (2, 4, 64, 96)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(2, 64, 96), rtol=0, atol=1e-5)


def test_files_that_are_not_network_files_are_refused(tmp_path, fpn_file):
    plain = tmp_path / "state.pt"
    torch.save(network_with_weights("fpn", 4, random_seed=2).state_dict(), plain)
    with pytest.raises(MagnetError, match="not a network file of the torch engine"):
        load_network_file(plain)
    data = torch.load(fpn_file, weights_only=True)
    data["num_classes"] = 5  # the weights are for 4 classes
    wrong = tmp_path / "wrong.pt"
    torch.save(data, wrong)
    with pytest.raises(MagnetError, match="mis-shaped keys"):
        load_network_file(wrong)


def test_settings_a_cpu_cannot_run_are_refused(fpn_file):
    with pytest.raises(MagnetError, match="fp16 needs a CUDA device"):
        TorchEngine.from_file(fpn_file, precision="fp16")
    with pytest.raises(MagnetError, match="CUDA graphs need a CUDA device"):
        TorchEngine.from_file(fpn_file, cuda_graphs=True)
    with pytest.raises(MagnetError, match="precision must be one of"):
        TorchEngine.from_file(fpn_file, precision="int8")


def test_bad_batches_are_refused_before_the_network_runs(fpn_file):
    engine = TorchEngine.from_file(fpn_file)
    with pytest.raises(MagnetError, match=r"B x C x h x w floats"):
        engine(torch.zeros(3, 64, 64))
    with pytest.raises(MagnetError, match=r"B x C x h x w floats"):
        engine(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


@pytest.mark.gpu
@needs_cuda
def test_fp16_keeps_the_ocr_attention_in_fp32_and_ranks_classes_like_fp32(tmp_path):
    path = tmp_path / "ocr.pt"
    save_network_file(path, "hrnet18+ocr", 19, network_with_weights("hrnet18+ocr", 19, random_seed=0))
    fp32 = TorchEngine.from_file(path, device="cuda")
    fp16 = TorchEngine.from_file(path, device="cuda", precision="fp16")
    x = torch.randn(2, 3, 128, 256, generator=torch.Generator().manual_seed(0)).cuda()
    a, b = fp32(x), fp16(x)
    assert b.dtype == torch.float32 and b.is_cuda
    # Half precision keeps ~3 decimal digits: class ranks agree but for near-ties.
    assert (a.argmax(1) == b.argmax(1)).float().mean().item() >= 0.99
    assert (a - b).abs().max().item() < 5e-2


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_replays_equal_the_eager_run_for_each_batch_size(fpn_file):
    eager = TorchEngine.from_file(fpn_file, device="cuda")
    graphs = TorchEngine.from_file(fpn_file, device="cuda", cuda_graphs=True)
    for batch in (1, 3, 1):
        x = torch.randn(batch, 3, 64, 64, device="cuda")
        torch.testing.assert_close(graphs(x), eager(x), rtol=1e-4, atol=1e-5)
    assert sorted(k[0] for k in graphs._graphs) == [1, 3]
