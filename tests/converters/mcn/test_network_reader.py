"""The network description (McnNet) built from real and synthetic MatConvNet files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import converters.mcn.reader as network_reader
from converters.errors import MatConvNetError
from converters.matio.values import to_float, to_floats
from converters.matio.write import save_mat
from converters.mcn.reader import network_from_tree, read_network
from tests import REALFILES

MAT = REALFILES / "mat"
LAPSRN = MAT / "dagnn_v5_LapSRN_x2.mat"
MSSRNET = MAT / "dagnn_v5_MSSRNet_x2_concat_nometa.mat"
MNIST = MAT / "dagnn_v5_struct_mnist_new_net.mat"
DNCNN = MAT / "dagnn_v73_DnCNN-epoch-50_bnorm_sum.mat"
DCFNET = MAT / "simplenn_v5_DCFNet-net-7-125-2_lrn.mat"
ONECLICK = MAT / "simplenn_v5_ckpt_oneclick_net-epoch-50.mat"


def test_dncnn_v73_checkpoint() -> None:
    net = read_network(DNCNN)
    assert (net.format, net.layout) == ("v7.3", "dagnn")
    bnorms = [layer for layer in net.layers if layer.type == "dagnn.BatchNorm"]
    assert len(bnorms) == 15
    for layer in bnorms:
        assert len(layer.params) == 3
        moments = net.params[layer.params[2]].value
        assert moments.shape == (64, 2) and moments.dtype == np.float32
    sums = [layer for layer in net.layers if layer.type == "dagnn.Sum"]
    assert [(s.name, s.inputs, s.block) for s in sums] == [("sum49", ["conv48", "input"], {})]
    assert net.meta is None and net.stats is None and net.state is None
    assert len(net.params) == 79 and len(net.vars) == 52
    assert net.layers[-1].type == "dagnn.Loss"


def test_lapsrn_leaky_relu_convtranspose_and_empty_meta() -> None:
    net = read_network(LAPSRN)
    relus = [layer for layer in net.layers if layer.type == "dagnn.ReLU"]
    assert relus and all(to_float(r.block["leak"]) == pytest.approx(0.2) for r in relus)
    upconv = net.layer("level1_img_up")
    assert upconv.type == "dagnn.ConvTranspose"
    assert upconv.params == ["level1_img_up_f"]  # the one without a bias
    assert to_floats(upconv.block["crop"]) == [1, 1, 1, 1]
    assert net.meta is None  # meta = []
    assert net.params["input_conv_b"].value.shape == (1, 64)  # bias stored 1x64
    assert net.params["level1_residual_conv_f"].value.shape == (3, 3, 64)  # trailing 1 dropped
    assert net.layers[-1].type == "dagnn.vllab_dag_loss"


def test_mssrnet_concat_without_meta_field() -> None:
    net = read_network(MSSRNET)
    assert net.meta is None
    concats = [layer for layer in net.layers if layer.type == "dagnn.Concat"]
    assert len(concats) == 5
    assert all(to_float(c.block["dim"]) == 3 for c in concats)
    assert concats[0].inputs == ["scale1_relu", "scale2_relu", "scale3_relu"]


def test_mnist_struct_save() -> None:
    net = read_network(MNIST)
    assert net.layout == "dagnn-struct"
    assert [layer.type for layer in net.layers] == [
        "dagnn.Conv", "dagnn.Pooling", "dagnn.Conv", "dagnn.Pooling", "dagnn.Conv",
        "dagnn.ReLU", "dagnn.Conv", "dagnn.Loss"]
    assert net.layer("pool1").block["method"] == "max"
    assert net.params["filters1"].value.shape == (5, 5, 1, 20)
    assert [v.name for v in net.vars][0] == "data"
    assert net.meta is None


def test_dcfnet_simplenn_is_normalised_to_dagnn_names() -> None:
    net = read_network(DCFNET)
    assert net.layout == "simplenn"
    assert [(layer.name, layer.type) for layer in net.layers] == [
        ("conv1", "dagnn.Conv"), ("relu1", "dagnn.ReLU"), ("conv2", "dagnn.Conv"),
        ("norm1", "dagnn.LRN")]
    assert [layer.inputs for layer in net.layers] == [["x0"], ["x1"], ["x2"], ["x3"]]
    assert net.layers[-1].outputs == ["x4"]
    assert [v.name for v in net.vars] == ["x0", "x1", "x2", "x3", "x4"]
    assert to_floats(net.layer("norm1").block["param"]) == pytest.approx([5, 1, 2e-05, 0.75])
    conv1 = net.layer("conv1")
    assert conv1.params == ["conv1_filter", "conv1_bias"]
    assert to_floats(conv1.block["size"]) == [3, 3, 3, 32]
    assert to_floats(conv1.block["pad"]) == [1, 1, 1, 1]  # SimpleNN scalar pad
    assert net.params["conv1_filter"].value.shape == (3, 3, 3, 32)
    assert net.meta is not None and "normalization" in net.meta


def test_oneclick_checkpoint_stats_and_state_on_request() -> None:
    net = read_network(ONECLICK)
    assert net.layout == "simplenn" and net.state is None
    assert len(net.stats["train"]) == len(net.stats["val"]) == 50
    loss = net.layers[-1]
    assert (loss.type, loss.inputs, loss.block) == ("dagnn.Loss", ["x7", "label"],
                                                    {"loss": "softmaxlog"})
    pool = net.layer("layer2")
    assert to_floats(pool.block["poolSize"]) == [2, 2]
    assert to_floats(pool.block["stride"]) == [2, 2]
    with_state = read_network(ONECLICK, with_state=True)
    assert len(with_state.state["solverState"]) == 8


def test_state_is_not_even_read_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str] | None] = []
    real_load = network_reader.load_mat

    def recording_load(path: Any, variables: list[str] | None = None) -> dict[str, Any]:
        asked.append(variables)
        return real_load(path, variables)

    monkeypatch.setattr(network_reader, "load_mat", recording_load)
    read_network(ONECLICK)
    assert asked == [["net", "stats"]]


def _simplenn_tree() -> dict[str, Any]:
    rng = np.random.default_rng(1)
    f32 = np.float32
    layers = (
        {"type": "conv", "name": "c1",
         "weights": [rng.standard_normal((3, 3, 2, 4)).astype(f32), np.zeros((1, 4), f32)],
         "pad": np.array([[1.0]]), "stride": np.array([[2.0]])},
        {"type": "bnorm",
         "weights": [np.ones((4, 1), f32), np.zeros((4, 1), f32), np.ones((4, 2), f32)]},
        {"type": "relu", "leak": np.array([[0.1]])},
        {"type": "pool", "name": "p", "method": "avg", "pool": np.array([[3.0]]),
         "pad": np.array([[0.0, 1, 0, 1]]), "stride": np.array([[2.0, 1]])},
        {"type": "lrn", "name": "n", "param": np.array([[5.0, 1, 1e-4, 0.75]])},
        {"type": "dropout", "name": "d", "rate": np.array([[0.3]])},
        {"type": "conv", "name": "fc", "weights": [rng.standard_normal((1, 1, 4)).astype(f32),
                                                   np.zeros((0, 0), f32)],
         "pad": np.array([[0.0]]), "stride": np.array([[1.0]])},
        {"type": "softmax", "name": "prob"},
        {"type": "softmaxloss", "name": "loss"},
    )
    return {"net": {"layers": layers, "meta": {"inputs": {"name": "input"}}}}


@pytest.mark.parametrize("version", ["7", "7.3"])
def test_synthetic_simplenn_every_layer_type(tmp_path: Path, version: str) -> None:
    path = save_mat(tmp_path / "simple.mat", _simplenn_tree(), version=version)
    net = read_network(path)
    assert [layer.type for layer in net.layers] == [
        "dagnn.Conv", "dagnn.BatchNorm", "dagnn.ReLU", "dagnn.Pooling", "dagnn.LRN",
        "dagnn.DropOut", "dagnn.Conv", "dagnn.SoftMax", "dagnn.Loss"]
    assert net.layers[1].name == "layer2"  # unnamed layers get MatConvNet's layerN names
    assert net.layers[1].params == ["layer2_mult", "layer2_bias", "layer2_moments"]
    c1 = net.layer("c1").block
    assert to_floats(c1["pad"]) == [1, 1, 1, 1] and to_floats(c1["stride"]) == [2, 2]
    assert to_floats(c1["dilate"]) == [1, 1] and bool(c1["hasBias"][0, 0])
    assert to_float(net.layer("layer3").block["leak"]) == pytest.approx(0.1)
    pool = net.layer("p").block
    assert pool["method"] == "avg" and to_floats(pool["poolSize"]) == [3, 3]
    assert to_floats(pool["pad"]) == [0, 1, 0, 1] and to_floats(pool["stride"]) == [2, 1]
    assert to_float(net.layer("d").block["rate"]) == pytest.approx(0.3)
    fc = net.layer("fc")
    assert fc.params == ["fc_filter"] and not bool(fc.block["hasBias"][0, 0])
    assert to_floats(fc.block["size"]) == [1, 1, 4, 1]
    assert net.params["fc_filter"].value.shape == (1, 1, 4)
    assert net.layer("loss").inputs == ["x8", "label"]
    assert net.meta == {"inputs": {"name": "input"}}


def test_network_from_tree_with_a_single_dagnn_layer() -> None:
    tree = {"net": {
        "vars": {"name": "x", "precious": np.array([[False]])},
        "params": {"name": "w", "value": np.ones((1, 1, 1, 1), np.float64),
                   "learningRate": np.array([[2.0]]), "weightDecay": np.array([[0.0]])},
        "layers": {"name": "c", "type": "dagnn.Conv", "inputs": ["x"], "outputs": ["y"],
                   "params": ["w"], "block": {"hasBias": np.array([[False]])}},
    }}
    net = network_from_tree(tree, source="mem.mat", format="v5")
    assert [layer.name for layer in net.layers] == ["c"]
    assert net.params["w"].value.dtype == np.float32
    assert (net.params["w"].learningRate, net.params["w"].weightDecay) == (2.0, 0.0)
    assert net.meta is None and net.source == "mem.mat"


def test_file_without_network_names_its_variables(tmp_path: Path) -> None:
    path = save_mat(tmp_path / "data.mat", {"images": np.zeros((2, 2)), "labels": "x"})
    with pytest.raises(MatConvNetError, match=r"data\.mat.*no MatConvNet network.*images"):
        read_network(path)


def test_missing_param_names_layer_and_param() -> None:
    tree = {"net": {"vars": [], "params": [],
                    "layers": {"name": "c", "type": "dagnn.Conv", "inputs": ["x"],
                               "outputs": ["y"], "params": ["w_missing"], "block": {}}}}
    with pytest.raises(MatConvNetError, match=r"f\.mat.*'c'.*'w_missing'"):
        network_from_tree(tree, source="f.mat")


def test_net_that_is_not_a_struct() -> None:
    with pytest.raises(MatConvNetError, match="saveobj"):
        network_from_tree({"net": None}, source="obj.mat")


def test_malformed_struct_arrays_are_named() -> None:
    layer = {"name": "c", "type": "dagnn.ReLU", "inputs": ["x"], "outputs": ["y"],
             "params": [], "block": {}}
    with pytest.raises(MatConvNetError, match=r"bad\.mat: params\(2\) is not a struct"):
        network_from_tree({"net": {"params": [{"name": "w", "value": np.ones((1, 1))}, "oops"],
                                   "layers": [layer, layer | {"name": "d"}]}},
                          source="bad.mat")
    with pytest.raises(MatConvNetError, match=r"bad\.mat: layers: expected a struct array"):
        network_from_tree({"layers": "conv"}, source="bad.mat")
