"""FastAP checkpoints (synthetic, full size) as torchvision ResNets, checked against the reference.

Each family's checkpoint is written once per session as MAT v7 and v7.3 (uncompressed:
random weights do not shrink, and the compressed path is exercised by the real files).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the usual spelling)

from converters.errors import MatConvNetError
from converters.fastap.families import (
    FAMILIES,
    FAMILY_RESNET18_PT,
    FAMILY_RESNET50_CAFFE,
    convert_fastap,
    detect_family,
)
from converters.fastap.input_scaling import check_input_scaling
from converters.mcn.array_order import matlab_to_torch
from converters.mcn.compare import compare_outputs
from converters.mcn.net import McnLayer, McnNet, McnParam, McnVar
from converters.mcn.reference import run_reference

DIM = 512


def _pixels_input(net: McnNet, batch: int, seed: int) -> np.ndarray:
    """MATLAB ``data``: random 0-255 RGB pixels minus the net's mean image, 224x224x3xN."""
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(0, 255, (224, 224, 3, batch))
    mean = np.asarray(net.meta["normalization"]["averageImage"], dtype=np.float64)
    mean = mean.reshape(1, 1, 3, 1) if mean.size == 3 else mean[..., None]
    return (pixels - mean).astype(np.float32)


def _torch_input(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return matlab_to_torch(torch.from_numpy(x.astype(np.float64))).contiguous().to(dtype)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_converts_equal_to_the_reference(family: str, build: SimpleNamespace) -> None:
    net = build.net(family)
    assert detect_family(net) == family
    x = _pixels_input(net, batch=1, seed=1)
    reference = run_reference(net, {"data": x}, dtype=np.float64)
    model32 = convert_fastap(net)
    model64 = convert_fastap(net, dtype=torch.float64)
    with torch.no_grad():
        ours32 = model32.mcn_outputs(_torch_input(x, torch.float32))
        ours64 = model64.mcn_outputs(_torch_input(x, torch.float64), intermediate=False)
        embedding = model32(_torch_input(x, torch.float32))
    base_var = "pool5" if family == FAMILY_RESNET50_CAFFE else "classifier_flatten"
    for var in (base_var, "logits", "feats_l2"):
        assert var in ours32
    # the conv/BN outputs of every layer are compared too (53 or more vars)
    shared = {k: v for k, v in reference.items() if k in ours32}
    assert len(shared) >= 40
    for result in compare_outputs(shared, ours32):
        assert not result.problem, result
        assert result.cosine >= 0.99999 and result.rel_l2 <= 1e-5, result
    # float64 weights (BatchNorm fold unrounded): round-off only, on the outputs that matter
    head = {k: reference[k] for k in (base_var, "logits", "feats_l2")}
    for result in compare_outputs(head, ours64):
        assert result.rel_l2 <= 1e-10, result
    # the embedding is feats_l2, unit norm
    assert torch.equal(embedding, ours32["feats_l2"][:, :, 0, 0])
    assert torch.allclose(embedding.norm(dim=1), torch.ones(1), atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_v73_file_gives_the_same_network_and_model(family: str, build: SimpleNamespace) -> None:
    v7 = build.net(family, "7")
    v73 = build.net(family, "7.3")
    assert v73.format == "v7.3" and v7.format == "v5"
    assert v7.layer_names() == v73.layer_names()
    assert list(v7.params) == list(v73.params)
    for name, param in v7.params.items():
        assert np.array_equal(np.asarray(param.value).reshape(-1),
                              np.asarray(v73.params[name].value).reshape(-1)), name
    x = _torch_input(_pixels_input(v7, batch=1, seed=2), torch.float32)
    with torch.no_grad():
        assert torch.equal(convert_fastap(v7)(x), convert_fastap(v73)(x))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_stored_value_lands_in_the_model_once(family: str, build: SimpleNamespace) -> None:
    net = build.net(family)
    model = convert_fastap(net)
    # BatchNorm keeps 4 values per channel on both sides (mult, bias, mu, sigma) /
    # (weight, bias, running_mean, running_var); convs and fc match one to one
    stored = sum(v.numel() for k, v in model.state_dict().items()
                 if not k.endswith("num_batches_tracked"))
    assert stored == net.param_count()
    conv = model.base.layer1[0].conv1
    first = "res2a_branch2a_filter" if family == FAMILY_RESNET50_CAFFE else \
        "features_4_0_conv1_filter"
    expected = np.asarray(net.params[first].value).transpose(3, 2, 0, 1)
    assert np.array_equal(conv.weight.detach().numpy(), expected)


def test_caffe_stride_sits_on_the_1x1_conv(build: SimpleNamespace) -> None:
    model = convert_fastap(build.net(FAMILY_RESNET50_CAFFE))
    for stage in (model.base.layer2, model.base.layer3, model.base.layer4):
        assert stage[0].conv1.stride == (2, 2) and stage[0].conv2.stride == (1, 1)
    assert model.base.conv1.bias is not None
    pt = convert_fastap(build.net(FAMILY_RESNET18_PT))
    assert pt.base.layer2[0].conv1.stride == (2, 2) and pt.base.conv1.bias is None


def _edited(build: SimpleNamespace, family: str = FAMILY_RESNET18_PT) -> McnNet:
    return copy.deepcopy(build.net(family))


def test_unknown_layer_type_is_named(build: SimpleNamespace) -> None:
    net = _edited(build)
    net.layers.insert(5, McnLayer("mystery", "dagnn.Mystery", ["features_3"], ["m"], []))
    with pytest.raises(MatConvNetError, match=r"'mystery'.*'dagnn.Mystery'"):
        convert_fastap(net)


def test_wrong_shape_param_is_named(build: SimpleNamespace) -> None:
    net = _edited(build)
    net.params["features_5_0_conv1_filter"].value = np.zeros((3, 3, 64, 64), np.float32)
    with pytest.raises(MatConvNetError, match=r"features_5_0_conv1_filter.*3x3x64x64.*"
                                              r"3x3x64x128"):
        convert_fastap(net)


def test_missing_param_is_named(build: SimpleNamespace) -> None:
    net = _edited(build)
    del net.params["features_6_1_bn2_moments"]
    with pytest.raises(MatConvNetError, match="features_6_1_bn2_moments"):
        convert_fastap(net)


def test_unused_param_is_named(build: SimpleNamespace) -> None:
    net = _edited(build)
    net.params["classifier_0_filter"] = McnParam("classifier_0_filter",
                                                 np.zeros((1, 1, 512, 1000), np.float32))
    with pytest.raises(MatConvNetError, match="not used.*classifier_0_filter"):
        convert_fastap(net)


def test_param_shared_by_two_layers_is_refused(build: SimpleNamespace) -> None:
    net = _edited(build)
    net.layer("features_4_1_conv1").params = ["features_4_0_conv1_filter"]
    with pytest.raises(MatConvNetError, match="features_4_0_conv1_filter.*more than one"):
        convert_fastap(net)


def test_caffe_stride_in_the_wrong_place_is_refused(build: SimpleNamespace) -> None:
    net = _edited(build, FAMILY_RESNET50_CAFFE)
    net.layer("res3a_branch2a").block["stride"] = np.array([[1.0, 1.0]])
    net.layer("res3a_branch2b").block["stride"] = np.array([[2.0, 2.0]])
    with pytest.raises(MatConvNetError, match=r"'res3a_branch2a': stride is \[1 1\]"):
        convert_fastap(net)


def test_head_that_is_not_an_l2_normalisation_is_refused(build: SimpleNamespace) -> None:
    net = _edited(build)
    net.layer("L2norm").block["param"] = np.array([[5.0, 1.0, 2e-5, 0.75]])
    with pytest.raises(MatConvNetError, match="'L2norm'.*not an L2 normalisation"):
        convert_fastap(net)


@pytest.mark.parametrize(("layer", "edit", "message"), [
    ("fc", {"hasBias": {"a": 1.0}}, r"layer 'fc': bad 'hasBias'"),
    ("features_0", {"hasBias": []}, r"'features_0': hasBias is True"),
    ("features_2", {"leak": {"a": 1.0}}, r"layer 'features_2': bad 'leak'"),
    ("L2norm", {"param": {"a": 1.0}}, r"layer 'L2norm': bad 'param'"),
    ("features_3", {"method": {"a": 1.0}}, r"layer 'features_3': bad 'method'"),
    ("features_1", {"outputs": []}, r"layer 'features_1' .* exactly one output"),
    ("L2norm", {"outputs": []}, r"layer 'L2norm' .* exactly one output"),
])
def test_malformed_blocks_are_named_not_tracebacks(layer: str,
                                                   edit: dict[str, object],
                                                   message: str,
                                                   build: SimpleNamespace) -> None:
    net = _edited(build)
    target = net.layer(layer)
    for key, value in edit.items():
        if key == "outputs":
            target.outputs = list(value)  # type: ignore[call-overload]
        else:
            target.block[key] = value
    with pytest.raises(MatConvNetError, match=message):
        convert_fastap(net)


def test_non_positive_sigma_is_refused(build: SimpleNamespace) -> None:
    net = _edited(build)
    net.params["features_1_moments"].value[4, 1] = 0.0
    with pytest.raises(MatConvNetError, match="features_1_moments.*channel 5"):
        convert_fastap(net)


def test_network_of_another_kind_is_not_a_family() -> None:
    net = McnNet(layers=[McnLayer("conv", "dagnn.Conv", ["x"], ["y"], ["w"])],
                 params={"w": McnParam("w", np.zeros((3, 3, 1, 1), np.float32))},
                 vars=[McnVar("x"), McnVar("y")], source="other.mat")
    with pytest.raises(MatConvNetError, match="other.mat: not a FastAP ResNet"):
        detect_family(net)


# ---------------------------------------------------------------- input scaling

def _scaling_net(images: np.ndarray, preprocess: str) -> McnNet:
    """conv (7x7/2 pad 3, 16 filters) + BN whose moments are the stats under ``preprocess``."""
    rng = np.random.default_rng(5)
    filters = rng.standard_normal((7, 7, 3, 16)) * 0.05
    mean = np.array([0.485, 0.456, 0.406])
    x = torch.from_numpy(images.astype(np.float64)).permute(0, 3, 1, 2)
    if preprocess == "matlab":
        x = x - torch.from_numpy(mean).view(1, 3, 1, 1)
    else:
        x = (x / 255 - torch.from_numpy(mean).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    y = F.conv2d(x, torch.from_numpy(filters.transpose(3, 2, 0, 1).copy()), stride=2, padding=3)
    mu = y.mean(dim=(0, 2, 3)).numpy()
    sigma = np.sqrt(y.var(dim=(0, 2, 3), unbiased=False).numpy() + 1e-5)
    conv_block = {"size": np.array([[7.0, 7.0, 3.0, 16.0]]), "hasBias": np.array([[False]]),
                  "pad": np.array([[3.0, 3.0, 3.0, 3.0]]), "stride": np.array([[2.0, 2.0]])}
    return McnNet(
        layers=[McnLayer("features_0", "dagnn.Conv", ["data"], ["features_0"],
                         ["features_0_filter"], conv_block),
                McnLayer("features_1", "dagnn.BatchNorm", ["features_0"], ["features_1"],
                         ["features_1_mult", "features_1_bias", "features_1_moments"])],
        params={"features_0_filter": McnParam("features_0_filter", filters.astype(np.float32)),
                "features_1_mult": McnParam("features_1_mult", np.ones((16, 1), np.float32)),
                "features_1_bias": McnParam("features_1_bias", np.zeros((16, 1), np.float32)),
                "features_1_moments": McnParam("features_1_moments",
                                               np.stack([mu, sigma], 1).astype(np.float32))},
        vars=[McnVar("data"), McnVar("features_0"), McnVar("features_1")],
        meta={"normalization": {"averageImage": mean.reshape(1, 3).astype(np.float32)}})


@pytest.mark.parametrize("truth", ["matlab", "torchvision"])
def test_input_scaling_recovers_the_planted_preprocessing(truth: str) -> None:
    rng = np.random.default_rng(0)
    # smooth colour images already at 224x224 (no resize involved in the planted moments)
    base = rng.uniform(0, 255, (6, 8, 8, 3))
    images = torch.nn.functional.interpolate(
        torch.from_numpy(base).permute(0, 3, 1, 2), size=(224, 224), mode="bilinear",
        align_corners=False).permute(0, 2, 3, 1).numpy().round().clip(0, 255).astype(np.uint8)
    net = _scaling_net(images, truth)
    report = check_input_scaling(net, list(images))
    assert report["best"] == truth
    assert report["bn_layer"] == "features_1"
    assert report["candidates"][truth]["score"] < 0.01
    assert report["margin"] > 1.0
    wrong = "torchvision" if truth == "matlab" else "matlab"
    ratio = report["candidates"][wrong]["median_sigma_ratio"]
    assert ratio > 20 or ratio < 1 / 20  # 0-255 vs standardised input: a factor near 58


def test_input_scaling_reads_moments_column_major_and_honours_has_bias() -> None:
    # vl_nnbnorm reads moments as [mu(1..C) sigma(1..C)] whatever their shape (a 2C x 1 column
    # is C x 2 column-major), and dagnn.Conv ignores a bias param when hasBias is false.
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 255, (4, 8, 8, 3))
    images = torch.nn.functional.interpolate(
        torch.from_numpy(base).permute(0, 3, 1, 2), size=(224, 224), mode="bilinear",
        align_corners=False).permute(0, 2, 3, 1).numpy().round().clip(0, 255).astype(np.uint8)
    net = _scaling_net(images, "matlab")
    expected = check_input_scaling(net, list(images))
    moments = net.params["features_1_moments"].value
    net.params["features_1_moments"].value = moments.reshape(-1, 1, order="F")
    net.layers[0].params.append("features_0_bias")
    net.params["features_0_bias"] = McnParam("features_0_bias",
                                             np.full((16, 1), 1e4, np.float32))
    report = check_input_scaling(net, list(images))
    assert report["best"] == "matlab"
    assert report["candidates"] == expected["candidates"]
    net.params["features_0_bias"].value = np.zeros((0, 0), np.float32)
    net.layers[0].block["hasBias"] = np.array([[True]])
    assert check_input_scaling(net, list(images))["candidates"] == expected["candidates"]


@pytest.mark.parametrize(("layer", "key", "value", "message"), [
    ("classifier_permute", "order", np.array([[1.0, 2.0, 4.0, 3.0]]), r"permute order"),
    ("classifier_flatten", "axis", np.array([[1.0]]), r"flatten axis"),
])
def test_head_reshape_that_is_not_a_view_is_refused(layer: str,
                                                    key: str,
                                                    value: np.ndarray,
                                                    message: str,
                                                    build: SimpleNamespace) -> None:
    # swapping channels and batch (or flattening onto H) is not x.view(N, -1)
    net = _edited(build)
    net.layer(layer).block[key] = value
    with pytest.raises(MatConvNetError, match=rf"'{layer}': {message}"):
        convert_fastap(net)
