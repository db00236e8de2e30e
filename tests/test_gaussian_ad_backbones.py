"""Our EfficientNet taps against the efficientnet_pytorch / efficientnet-lite-pytorch packages (test-only deps), and
the inference copy feature extraction runs (BatchNorm folded, in place, channels-last) against the model itself."""

from __future__ import annotations

import hashlib

import efficientnet_lite_pytorch as lite_package
import efficientnet_pytorch
import pytest
import torch

from common.errors import DataError, MissingDataError
from gaussian_ad import engine
from gaussian_ad.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WEIGHTS_SHA256,
    EfficientNetFeatures,
    SameConv2d,
    fold_batchnorm,
    inference_model,
    lite0_weights_path,
    load_weights,
    pretrained_features,
    round_filters,
    same_padding,
    weights_path,
)

B4_DIMS = [48, 24, 32, 56, 112, 160, 272, 448, 1792]  # reference note §1.3 / anomasota "featurevector-size"
B0_DIMS = [32, 16, 24, 40, 80, 112, 192, 320, 1280]


def _randomise_batch_norm(model: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(1 + 0.1 * torch.randn(module.num_features, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.num_features, generator=generator))


def _stage_end_outputs(reference: torch.nn.Module, images: torch.Tensor, stage_ends: list[int]) -> list[torch.Tensor]:
    """Stem, last block of each stage (read through hooks) and head of an efficientnet_pytorch-style model."""
    outputs: dict[int, torch.Tensor] = {}
    hooks = [
        reference._blocks[index].register_forward_hook(
            lambda _module, _inputs, output, index=index: outputs.__setitem__(index, output)
        )
        for index in stage_ends
    ]
    with torch.no_grad():
        stem = reference._swish(reference._bn0(reference._conv_stem(images)))
        head = reference.extract_features(images)
    for hook in hooks:
        hook.remove()
    return [stem] + [outputs[index] for index in stage_ends] + [head]


def _reference_model(name: str, padding: str, size: int, monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """efficientnet_pytorch 0.7.x; with padding "0.6.3" every block is built for the full image size, as 0.6.3 did."""
    if padding == "0.6.3":
        with monkeypatch.context() as patch:
            patch.setattr(efficientnet_pytorch.model, "calculate_output_image_size", lambda size, stride: size)
            return efficientnet_pytorch.EfficientNet.from_name(name, image_size=size).eval()
    return efficientnet_pytorch.EfficientNet.from_name(name, image_size=size).eval()


# B0 at its native 224; B4 at 190 (half its native 380, same odd-size pattern 95 → 48) and B1 at 120 for time.
@pytest.mark.parametrize(
    ("name", "padding", "size"),
    [
        ("efficientnet-b0", "0.7", 224),
        ("efficientnet-b4", "0.6.3", 190),
        ("efficientnet-b4", "0.7", 190),
        ("efficientnet-b1", "0.6.3", 120),
    ],
)
def test_taps_equal_efficientnet_pytorch(name: str, padding: str, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(0)
    reference = _reference_model(name, padding, size, monkeypatch)
    _randomise_batch_norm(reference, generator)
    ours = EfficientNetFeatures(name, padding=padding, image_size=size).eval()
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("_fc.")})
    images = torch.randn(1, 3, size, size, generator=generator)
    with torch.no_grad():
        maps = ours(images, pool=False)
        pooled = ours(images)
    expected = _stage_end_outputs(reference, images, ours.stage_ends)
    assert len(maps) == 9
    for level, (got, want) in enumerate(zip(maps, expected, strict=True)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"level L{level + 1}")
        torch.testing.assert_close(pooled[level], want.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)


def test_b4_dims_and_padding_versions_differ() -> None:
    generator = torch.Generator().manual_seed(1)
    old = EfficientNetFeatures("efficientnet-b4", "0.6.3", image_size=190)
    new = EfficientNetFeatures("efficientnet-b4", "0.7", image_size=190)
    assert old.channels == B4_DIMS and len(old.stage_ends) == 7 and old.stage_ends == [1, 5, 9, 15, 21, 29, 31]
    new.load_state_dict(old.state_dict())
    images = torch.randn(1, 3, 190, 190, generator=generator)
    with torch.no_grad():
        a, b = old.eval()(images), new.eval()(images)
    torch.testing.assert_close(a[1], b[1])  # L2 (95×95): no stride-2 conv on an odd size yet
    assert not torch.allclose(a[2], b[2])  # L3: 95 → 48 is padded (0, 1) by 0.6.3 (for 190) and (1, 1) by 0.7


def test_same_padding_hand_cases() -> None:
    assert same_padding(380, 3, 2) == (0, 1)
    assert same_padding(95, 5, 2) == (2, 2)
    assert same_padding(380, 5, 2) == (1, 2)
    assert same_padding(7, 3, 1) == (1, 1)
    assert round_filters(32, 1.4) == 48 and round_filters(1280, 1.4) == 1792 and round_filters(16, 1.1) == 16


def test_lite0_real_weights_equal_efficientnet_lite_pytorch() -> None:
    ours = pretrained_features("efficientnet-lite0")
    assert ours.channels == B0_DIMS and ours.stage_ends == [0, 2, 4, 7, 10, 14, 15]
    reference = lite_package.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(lite0_weights_path())
    ).eval()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        maps = ours(images, pool=False)
    for level, (got, want) in enumerate(zip(maps, _stage_end_outputs(reference, images, ours.stage_ends), strict=True)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"level L{level + 1}")


def test_truncated_model_loads_and_matches_full() -> None:
    full = pretrained_features("efficientnet-lite0")
    short = pretrained_features("efficientnet-lite0", deepest_level=4)
    assert short.channels == B0_DIMS[:4] and len(short._blocks) == 5
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for got, want in zip(short(images), full(images)[:4], strict=True):
            torch.testing.assert_close(got, want)


def test_bad_weight_files(tmp_path) -> None:
    model = EfficientNetFeatures("efficientnet-lite0")
    wrong_hash = tmp_path / "efficientnet-lite0-00000000.pth"
    torch.save(model.state_dict(), wrong_hash)
    with pytest.raises(DataError, match="sha256 does not start with 00000000"):
        load_weights(model, wrong_hash)
    wrong_keys = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong_keys)
    with pytest.raises(DataError, match="keys do not fit efficientnet-lite0"):
        load_weights(model, wrong_keys)
    with pytest.raises(ValueError, match="unknown architecture"):
        EfficientNetFeatures("efficientnet-b9")
    with pytest.raises(ValueError, match="padding"):
        EfficientNetFeatures("efficientnet-b0", padding="0.5")


def test_missing_b_weights_name_the_file_and_the_url(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOD_REPRO_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingDataError, match=r"efficientnet-b4-6ed6700e\.pth.*lukemelas"):
        weights_path("efficientnet-b4", allow_download=False)
    placed = tmp_path / "torch" / "hub" / "checkpoints" / "efficientnet-b4-6ed6700e.pth"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"")  # not the pinned file: refused, with what to do
    with pytest.raises(DataError, match=r"efficientnet-b4-6ed6700e\.pth: sha256 is .*delete it"):
        weights_path("efficientnet-b4", allow_download=False)
    monkeypatch.setitem(WEIGHTS_SHA256, placed.name, hashlib.sha256(b"").hexdigest())
    assert weights_path("efficientnet-b4", allow_download=False) == placed


# ------------------------------------------------------------------------------------------------ inference copy
FEATURE_TOLERANCE = 1e-5  # max |difference| of a level, relative to its largest |value|


def _assert_levels_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for level, (a, b) in enumerate(zip(got, want, strict=True), start=1):
        assert a.shape == b.shape, f"L{level}"
        assert float((a - b).abs().max()) <= FEATURE_TOLERANCE * float(b.abs().max()), f"L{level}"


def _random_model(name: str, padding: str, size: int, deepest_level: int = 9) -> EfficientNetFeatures:
    """Random weights and BatchNorm statistics (the defaults would make folding the identity), eval mode."""
    model = EfficientNetFeatures(name, padding, image_size=size, deepest_level=deepest_level)
    _randomise_batch_norm(model, torch.Generator().manual_seed(4))
    return model.eval()


@pytest.mark.parametrize(
    ("name", "padding", "deepest_level"),
    [("efficientnet-b0", "0.6.3", 9), ("efficientnet-b0", "0.7", 4), ("efficientnet-lite0", "0.7", 9)],
)
def test_folded_batchnorm_equals_the_model_on_every_tap(
    name: str, padding: str, deepest_level: int, one_torch_thread: None
) -> None:
    model = _random_model(name, padding, 64, deepest_level)
    folded = fold_batchnorm(model)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want_maps, want = model(images, pool=False), model(images)
    with torch.inference_mode():
        got_maps, got = folded(images, pool=False), folded(images)
    _assert_levels_close(got_maps, want_maps)
    _assert_levels_close(got, want)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in folded.modules())
    assert not any(parameter.requires_grad for parameter in folded.parameters())
    assert isinstance(model._blocks[0]._bn1, torch.nn.BatchNorm2d)  # a copy: the model keeps its BatchNorms


@pytest.mark.parametrize(("kernel", "size", "groups"), [(3, 64, 8), (5, 64, 8), (3, 8, 1), (3, 9, 1), (5, 7, 8)])
def test_padding_in_the_kernel_gives_the_same_convolution(kernel: int, size: int, groups: int) -> None:
    conv = SameConv2d(8, 8, kernel, size, stride=2, groups=groups, bias=True)
    images = torch.randn(2, 8, size, size, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        want = conv(images)
        padding, kernel_size = conv.padding, conv.kernel_size
        conv.pad_in_kernel()
        got = conv(images)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    if any(padding):  # symmetric (kernel 3 on 9: (1, 1)): left as it was
        assert (conv.padding, conv.kernel_size) == (padding, kernel_size)
    else:
        assert conv.kernel_size == (kernel + 1, kernel + 1) and not any(conv.pad)


def test_inference_model_on_channels_last_input_equals_the_model(one_torch_thread: None) -> None:
    model = _random_model("efficientnet-b0", "0.6.3", 64)
    fast = inference_model(model)
    assert fast.activation.inplace and not model.activation.inplace
    assert fast._blocks[1]._expand_conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert model._blocks[1]._depthwise_conv.pad == (0, 1, 0, 1)  # 64 → 32: padded in the kernel in the copy
    assert not any(any(conv.pad) for conv in fast.modules() if isinstance(conv, SameConv2d))
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want_maps, want = model(images, pool=False), model(images)
    with torch.inference_mode():
        channels_last = images.contiguous(memory_format=torch.channels_last)
        got_maps, got = fast(channels_last, pool=False), fast(channels_last)
    assert all(level.is_contiguous(memory_format=torch.channels_last) for level in got_maps)
    _assert_levels_close(got_maps, want_maps)
    _assert_levels_close(got, want)


def test_feature_extraction_runs_the_inference_model(monkeypatch: pytest.MonkeyPatch, one_torch_thread: None) -> None:
    model = _random_model("efficientnet-b0", "0.6.3", 32)
    made: list[EfficientNetFeatures] = []

    def recorded(backbone: EfficientNetFeatures) -> EfficientNetFeatures:
        made.append(inference_model(backbone))
        return made[-1]

    monkeypatch.setattr(engine, "inference_model", recorded)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    levels = engine.extract_features(model, images, torch.device("cpu"), batch_size=2, progress=False)
    assert len(made) == 1 and made[0] is not model
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        want = model((images.float() / 255 - mean) / std)
    _assert_levels_close(levels, want)
    assert model._conv_stem.weight.is_contiguous() and isinstance(model._bn0, torch.nn.BatchNorm2d)  # untouched
