"""McnModule (PyTorch) against the numpy reference on every var, plus the checks' own checks.

Synthetic networks are built as ``McnNet`` objects in code; the real MatConvNet files in
``tests/fixtures/realfiles/mat/`` are read with ``converters.mcn.reader``. Two real
networks are also checked for doing their trained job (DnCNN denoises, LapSRN upsamples
in register), which the reference could not do with wrong layer semantics.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import torch

from converters.errors import MatConvNetError
from converters.fastap.synthetic import checkpoint_tree
from converters.mcn.array_order import matlab_to_torch
from converters.mcn.compare import compare_outputs, var_within_tolerance, within_tolerance
from converters.mcn.net import McnLayer, McnNet, McnParam
from converters.mcn.reader import network_from_tree, read_network
from converters.mcn.reference import run_reference
from converters.mcn.to_torch import McnModule
from tests import REALFILES

REALFILES = REALFILES / "mat"


@cache
def real_network(name: str) -> McnNet:
    """A real file's network, read once per session (tests must not modify it)."""
    return read_network(REALFILES / name)


def _row(*values: float) -> np.ndarray:
    """A MATLAB row vector as load_mat returns it."""
    return np.array([values], dtype=np.float64)


def _layer(name: str, type_: str, inputs: list[str], outputs: list[str],
           params: list[str] | None = None, **block: object) -> McnLayer:
    return McnLayer(name, type_, inputs, outputs, params or [], dict(block))


def _conv(name: str, inp: str, out: str, size: tuple[int, int, int, int], pad: tuple[int, ...],
          stride: tuple[int, int] = (1, 1), dilate: tuple[int, int] = (1, 1),
          bias: bool = True) -> McnLayer:
    params = [f"{name}_filter"] + ([f"{name}_bias"] if bias else [])
    return _layer(name, "dagnn.Conv", [inp], [out], params, size=_row(*size),
                  hasBias=np.array([[bias]]), pad=_row(*pad), stride=_row(*stride),
                  dilate=_row(*dilate), opts=["cuDNN"])


def _params(rng: np.random.Generator, shapes: dict[str, tuple[int, ...]]) -> dict[str, McnParam]:
    out = {}
    for name, shape in shapes.items():
        if name.endswith("_moments"):
            channels = shape[0]
            value = np.c_[rng.normal(size=channels), rng.uniform(0.5, 2.0, size=channels)]
        else:
            value = rng.normal(size=shape) * (0.3 if name.endswith("_filter") else 1.0)
        out[name] = McnParam(name, value.astype(np.float32))
    return out


def embedding_net(rng: np.random.Generator, dim: int = 6) -> McnNet:
    """A small ResNet-shaped embedding net with the FastAP head, layers in shuffled file order.

    conv (bias, asymmetric pad, stride 2) -> BN -> ReLU -> pool1-style max pool [0 1 0 1]
    -> residual block (conv/BN/leaky ReLU/conv/BN + Sum) -> clipped avg pool -> Permute
    -> Flatten -> fc -> L2norm (LRN [2D 0 1 0.5]) -> FastAP loss (skipped).
    """
    layers = [
        _conv("conv1", "data", "conv1x", (3, 3, 3, 8), (1, 2, 0, 1), (2, 2)),
        _layer("bn_conv1", "dagnn.BatchNorm", ["conv1x"], ["conv1xx"],
               ["bn_conv1_mult", "bn_conv1_bias", "bn_conv1_moments"], numChannels=8),
        _layer("conv1_relu", "dagnn.ReLU", ["conv1xx"], ["conv1xxx"], leak=np.zeros((1, 1))),
        _layer("pool1", "dagnn.Pooling", ["conv1xxx"], ["pool1"], method="max",
               poolSize=_row(3, 3), pad=_row(0, 1, 0, 1), stride=_row(2, 2)),
        _conv("res2a_branch2a", "pool1", "res2a_branch2a", (3, 3, 8, 8), (1, 1, 1, 1),
              bias=False),
        _layer("bn2a_branch2a", "dagnn.BatchNorm", ["res2a_branch2a"], ["res2a_branch2ax"],
               ["bn2a_branch2a_mult", "bn2a_branch2a_bias", "bn2a_branch2a_moments"]),
        _layer("res2a_branch2a_relu", "dagnn.ReLU", ["res2a_branch2ax"], ["res2a_branch2axx"],
               leak=_row(0.1)),
        _conv("res2a_branch2b", "res2a_branch2axx", "res2a_branch2b", (1, 1, 8, 8), (0,),
              bias=False),
        _layer("bn2a_branch2b", "dagnn.BatchNorm", ["res2a_branch2b"], ["res2a_branch2bx"],
               ["bn2a_branch2b_mult", "bn2a_branch2b_bias", "bn2a_branch2b_moments"]),
        _layer("res2a", "dagnn.Sum", ["pool1", "res2a_branch2bx"], ["res2ax"]),
        _layer("pool5", "dagnn.Pooling", ["res2ax"], ["pool5"], method="avg",
               poolSize=_row(3, 3), pad=_row(1, 1, 1, 1), stride=_row(2, 2)),
        _layer("permute", "dagnn.Permute", ["pool5"], ["permuted"], order=_row(2, 1, 3, 4)),
        _layer("flatten", "dagnn.Flatten", ["permuted"], ["flat"], axis=_row(3)),
        _conv("fc", "flat", "logits", (1, 1, 8 * 2 * 2, dim), (0,)),
        _layer("L2norm", "dagnn.LRN", ["logits"], ["feats_l2"], param=_row(2 * dim, 0, 1, 0.5)),
        _layer("loss", "FastAP", ["feats_l2", "labels"], ["objective"], opt={"nbins": 10}),
    ]
    order = rng.permutation(len(layers))
    shapes = {"conv1_filter": (3, 3, 3, 8), "conv1_bias": (8, 1),
              "res2a_branch2a_filter": (3, 3, 8, 8), "res2a_branch2b_filter": (1, 1, 8, 8),
              "fc_filter": (1, 1, 32, dim), "fc_bias": (dim, 1)}
    for bn in ("bn_conv1", "bn2a_branch2a", "bn2a_branch2b"):
        shapes.update({f"{bn}_mult": (8, 1), f"{bn}_bias": (8, 1), f"{bn}_moments": (8, 2)})
    return McnNet([layers[i] for i in order], _params(rng, shapes), [], source="embedding.mat")


def upsampling_net(rng: np.random.Generator) -> McnNet:
    """Grouped and dilated convs, ConvTranspose with groups and crop, Concat, DropOut, SoftMax."""
    layers = [
        _conv("c1", "x", "c1", (3, 3, 2, 6), (2, 1, 1, 2), dilate=(2, 1)),  # groups = 4 / 2
        _layer("drop", "dagnn.DropOut", ["c1"], ["c1d"], rate=_row(0.5)),
        _layer("up", "dagnn.ConvTranspose", ["c1d"], ["up"], ["up_filter", "up_bias"],
               size=_row(4, 3, 2, 6), hasBias=np.array([[True]]), upsample=_row(2, 2),
               crop=_row(1, 1, 0, 1), numGroups=_row(3)),
        _layer("lrn", "dagnn.LRN", ["up"], ["up_n"], param=_row(3, 2, 1e-2, 0.75)),
        _layer("cat", "dagnn.Concat", ["up", "up_n"], ["cat"], dim=_row(3)),
        _layer("prob", "dagnn.SoftMax", ["cat"], ["prob"]),
    ]
    shapes = {"c1_filter": (3, 3, 2, 6), "c1_bias": (1, 6), "up_filter": (4, 3, 2, 6),
              "up_bias": (6, 1)}
    return McnNet(layers, _params(rng, shapes), [], source="upsampling.mat")


def _run_both(net: McnNet, inputs: dict[str, np.ndarray], dtype: torch.dtype
              ) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    reference = run_reference(net, inputs, dtype=np.float64)
    module = McnModule(net, dtype=dtype)
    with torch.no_grad():
        ours = module.mcn_outputs({name: torch.from_numpy(matlab_to_torch(value)).to(dtype)
                                   for name, value in inputs.items()})
    return reference, ours


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_embedding_net_matches_reference_on_every_var(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    net = embedding_net(rng)
    x = rng.normal(size=(17, 15, 3, 3)) * 50
    reference, ours = _run_both(net, {"data": x}, dtype)
    assert "objective" not in reference  # the loss layer is skipped
    comparisons = compare_outputs(reference, ours)
    assert len(comparisons) == 16  # data + 15 layer outputs, every one compared
    assert within_tolerance(comparisons, dtype), comparisons
    feats = reference["feats_l2"]
    assert feats.shape == (1, 1, 6, 3)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=2), 1.0, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_upsampling_net_matches_reference_on_every_var(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(1)
    net = upsampling_net(rng)
    reference, ours = _run_both(net, {"x": rng.normal(size=(9, 7, 4, 2))}, dtype)
    # c1 is 8 x 8; vl_nnconvt: up * (8 - 1) + FH - crop top - crop bottom (same for W)
    assert reference["up"].shape == (2 * 7 + 4 - 2, 2 * 7 + 3 - 1, 6, 2)
    comparisons = compare_outputs(reference, ours)
    assert [c.name for c in comparisons] == ["x", "c1", "c1d", "up", "up_n", "cat", "prob"]
    assert within_tolerance(comparisons, dtype), comparisons


def test_execution_follows_dependencies_not_file_order() -> None:
    rng = np.random.default_rng(2)
    net = embedding_net(rng)
    x = rng.normal(size=(11, 12, 3, 1))
    shuffled = run_reference(net, {"data": x})
    net.layers.reverse()
    np.testing.assert_array_equal(run_reference(net, {"data": x})["feats_l2"],
                                  shuffled["feats_l2"])


def test_forward_returns_the_network_output() -> None:
    rng = np.random.default_rng(3)
    net = embedding_net(rng, dim=5)
    module = McnModule(net).eval()
    assert module.input_names == ["data"] and module.output_names == ["feats_l2"]
    x = torch.from_numpy(matlab_to_torch(rng.normal(size=(13, 13, 3, 4)) * 20)).float()
    with torch.no_grad():
        y = module(x)
        named = module(data=x)
    assert y.shape == (4, 5, 1, 1)
    torch.testing.assert_close(y, named)
    torch.testing.assert_close(y.flatten(1).norm(dim=1), torch.ones(4))
    assert module.state_dict()["layers.conv1.weight"].shape == (8, 3, 3, 3)


def test_a_wrong_conversion_fails_the_check() -> None:
    """A 1e-3 change of one filter weight must not pass the float32 tolerance."""
    rng = np.random.default_rng(4)
    net = embedding_net(rng)
    x = rng.normal(size=(17, 15, 3, 2)) * 50
    reference = run_reference(net, {"data": x})
    net.params["res2a_branch2b_filter"].value[0, 0, 3, 2] += 1e-3
    module = McnModule(net)
    with torch.no_grad():
        ours = module.mcn_outputs({"data": torch.from_numpy(matlab_to_torch(x)).float()})
    comparisons = compare_outputs(reference, ours)
    assert not within_tolerance(comparisons, torch.float32)
    first_bad = next(c for c in comparisons if c.rel_l2 > 1e-5)
    assert first_bad.name == "res2a_branch2b"


def test_compare_outputs_hand_values_and_problems() -> None:
    reference = {"a": np.array([3.0, 4.0]).reshape(1, 1, 2, 1),
                 "b": np.ones((2, 2, 1, 1)), "c": np.ones((1, 1, 3, 1)),
                 "d": np.array([np.nan, 1.0]).reshape(1, 1, 2, 1)}
    ours = {"a": torch.tensor([3.0, 4.5]).reshape(1, 2, 1, 1),
            "c": torch.ones(1, 2, 1, 1),
            "d": torch.tensor([np.nan, 1.0]).reshape(1, 2, 1, 1)}
    a, b, c, d = compare_outputs(reference, ours)
    assert a.max_abs_error == 0.5
    assert a.rel_l2 == pytest.approx(0.1, rel=1e-15)
    assert a.cosine == pytest.approx(27.0 / (5.0 * math.sqrt(29.25)), rel=1e-15)
    assert "missing" in b.problem
    assert "shape" in c.problem
    assert not d.problem and d.rel_l2 == 0.0  # NaN in the same place on both sides
    assert not within_tolerance([a], "float32")
    assert not var_within_tolerance(a, np.float32) and var_within_tolerance(d, torch.float32)
    assert within_tolerance([d], "float64")
    assert not within_tolerance([b], "float64")


def test_trailing_singleton_filter_and_row_bias_are_accepted() -> None:
    rng = np.random.default_rng(5)
    net = McnNet([_conv("c", "x", "y", (3, 3, 4, 1), (1, 1, 1, 1))],
                 {"c_filter": McnParam("c_filter", rng.normal(size=(3, 3, 4))),
                  "c_bias": McnParam("c_bias", np.array([[0.5]]))}, [])
    reference, ours = _run_both(net, {"x": rng.normal(size=(5, 5, 4))}, torch.float64)
    assert reference["y"].shape == (5, 5, 1, 1)
    assert within_tolerance(compare_outputs(reference, ours), torch.float64)


def test_unsupported_layer_type_names_layer_and_type() -> None:
    net = McnNet([_layer("crop1", "dagnn.Crop", ["x"], ["y"])], {}, [], source="foo.mat")
    for build in (lambda: McnModule(net), lambda: run_reference(net, {"x": np.ones((2, 2))})):
        with pytest.raises(MatConvNetError, match=r"foo\.mat: layer 'crop1'.*'dagnn\.Crop'"):
            build()


def test_param_of_the_wrong_size_names_param_and_layer() -> None:
    net = McnNet([_conv("conv1", "x", "y", (3, 3, 2, 4), (0,))],
                 {"conv1_filter": McnParam("conv1_filter", np.ones((3, 3, 2, 5))),
                  "conv1_bias": McnParam("conv1_bias", np.ones((4, 1)))}, [], source="bad.mat")
    with pytest.raises(MatConvNetError, match=r"bad\.mat: layer 'conv1'.*'conv1_filter'.*90"):
        McnModule(net)
    net.params["conv1_filter"] = McnParam("conv1_filter", np.ones((3, 3, 2, 4)))
    net.params["conv1_bias"] = McnParam("conv1_bias", np.ones((1, 3)))
    with pytest.raises(MatConvNetError, match=r"'conv1_bias'"):
        run_reference(net, {"x": np.ones((4, 4, 2))})
    del net.params["conv1_bias"]
    with pytest.raises(MatConvNetError, match=r"param 'conv1_bias' is not in"):
        McnModule(net)


def test_filter_of_another_shape_with_the_same_count_is_not_reshaped() -> None:
    # MatConvNet runs the filter as stored (3x3x4x2 cannot read a 2-channel input); reshaping
    # it column-major to the block's size [3 3 2 4] would run another network.
    net = McnNet([_conv("conv1", "x", "y", (3, 3, 2, 4), (0,))],
                 {"conv1_filter": McnParam("conv1_filter", np.ones((3, 3, 4, 2))),
                  "conv1_bias": McnParam("conv1_bias", np.ones((4, 1)))}, [], source="bad.mat")
    for build in (lambda: McnModule(net), lambda: run_reference(net, {"x": np.ones((4, 4, 2))})):
        with pytest.raises(MatConvNetError, match=r"bad\.mat: layer 'conv1'.*'conv1_filter'.*"
                                                  r"\[3, 3, 4, 2\]"):
            build()


def test_missing_input_and_graph_errors() -> None:
    rng = np.random.default_rng(6)
    net = embedding_net(rng)
    with pytest.raises(MatConvNetError, match=r"input var\(s\) \['data'\]"):
        run_reference(net, {"image": np.ones((8, 8, 3))})
    with pytest.raises(MatConvNetError, match=r"input var\(s\) \['data'\]"):
        McnModule(net)(image=torch.ones(1, 3, 8, 8))
    twice = McnNet([_layer("r1", "dagnn.ReLU", ["x"], ["y"]),
                    _layer("r2", "dagnn.ReLU", ["x"], ["y"])], {}, [])
    with pytest.raises(MatConvNetError, match="produced by both layer 'r1' and layer 'r2'"):
        McnModule(twice)
    cycle = McnNet([_layer("r1", "dagnn.ReLU", ["b"], ["a"]),
                    _layer("r2", "dagnn.ReLU", ["a"], ["b"]),
                    _layer("r3", "dagnn.ReLU", ["x"], ["c"])], {}, [])
    with pytest.raises(MatConvNetError, match="cycle"):
        run_reference(cycle, {"x": np.ones((1, 1))})


def test_full_size_resnet18_checkpoint_matches_reference_in_float32() -> None:
    """The generic module on a full-size resnet18-pt-mcn FastAP net (224 x 224 input)."""
    net = network_from_tree(checkpoint_tree("resnet18-pt-mcn", dim=64, with_state=False),
                            source="synthetic resnet18")
    x = np.random.default_rng(9).uniform(0, 255, size=(224, 224, 3, 1)) - 120
    reference, ours = _run_both(net, {"data": x}, torch.float32)
    comparisons = compare_outputs(reference, ours)
    assert "feats_l2" in reference and len(comparisons) == len(reference) > 60
    assert within_tolerance(comparisons, torch.float32), max(comparisons, key=lambda c: c.rel_l2)


# ---------------------------------------------------------------- real MatConvNet files

REAL_CASES = {
    # file: (input var, H x W x C of the test input)
    "dagnn_v73_DnCNN-epoch-50_bnorm_sum.mat": ("input", (24, 24, 1)),
    "dagnn_v5_struct_mnist_new_net.mat": ("data", (28, 28, 1)),
    "dagnn_v5_MSSRNet_x2_concat_nometa.mat": ("input", (24, 24, 1)),
    "dagnn_v5_LapSRN_x2.mat": ("LR", (16, 16, 1)),
    "simplenn_v5_DCFNet-net-7-125-2_lrn.mat": ("x0", (24, 24, 3)),
    "simplenn_v5_ckpt_oneclick_net-epoch-50.mat": ("x0", (28, 28, 1)),
}


@pytest.mark.parametrize("name", sorted(REAL_CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_real_file_converts_and_matches_reference(name: str, dtype: torch.dtype) -> None:
    var, shape = REAL_CASES[name]
    net = real_network(name)
    rng = np.random.default_rng(7)
    reference, ours = _run_both(net, {var: rng.uniform(0, 1, size=(*shape, 2))}, dtype)
    comparisons = compare_outputs(reference, ours)
    assert len(comparisons) == len(reference) > 2
    assert within_tolerance(comparisons, dtype), [c for c in comparisons
                                                   if c.rel_l2 > 1e-5 or c.problem]


def _smooth_image(size: int) -> np.ndarray:
    u, v = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return 0.5 + 0.25 * np.sin(0.35 * u + 0.2 * v) + 0.15 * np.cos(0.5 * v - 0.15 * u)


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_real_dncnn_removes_noise() -> None:
    """DnCNN (trained for sigma 25 on [0, 1] images; BatchNorm + global Sum) must denoise."""
    net = real_network("dagnn_v73_DnCNN-epoch-50_bnorm_sum.mat")
    u, v = np.meshgrid(np.linspace(0, 1, 40), np.linspace(0, 1, 40), indexing="ij")
    clean = 0.5 + 0.3 * np.sin(3 * u + 2 * v) * np.cos(2 * u - v)
    noisy = clean + 25 / 255 * np.random.default_rng(8).normal(size=clean.shape)
    denoised = run_reference(net, {"input": noisy})["prediction"][:, :, 0, 0]
    # measured: 0.097 -> 0.013
    assert _rmse(denoised, clean) < 0.25 * _rmse(noisy, clean)


def test_real_lapsrn_upsamples_in_register() -> None:
    """LapSRN x2's ConvTranspose (upsample 2, crop [0 1 0 1]) must put pixels in place.

    The output must beat nearest-neighbour upsampling, and any one-pixel shift of it must be
    worse than no shift (a crop or scatter error shows up as a shift).
    """
    net = real_network("dagnn_v5_LapSRN_x2.mat")
    clean = _smooth_image(48)
    low = (clean[::2, ::2] + clean[1::2, ::2] + clean[::2, 1::2] + clean[1::2, 1::2]) / 4
    high = run_reference(net, {"LR": low})["level1_output"][:, :, 0, 0]
    assert high.shape == clean.shape
    inner = (slice(4, -4), slice(4, -4))
    aligned = _rmse(high[inner], clean[inner])
    # measured: 0.0071 aligned, 0.045 nearest neighbour, >= 0.063 for any 1-pixel shift
    assert aligned < 0.5 * _rmse(np.kron(low, np.ones((2, 2)))[inner], clean[inner])
    for shift in [(-1, 0), (1, 0), (0, -1), (0, 1)]:
        assert _rmse(np.roll(high, shift, axis=(0, 1))[inner], clean[inner]) > 3 * aligned


def test_has_bias_without_a_bias_param_is_an_error() -> None:
    layer = _conv("conv1", "x", "y", (1, 1, 2, 2), (0,))
    layer.params = ["conv1_filter"]
    net = McnNet([layer], {"conv1_filter": McnParam("conv1_filter", np.ones((1, 1, 2, 2)))}, [])
    with pytest.raises(MatConvNetError, match=r"layer 'conv1'.*at least 2 params"):
        McnModule(net)
