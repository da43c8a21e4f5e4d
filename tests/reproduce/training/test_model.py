"""The start networks of ``fastap train``: a MatConvNet base taken param for param, a
converted model unfolded to the same function, torchvision weights, and their errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from converters.fastap.families import FAMILY_RESNET18_PT, convert_fastap, family_layout
from converters.mcn.array_order import filter_to_torch
from reproduce.errors import InputError
from reproduce.training.batchnorm import McnBatchNorm2d
from reproduce.training.model import build_training_model


def test_base_network_taken_param_for_param(build: SimpleNamespace) -> None:
    path = build.checkpoint(FAMILY_RESNET18_PT)
    net = build.net(FAMILY_RESNET18_PT)
    model, average = build_training_model("base", path, "resnet18", 64, 224)
    layout = family_layout(model.family, model.base)
    for name, conv in layout.convs.items():
        value = net.params[net.layer(name).params[0]].value
        assert torch.equal(conv.weight, torch.from_numpy(
            np.ascontiguousarray(filter_to_torch(value))).float()), name
    for name, bn in layout.bns.items():
        assert isinstance(bn, McnBatchNorm2d)
        mult, bias, moments = (np.asarray(net.params[p].value, np.float32)
                               for p in net.layer(name).params)
        assert np.array_equal(bn.mult.detach().numpy(), mult.ravel()), name
        assert np.array_equal(bn.bias.detach().numpy(), bias.ravel()), name
        assert np.array_equal(bn.moments.numpy(), moments.reshape(-1, 2)), name
    w = model.fc.weight.detach().double()
    assert model.fc.weight.shape == (64, 512) and torch.all(model.fc.bias == 0)
    assert abs(float(w.std()) - np.sqrt(2 / 512)) < 0.05 * np.sqrt(2 / 512)
    assert np.allclose(average, [0.485, 0.456, 0.406])  # the synthetic file's meta


def test_init_from_converted_model_is_the_same_function(build: SimpleNamespace,
                                                        tmp_path: Path) -> None:
    from converters.fastap.convert import convert_network
    from converters.fastap.model_file import save_model

    net = build.net(FAMILY_RESNET18_PT)
    converted, card = convert_network(net)
    save_model(tmp_path / "m.pt", converted, card)
    model, _ = build_training_model("init", tmp_path / "m.pt", "resnet18", 512, 224)
    reference = convert_fastap(net)
    model.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 50
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="--dim 16"):
        build_training_model("init", tmp_path / "m.pt", "resnet18", 16, 224)
    with pytest.raises(InputError, match="--arch resnet50"):
        build_training_model("init", tmp_path / "m.pt", "resnet50", 512, 224)


def test_bad_start_files_are_clear_errors(build: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--base .*missing.mat: no such file"):
        build_training_model("base", tmp_path / "missing.mat", "resnet18", 16, 224)
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="--torchvision-weights .*weights.pth"):
        build_training_model("torchvision_weights", bad, "resnet18", 16, 224)
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(InputError, match="does not fit torchvision resnet18"):
        build_training_model("torchvision_weights", bad, "resnet18", 16, 224)
    with pytest.raises(InputError, match="needs resnet50-pt-mcn"):
        build_training_model("base", build.checkpoint(FAMILY_RESNET18_PT), "resnet50", 16,
                             224)
