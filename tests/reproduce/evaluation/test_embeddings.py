"""Embedding extraction: batching, cache hit/miss, resume after an interruption."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from converters.fastap.card import ModelCard
from reproduce.errors import InputError
from reproduce.evaluation.embeddings import extract_embeddings, model_hash
from reproduce.evaluation.preprocess import make_preprocessing


class TinyNet(nn.Module):
    """Pool to 4x4, linear to 6, L2 normalise; counts images seen, can fail on demand."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(48, 6)
        self.seen = 0
        self.fail_after = fail_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.seen >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.seen += x.shape[0]
        y = self.fc(self.pool(x).flatten(1))
        return y / y.norm(dim=1, keepdim=True)


CARD = ModelCard(family="generic", source_sha256="0" * 64)


@pytest.fixture
def images(tmp_path: Path, build: SimpleNamespace) -> list[Path]:
    paths = []
    for i in range(7):
        p = tmp_path / "img" / f"{i}.jpg"
        build.jpeg(p, build.colour(i), size=(20, 28), seed=i)
        paths.append(p)
    return paths


def _pre() -> object:
    return make_preprocessing("matlab", average_image=np.array([120.0, 110.0, 100.0]),
                              pre_resize=None)


def test_features_in_order_and_batched(images: list[Path]) -> None:
    net = TinyNet()
    feats = extract_embeddings(net, CARD, images, _pre(), batch_size=3, progress=False)
    assert feats.shape == (7, 6) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-6)
    # the same images one at a time give the same rows in the same order
    single = np.stack([net(_pre()(p)[None])[0].detach().numpy() for p in images[::-1]])[::-1]
    np.testing.assert_allclose(feats, single, atol=1e-6)


def test_cache_hit_miss_and_stale_inputs(images: list[Path], tmp_path: Path,
                                         build: SimpleNamespace) -> None:
    cache = tmp_path / "cache"
    net = TinyNet()
    first = extract_embeddings(net, CARD, images, _pre(), batch_size=4, cache_dir=cache,
                               progress=False)
    assert net.seen == 7
    again = extract_embeddings(net, CARD, images, _pre(), batch_size=4, cache_dir=cache,
                               progress=False)
    assert net.seen == 7  # cache hit: the model did not run
    np.testing.assert_array_equal(first, again)
    # a changed image (new content and mtime) misses the cache
    build.jpeg(images[2], (0, 0, 0), size=(20, 28))
    st = os.stat(images[2])
    os.utime(images[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = extract_embeddings(net, CARD, images, _pre(), cache_dir=cache, progress=False)
    assert net.seen == 14
    assert not np.allclose(changed[2], first[2])
    # another preprocessing misses the cache
    other = make_preprocessing("matlab", average_image=np.zeros(3), pre_resize=None)
    extract_embeddings(net, CARD, images, other, cache_dir=cache, progress=False)
    assert net.seen == 21
    # other weights miss the cache
    net2 = TinyNet()
    with torch.no_grad():
        net2.fc.bias.add_(1.0)
    assert model_hash(net2, CARD) != model_hash(net, CARD)
    extract_embeddings(net2, CARD, images, other, cache_dir=cache, progress=False)
    assert net2.seen == 7
    # another source checkpoint hash misses the cache
    other_source = ModelCard(family="generic", source_sha256="1" * 64)
    assert model_hash(net, other_source) != model_hash(net, CARD)


def test_interrupted_run_resumes_from_chunks(images: list[Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    broken = TinyNet(fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        extract_embeddings(broken, CARD, images, _pre(), batch_size=2, cache_dir=cache,
                           chunk_size=2, progress=False)
    assert len(list(cache.glob("*/chunk_*.npy"))) == 2  # images 0-3 done
    net = TinyNet()
    resumed = extract_embeddings(net, CARD, images, _pre(), batch_size=2, cache_dir=cache,
                                 chunk_size=2, progress=False)
    assert net.seen == 3  # only images 4-6 were computed
    fresh = extract_embeddings(TinyNet(), CARD, images, _pre(), batch_size=2, progress=False)
    np.testing.assert_allclose(resumed, fresh, atol=1e-6)
    assert not list(cache.glob("*/chunk_*.npy"))
    assert len(list(cache.glob("*/features.npy"))) == 1


def test_missing_and_corrupt_images_named(images: list[Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothere.jpg"):
        extract_embeddings(TinyNet(), CARD, [tmp_path / "nothere.jpg"], _pre(),
                           cache_dir=tmp_path / "c", progress=False)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.jpg: cannot read image"):
        extract_embeddings(TinyNet(), CARD, [images[0], bad], _pre(), progress=False)


def test_corrupt_image_in_worker_gives_clean_message(images: list[Path], tmp_path: Path) -> None:
    # a DataLoader worker wraps exceptions in "Caught ... Original Traceback ..."; the CLI
    # would print that whole traceback as the error message
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputError) as info:
        extract_embeddings(TinyNet(), CARD, [images[0], bad, images[1]], _pre(), batch_size=2,
                           workers=1, progress=False)
    message = str(info.value)
    assert message.startswith(f"{bad}: cannot read image")
    assert "Traceback" not in message and "\n" not in message


def test_workers_give_the_same_features(images: list[Path]) -> None:
    a = extract_embeddings(TinyNet(), CARD, images, _pre(), batch_size=3, progress=False)
    b = extract_embeddings(TinyNet(), CARD, images, _pre(), batch_size=3, workers=1,
                           progress=False)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_matlab_preprocessing_steps_and_record(tmp_path: Path, build: SimpleNamespace) -> None:
    path = tmp_path / "grey.jpg"
    build.jpeg(path, (100, 100, 100), size=(40, 30))
    avg = np.array([10.0, 20.0, 30.0], dtype=np.float32)
    pre = make_preprocessing("matlab", average_image=avg, pre_resize=(256, 256))
    x = pre(path).numpy()
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    # a flat image stays flat through both resizes (JPEG may move it by a level)
    for c in range(3):
        np.testing.assert_allclose(x[c], 100 - avg[c], atol=1.01)
    rec = pre.record()
    assert rec["pre_resize"] == [256, 256] and rec["jpeg_reencode_quality"] == 75
    assert rec["average_image"] == [10.0, 20.0, 30.0] and rec["std"] is None
    # a full 224x224x3 mean image is subtracted per pixel (MATLAB H x W x C)
    full = np.zeros((224, 224, 3), dtype=np.float32)
    full[0, 0, 1] = 50
    y = make_preprocessing("matlab", average_image=full, pre_resize=None)(path).numpy()
    assert y[1, 0, 0] == pytest.approx(y[1, 0, 1] - 50, abs=1.01)
    assert make_preprocessing("matlab", average_image=full).record()["average_image"][
        "shape"] == [224, 224, 3]
    with pytest.raises(InputError, match="average_image must have shape"):
        make_preprocessing("matlab", average_image=np.zeros((256, 256, 3)))
    with pytest.raises(InputError, match="unknown preprocessing"):
        make_preprocessing("caffe")


def test_torchvision_preprocessing(tmp_path: Path, build: SimpleNamespace) -> None:
    path = tmp_path / "img.jpg"
    build.jpeg(path, (255, 0, 0), size=(300, 400))
    x = make_preprocessing("torchvision")(path).numpy()
    assert x.shape == (3, 224, 224)
    # red channel: (1 - 0.485) / 0.229; JPEG chroma can move it by a few levels
    assert x[0, 112, 112] == pytest.approx((1 - 0.485) / 0.229, abs=0.1)
    assert make_preprocessing("torchvision").record()["name"] == "torchvision"


# ---------------------------------------------------------------------------- interpolation
# and greyscale images (vl_imreadjpeg's defaults and its 'Pack' of a grey image)

IMAGENET_255 = np.array([123.68, 116.779, 103.939], dtype=np.float32)


def _grey_png(path: Path, value: int, size: tuple[int, int] = (30, 30)) -> Path:
    """A flat one-channel (mode L) PNG: lossless, so the expected values are exact."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)
    return path


def test_grey_image_first_mean_as_vl_imreadjpeg(tmp_path: Path) -> None:
    path = _grey_png(tmp_path / "grey.png", 100)
    pre = make_preprocessing("matlab", average_image=IMAGENET_255, pre_resize=None)
    x = pre(path).numpy()
    assert x.shape == (3, 224, 224)
    # vl_imreadjpeg packs the grey channel into all three and adds dv[0] = -average[0] to
    # each: every channel is 100 - 123.68
    for c in range(3):
        np.testing.assert_allclose(x[c], 100 - 123.68, atol=1e-3)
    per = make_preprocessing("matlab", average_image=IMAGENET_255, pre_resize=None,
                             greyscale_mean="per-channel")
    y = per(path).numpy()
    for c, mean in enumerate((123.68, 116.779, 103.939)):
        np.testing.assert_allclose(y[c], 100 - mean, atol=1e-3)
    # channels 2 and 3 differ between the two by 123.68 - 116.779 and 123.68 - 103.939
    assert float((y - x)[1].mean()) == pytest.approx(6.901, abs=1e-3)
    assert float((y - x)[2].mean()) == pytest.approx(19.741, abs=1e-3)
    assert pre.record()["greyscale_mean"] == "first"
    assert per.record()["greyscale_mean"] == "per-channel"
    assert pre.record() != per.record()


def test_colour_image_and_mean_image_ignore_the_greyscale_option(tmp_path: Path,
                                                                 build: SimpleNamespace) -> None:
    rgb = tmp_path / "rgb.jpg"
    build.jpeg(rgb, (100, 100, 100), size=(30, 30), seed=1)
    kwargs = {"average_image": IMAGENET_255, "pre_resize": None}
    a = make_preprocessing("matlab", **kwargs)(rgb).numpy()
    b = make_preprocessing("matlab", greyscale_mean="per-channel", **kwargs)(rgb).numpy()
    np.testing.assert_array_equal(a, b)
    # a 224x224x3 mean image: vl_imreadjpeg replicates the grey channel, then subtracts the
    # mean image per channel (both options)
    grey = _grey_png(tmp_path / "g.png", 50)
    full = np.zeros((224, 224, 3), dtype=np.float32)
    full[:, :, 1] = 20
    full[:, :, 2] = 40
    for option in ("first", "per-channel"):
        z = make_preprocessing("matlab", average_image=full, pre_resize=None,
                               greyscale_mean=option)(grey).numpy()
        for c, mean in enumerate((0, 20, 40)):
            np.testing.assert_allclose(z[c], 50 - mean, atol=1e-3)


def test_grey_jpeg_stays_one_channel_through_the_reencode(tmp_path: Path) -> None:
    from PIL import Image

    from reproduce.evaluation.preprocess import jpeg_roundtrip, read_pixels

    path = tmp_path / "grey.jpg"
    Image.fromarray(np.full((40, 30), 90, dtype=np.uint8)).save(path, quality=95)
    pixels = read_pixels(path)
    assert pixels.shape == (40, 30)  # one grey channel, as libjpeg's JCS_GRAYSCALE
    assert jpeg_roundtrip(pixels, 75).shape == (40, 30)
    x = make_preprocessing("matlab", average_image=IMAGENET_255, pre_resize=(256, 256))(
        path).numpy()
    # flat 90 (JPEG may move it by a level): 90 - 123.68 in every channel
    np.testing.assert_allclose(x, 90 - 123.68, atol=1.01)
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2])


def test_interpolation_is_recorded_and_keys_the_cache(images: list[Path], tmp_path: Path) -> None:
    avg = np.array([120.0, 110.0, 100.0])
    cubic = make_preprocessing("matlab", average_image=avg, pre_resize=None)
    linear = make_preprocessing("matlab", average_image=avg, pre_resize=None,
                                interpolation="bilinear")
    assert cubic.record()["interpolation"] == "bicubic"
    assert linear.record()["interpolation"] == "bilinear"
    assert "bilinear" in linear.record()["resize"]
    # the two differ on real content (the 20 x 28 noisy images are upsampled to 224)
    assert float(np.abs(cubic(images[0]).numpy() - linear(images[0]).numpy()).max()) > 1
    cache = tmp_path / "cache"
    net = TinyNet()
    extract_embeddings(net, CARD, images, cubic, cache_dir=cache, progress=False)
    extract_embeddings(net, CARD, images, linear, cache_dir=cache, progress=False)
    assert net.seen == 14  # bilinear embeddings were not taken from the bicubic cache
    assert len(list(cache.glob("*/features.npy"))) == 2
    with pytest.raises(InputError, match="interpolation must be one of"):
        make_preprocessing("matlab", average_image=avg, interpolation="nearest")
    with pytest.raises(InputError, match="greyscale_mean must be one of"):
        make_preprocessing("matlab", average_image=avg, greyscale_mean="mean")


def test_cache_key_separates_gpu_features_and_keeps_cpu_keys() -> None:
    from reproduce.evaluation.embeddings import cache_key

    cpu = cache_key("m", {"name": "matlab"}, "i", 3)
    assert cpu == {"model": "m", "preprocessing": {"name": "matlab"}, "images": "i",
                   "count": 3}  # as before devices existed: old caches stay valid
    assert cache_key("m", {"name": "matlab"}, "i", 3, "cpu") == cpu
    assert cache_key("m", {"name": "matlab"}, "i", 3, "cuda:1") == {**cpu, "device": "cuda"}
