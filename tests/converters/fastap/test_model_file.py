"""Converted model files: save_model / load_model and the model card."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from converters.errors import MatConvNetError
from converters.fastap.card import ModelCard
from converters.fastap.convert import convert_network
from converters.fastap.families import FAMILY_RESNET18_PT, FAMILY_RESNET50_CAFFE
from converters.fastap.model_file import load_model, save_model
from converters.mcn.reader import read_network
from tests import REALFILES

REAL = REALFILES / "mat"


def test_fastap_model_round_trips_with_its_card(tmp_path: Path, build: SimpleNamespace) -> None:
    source = build.checkpoint(FAMILY_RESNET18_PT)
    net = build.net(FAMILY_RESNET18_PT)
    model, card = convert_network(net)
    path = save_model(tmp_path / "model.pt", model, card)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary left
    loaded, loaded_card = load_model(path)
    x = torch.from_numpy(np.random.default_rng(0).uniform(-120, 130, (2, 3, 224, 224))
                         .astype(np.float32))
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    assert got.shape == (2, 512)
    assert torch.equal(expected, got)
    assert torch.allclose(got.norm(dim=1), torch.ones(2), atol=1e-6)
    assert not loaded.training
    assert loaded_card.family == FAMILY_RESNET18_PT
    assert loaded_card.arch == "resnet18"
    assert loaded_card.embedding_dim == 512
    assert loaded_card.epoch == 3
    assert loaded_card.source_sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert loaded_card.opts["dim"] == 512 and loaded_card.opts["solver"] == "adam"
    assert loaded_card.opts["Ks"] == [1, 10, 100, 1000]
    assert loaded_card.input.layout == "NCHW"
    assert loaded_card.input.scale == "0-255"
    assert loaded_card.preprocessing["matlab"]["divide_by_std"] is False
    assert loaded_card.preprocessing["torchvision"]["std"] == [0.229, 0.224, 0.225]
    average = loaded_card.input.average_image
    assert isinstance(average, np.ndarray) and average.dtype == np.float32
    assert average.shape == (3,)
    assert np.array_equal(average, np.array([0.485, 0.456, 0.406], np.float32))
    # the intermediate vars survive the round trip too
    with torch.no_grad():
        assert "features_1" in loaded.mcn_outputs(x)
        with pytest.raises(ValueError, match="224x224"):
            loaded(torch.zeros(1, 3, 256, 256))


def test_caffe_mean_image_is_stored_beside_the_weights(tmp_path: Path,
                                                       build: SimpleNamespace) -> None:
    net = build.net(FAMILY_RESNET50_CAFFE)
    model, card = convert_network(net)
    loaded, loaded_card = load_model(save_model(tmp_path / "caffe.pt", model, card))
    average = loaded_card.input.average_image
    assert average.shape == (224, 224, 3) and average.dtype == np.float32
    assert np.array_equal(average, net.meta["normalization"]["averageImage"])
    assert loaded_card.input.average_image_scale == "0-255"
    assert loaded_card.outputs["base"] == "pool5"
    assert loaded.base.layer3[0].conv1.stride == (2, 2)
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_generic_network_round_trips(tmp_path: Path) -> None:
    net = read_network(REAL / "dagnn_v5_struct_mnist_new_net.mat")
    module, card = convert_network(net)
    assert card.family == "generic"
    loaded, loaded_card = load_model(save_model(tmp_path / "lenet.pt", module, card))
    assert loaded_card.source_name == "dagnn_v5_struct_mnist_new_net.mat"
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 1, 28, 28))
                         .astype(np.float32))
    with torch.no_grad():
        assert torch.equal(module(x), loaded(x))


def test_model_file_refuses_foreign_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    with pytest.raises(MatConvNetError, match="junk.pt: not a converted model file"):
        load_model(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(MatConvNetError, match="no model card"):
        load_model(plain)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent.pt")


def test_unsavable_model_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot save a Linear"):
        save_model(tmp_path / "x.pt", torch.nn.Linear(2, 2), ModelCard(family="generic"))
    assert list(tmp_path.iterdir()) == []
