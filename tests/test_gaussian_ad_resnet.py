"""ResNet-18/34/50 taps: torchvision's parameter counts and key names, a functional forward, the protocol on them."""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

import main
from common.errors import DataError, MissingDataError
from gaussian_ad import data
from gaussian_ad.backbones import load_weights
from gaussian_ad.config import CONFIGS
from gaussian_ad.engine import fit
from gaussian_ad.protocol import CategoryFeatures, Variant
from gaussian_ad.resnet import ResNetFeatures, pretrained_resnet, resnet_weights_path

# torchvision's published counts (ResNet*_Weights.IMAGENET1K_V1 meta "num_params") and stage layouts (He et al.)
TORCHVISION = {
    "resnet18": (11_689_512, (2, 2, 2, 2), False),
    "resnet34": (21_797_672, (3, 4, 6, 3), False),
    "resnet50": (25_557_032, (3, 4, 6, 3), True),
}


def _torchvision_state(name: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random state dict spelled with torchvision's ResNet keys, written out independently of our module."""
    _, blocks, bottleneck = TORCHVISION[name]
    state: dict[str, torch.Tensor] = {}

    def conv(key: str, out_channels: int, in_channels: int, kernel: int) -> None:
        scale = math.sqrt(2 / (in_channels * kernel * kernel))
        state[f"{key}.weight"] = torch.randn(out_channels, in_channels, kernel, kernel, generator=generator) * scale

    def batch_norm(key: str, channels: int) -> None:
        state[f"{key}.weight"] = 1 + 0.1 * torch.randn(channels, generator=generator)
        state[f"{key}.bias"] = 0.1 * torch.randn(channels, generator=generator)
        state[f"{key}.running_mean"] = 0.1 * torch.randn(channels, generator=generator)
        state[f"{key}.running_var"] = torch.rand(channels, generator=generator) + 0.5
        state[f"{key}.num_batches_tracked"] = torch.tensor(0)

    conv("conv1", 64, 3, 7)
    batch_norm("bn1", 64)
    in_channels, expansion = 64, 4 if bottleneck else 1
    for stage, (width, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True), start=1):
        for index in range(count):
            prefix = f"layer{stage}.{index}"
            if bottleneck:
                conv(f"{prefix}.conv1", width, in_channels, 1)
                batch_norm(f"{prefix}.bn1", width)
                conv(f"{prefix}.conv2", width, width, 3)
                batch_norm(f"{prefix}.bn2", width)
                conv(f"{prefix}.conv3", width * 4, width, 1)
                batch_norm(f"{prefix}.bn3", width * 4)
            else:
                conv(f"{prefix}.conv1", width, in_channels, 3)
                batch_norm(f"{prefix}.bn1", width)
                conv(f"{prefix}.conv2", width, width, 3)
                batch_norm(f"{prefix}.bn2", width)
            if index == 0 and (stage > 1 or in_channels != width * expansion):
                conv(f"{prefix}.downsample.0", width * expansion, in_channels, 1)
                batch_norm(f"{prefix}.downsample.1", width * expansion)
            in_channels = width * expansion
    state["fc.weight"] = 0.01 * torch.randn(1000, in_channels, generator=generator)
    state["fc.bias"] = torch.zeros(1000)
    return state


def _functional_taps(state: dict[str, torch.Tensor], name: str, images: torch.Tensor) -> list[torch.Tensor]:
    """He et al.'s ResNet (torchvision v1.5 bottleneck) with torch.nn.functional straight from the state dict."""
    _, blocks, bottleneck = TORCHVISION[name]

    def bn(x: torch.Tensor, key: str) -> torch.Tensor:
        return F.batch_norm(
            x, state[f"{key}.running_mean"], state[f"{key}.running_var"], state[f"{key}.weight"], state[f"{key}.bias"]
        )

    x = F.max_pool2d(F.relu(bn(F.conv2d(images, state["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    taps = [x]
    for stage, count in enumerate(blocks, start=1):
        for index in range(count):
            p, stride = f"layer{stage}.{index}", 2 if stage > 1 and index == 0 else 1
            if bottleneck:
                out = F.relu(bn(F.conv2d(x, state[f"{p}.conv1.weight"]), f"{p}.bn1"))
                out = F.relu(bn(F.conv2d(out, state[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn2"))
                out = bn(F.conv2d(out, state[f"{p}.conv3.weight"]), f"{p}.bn3")
            else:
                out = F.relu(bn(F.conv2d(x, state[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
                out = bn(F.conv2d(out, state[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            if f"{p}.downsample.0.weight" in state:
                x = bn(F.conv2d(x, state[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            x = F.relu(out + x)
        taps.append(x)
    return [tap.mean(dim=(2, 3)) for tap in taps]


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_parameter_count_and_torchvision_keys_load_strictly(name: str, tmp_path) -> None:
    model = ResNetFeatures(name)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION[name][0]
    state = _torchvision_state(name, torch.Generator().manual_seed(0))
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in state.items()}
    path = tmp_path / f"{name}-synthetic.pth"  # no 8-digit hash in the name: nothing to check
    torch.save(state, path)
    loaded = pretrained_resnet(name, path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)


@pytest.mark.parametrize(
    ("name", "dims"), [("resnet18", [64, 64, 128, 256, 512]), ("resnet50", [64, 256, 512, 1024, 2048])]
)
def test_taps_equal_a_functional_resnet(name: str, dims: list[int]) -> None:
    generator = torch.Generator().manual_seed(1)
    state = _torchvision_state(name, generator)
    model = ResNetFeatures(name)
    model.load_state_dict(state)
    model.eval()
    images = torch.randn(2, 3, 64, 64, generator=generator)
    with torch.no_grad():
        taps = model(images)
        maps = model(images, pool=False)
        expected = _functional_taps(state, name, images)
    assert model.channels == dims and [t.shape for t in taps] == [(2, d) for d in dims]
    assert [m.shape[-1] for m in maps] == [16, 16, 8, 4, 2]  # /4 after the max-pool, then /2 per stage
    for level, (got, want) in enumerate(zip(taps, expected, strict=True)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=f"level L{level + 1}")


def test_bad_weight_files_and_names(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = ResNetFeatures("resnet18")
    wrong_keys = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong_keys)
    with pytest.raises(DataError, match="keys do not fit resnet18"):
        load_weights(model, wrong_keys)
    wrong_hash = tmp_path / "resnet18-f37072fd.pth"
    torch.save(model.state_dict(), wrong_hash)
    with pytest.raises(DataError, match="sha256 does not start with f37072fd"):
        load_weights(model, wrong_hash)
    with pytest.raises(ValueError, match="unknown ResNet 'resnet101'"):
        ResNetFeatures("resnet101")
    monkeypatch.setenv("OOD_REPRO_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingDataError, match=r"resnet50-0676ba61\.pth.*download\.pytorch\.org/models/"):
        resnet_weights_path("resnet50", allow_download=False)
    with pytest.raises(ValueError, match="architecture: unknown backbone 'resnet101'"):
        data.resolution("resnet101")


@pytest.fixture
def synthetic_resnet18(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Experiments build resnet18 from a random state dict with torchvision's keys; caches start empty."""
    path = tmp_path / "resnet18-synthetic.pth"
    torch.save(_torchvision_state("resnet18", torch.Generator().manual_seed(2)), path)
    monkeypatch.setattr(data, "pretrained_resnet", lambda name: pretrained_resnet(name, path))
    monkeypatch.setattr(data, "_BACKBONES", {})
    monkeypatch.setattr(data, "_FEATURES", OrderedDict())


def test_gaussian_protocol_on_resnet_features(tmp_path, monkeypatch: pytest.MonkeyPatch, synthetic_resnet18) -> None:
    tiny = dataclasses.replace(
        CONFIGS["demo"], architecture="resnet18", categories=("grid",), n_train=5, n_test_good=2, n_test_defect=2
    )
    monkeypatch.setitem(CONFIGS, "demo", tiny)
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    options = main.RunOptions(output=tmp_path / "runs", progress=False, device="cpu")
    rows = main.run_paper("gaussian_ad", ["table1"], options)
    assert {(r.row, r.column) for r in rows} == {
        (row, column) for row in ("L1", "L2", "L3", "L4", "L5", "sum") for column in ("MVG", "L2", "SED")
    }
    assert all(0 <= r.ours <= 100 and "resnet18" in r.note and r.paper_value is None for r in rows)
    features = CategoryFeatures(**next(iter(data._FEATURES.values())))
    with pytest.raises(ValueError, match=r"levels: this backbone has levels L1\.\.L5, got L7"):
        fit(features, Variant("mvg"), (6,))
    assert isinstance(data.backbone("resnet18", None), ResNetFeatures)
    assert data.resolution("resnet18") == 224


def test_table7_is_a_paper_scale_experiment_over_the_resnets(
    tmp_path, monkeypatch: pytest.MonkeyPatch, synthetic_resnet18
) -> None:
    tiny = dataclasses.replace(
        CONFIGS["demo"], resnet_architectures=("resnet18",), categories=("grid",), n_train=5, n_test_good=2,
        n_test_defect=2,
    )  # fmt: skip
    monkeypatch.setitem(CONFIGS, "paper", tiny)
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    assert main.get_paper("gaussian_ad").experiment("table7").scales == ("paper",)
    options = main.RunOptions(scale="paper", output=tmp_path, progress=False, device="cpu")
    rows = main.run_paper("gaussian_ad", ["table7"], options)
    assert [(r.row, r.column) for r in rows] == [(level, "resnet18") for level in ("L1", "L2", "L3", "L4", "L5", "sum")]
