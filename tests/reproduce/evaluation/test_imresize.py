"""MATLAB imresize (bicubic/bilinear, antialias) and vl_imreadjpeg resize against
hand-derived values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reproduce.errors import InputError
from reproduce.evaluation.imresize import (
    cubic,
    imresize,
    imresize_contributions,
    triangle,
    vl_imreadjpeg_filter,
    vl_imreadjpeg_resize,
)


def _keys(x: float) -> float:
    """The a = -0.5 cubic written out by hand."""
    a = abs(x)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _tri(x: float) -> float:
    """The bilinear (triangle) kernel written out by hand."""
    a = abs(x)
    return 1 - a if a < 1 else 0.0


def _mirror(i: int, n: int) -> int:
    """MATLAB's symmetric padding for a 1-based index: 0 -> 1, -1 -> 2, n+1 -> n, ..."""
    while i < 1 or i > n:
        i = 1 - i if i < 1 else 2 * n + 1 - i
    return i


def _resize_1d(signal: list[float], out_len: int, kernel=_keys, base_width: int = 4
               ) -> list[float]:
    """imresize along one dimension with explicit loops, straight from the algorithm."""
    n = len(signal)
    scale = out_len / n
    width = base_width / scale if scale < 1 else base_width
    out = []
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [left + p for p in range(math.ceil(width) + 2)]
        if scale < 1:
            w = [scale * kernel(scale * (u - t)) for t in taps]
        else:
            w = [kernel(u - t) for t in taps]
        total = sum(w)
        out.append(sum(wi / total * signal[_mirror(t, n) - 1]
                       for wi, t in zip(w, taps, strict=True)))
    return out


def test_kernel_values_by_hand() -> None:
    x = np.array([0, 0.5, 1, 1.5, 2, 2.5, -0.5, -1.5])
    expected = [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625, -0.0625]
    np.testing.assert_array_equal(cubic(x), expected)


def test_antialias_width_and_taps() -> None:
    # shrinking 8 -> 4 (scale 1/2): kernel width 4 / (1/2) = 8, ceil(8) + 2 = 10 taps
    w, idx = imresize_contributions(8, 4)
    assert w.shape == (4, 10)
    # output pixel 2: u = 2 / 0.5 + 0.5 * (1 - 2) = 3.5, taps floor(3.5 - 4) = -1 .. 8
    u = 3.5
    raw = [0.5 * _keys(0.5 * (u - t)) for t in range(-1, 9)]
    np.testing.assert_allclose(w[1], np.array(raw) / sum(raw), rtol=0, atol=1e-15)
    # without antialiasing the kernel keeps width 4 (6 taps)
    w_plain, _ = imresize_contributions(8, 4, antialias=False)
    assert w_plain.shape == (4, 6)
    # upsampling never stretches the kernel
    assert imresize_contributions(4, 8)[0].shape == (8, 6)
    # every row of weights sums to one
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-15)


def test_boundary_mirroring() -> None:
    # 8 -> 4, output 1: u = 1.5, taps -3..6 (1-based) mirror to 4 3 2 1 1 2 3 4 5 6
    _, idx = imresize_contributions(8, 4)
    assert idx[0].tolist() == [3, 2, 1, 0, 0, 1, 2, 3, 4, 5]
    # 4 -> 8, output 1: u = 0.75, taps -2..3 mirror to 3 2 1 1 2 3 (1-based)
    _, idx_up = imresize_contributions(4, 8)
    assert idx_up[0].tolist() == [2, 1, 0, 0, 1, 2]
    # last output of 4 -> 8: u = 4.25, taps 2..7 mirror to 2 3 4 4 3 2
    assert idx_up[-1].tolist() == [1, 2, 3, 3, 2, 1]


@pytest.mark.parametrize("shape,out", [((37, 53, 3), (256, 256)), ((300, 200), (64, 90))])
def test_constant_images_stay_constant(shape: tuple[int, ...], out: tuple[int, int]) -> None:
    im = np.full(shape, 173, dtype=np.uint8)
    res = imresize(im, out)
    assert res.dtype == np.uint8
    assert res.shape == out + shape[2:]
    assert np.all(res == 173)
    res_f = imresize(im.astype(np.float64) / 7, out)
    np.testing.assert_allclose(res_f, 173 / 7, rtol=1e-13)


def test_downsample_ramp_by_two_matches_hand_loops() -> None:
    ramp = [float(v) for v in range(10)]
    expected = _resize_1d(ramp, 5)
    ours = imresize(np.array(ramp)[:, None] * np.ones((1, 3)), (5, 3))
    np.testing.assert_allclose(ours[:, 0], expected, rtol=0, atol=1e-12)
    # interior outputs of a ramp are exact averages of the two source pixels
    assert ours[2, 0] == pytest.approx(4.5, abs=1e-12)
    # the borders are not: mirroring bends the ramp
    assert ours[0, 0] != pytest.approx(0.5, abs=1e-3)


def test_upsample_step_matches_hand_loops_and_overshoots() -> None:
    step = [0.0, 0.0, 0.0, 0.0, 100.0, 100.0, 100.0, 100.0]
    expected = _resize_1d(step, 16)
    ours = imresize(np.array(step)[None, :], (1, 16))[0]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    # the a = -0.5 cubic rings: one output just below 0 and one just above 100
    assert ours.min() < 0 and ours.max() > 100
    # output 7 (1-based): u = 3.75, weights on pixels 2..5 of 0.0234 * -1 ... by hand:
    # pixels 4, 5 (values 0, 100) at distances -0.25 (w 0.8672) and -1.25 (w -0.0703)
    assert ours[6] == pytest.approx(100 * _keys(-1.25), abs=1e-12)


def test_uint8_rounds_after_each_pass_in_scale_order() -> None:
    rng = np.random.default_rng(3)
    im = rng.integers(0, 256, size=(12, 9), dtype=np.uint8)
    out = (6, 7)  # rows scale 0.5 (first), cols 7/9
    rows_first = np.empty((6, 9))
    for c in range(9):
        rows_first[:, c] = _resize_1d(im[:, c].astype(float).tolist(), 6)
    rows_first = np.clip(np.floor(rows_first + 0.5), 0, 255)
    expected = np.empty(out)
    for r in range(6):
        expected[r] = _resize_1d(rows_first[r].tolist(), 7)
    expected = np.clip(np.floor(expected + 0.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(imresize(im, out), expected)


def test_vl_imreadjpeg_upsample_weights_by_hand() -> None:
    M = vl_imreadjpeg_filter(4, 8)
    # v = 0: u = -0.25, taps -2..1 replicate onto pixel 0: cubic(1.75)+cubic(0.75)+cubic(0.25)
    assert M[0, 0] == pytest.approx(_keys(1.75) + _keys(0.75) + _keys(0.25), abs=1e-7)
    assert M[0, 1] == pytest.approx(_keys(1.25), abs=1e-7)
    # v = 3: u = 1.25, taps 0..3 at distances 1.25, 0.25, -0.75, -1.75
    np.testing.assert_allclose(M[3], [_keys(1.25), _keys(0.25), _keys(0.75), _keys(1.75)],
                               atol=1e-7)
    # replicated, not mirrored, border: differs from imresize's first weights
    w, idx = imresize_contributions(4, 8)
    mirrored = np.zeros(4)
    np.add.at(mirrored, idx[0], w[0])
    assert abs(mirrored[0] - M[0, 0]) > 0.01


def test_vl_imreadjpeg_downsample_is_antialiased() -> None:
    M = vl_imreadjpeg_filter(256, 224)
    # support 4 * 256/224 = 4.57 input pixels: some outputs use 5 (a plain cubic: always 4)
    assert (M != 0).sum(axis=1).max() == 5
    # v = 100: u = (8/7) * 100 + 1/14, taps from ceil(u - 16/7) = 113, delta = (u - k) * 7/8
    u = 8 / 7 * 100 + 1 / 14
    raw = [_keys((u - k) * 7 / 8) for k in range(113, 118)]
    # the C code computes u in single precision (ulp at 114 is 7.6e-6; weight slopes < 2)
    np.testing.assert_allclose(M[100, 113:118], np.array(raw) / sum(raw), atol=2e-5)
    np.testing.assert_allclose(M.sum(axis=1), 1.0, atol=1e-6)
    im = np.full((256, 256, 3), 77, dtype=np.uint8)
    out = vl_imreadjpeg_resize(im, (224, 224))
    assert out.dtype == np.float32 and out.shape == (224, 224, 3)
    np.testing.assert_allclose(out, 77, atol=1e-4)


def test_vl_imreadjpeg_centre_crops_other_aspect_ratios() -> None:
    # vl_imreadjpeg 'Resize' [h w] with its default crop options resizes the largest centred
    # region with the output's aspect ratio: a 4 x 12 image to 4 x 4 takes columns 4..7
    # (alpha = 1, integer offsets: the cubic weights are exactly 1 and 0)
    rng = np.random.default_rng(5)
    im = rng.integers(0, 256, size=(4, 12, 3), dtype=np.uint8)
    out = vl_imreadjpeg_resize(im, (4, 4))
    np.testing.assert_array_equal(out, im[:, 4:8].astype(np.float32))
    # tall image: rows 2..5 of 8 x 4
    tall = rng.integers(0, 256, size=(8, 4), dtype=np.uint8)
    np.testing.assert_array_equal(vl_imreadjpeg_resize(tall, (4, 4))[:, :, 0],
                                  tall[2:6].astype(np.float32))


def test_vl_imreadjpeg_crop_filter_weights_by_hand() -> None:
    # 8 pixels, crop of 4 from offset 2, to 2: alpha = 2, beta = 0.5 * (2 - 1) + 2 = 2.5;
    # v = 0: u = 2.5, support 8, taps ceil(2.5 - 4) = -1 .. 6 at (u - k) / 2; k = -1 is
    # replicated onto pixel 0; pixels outside the crop but inside the image are used as they are
    M = vl_imreadjpeg_filter(8, 2, 4, 2)
    raw = [_keys((2.5 - k) / 2) for k in range(-1, 7)]
    expected = np.zeros(8)
    expected[0] = raw[0] + raw[1]
    expected[1:7] = raw[2:]
    np.testing.assert_allclose(M[0], expected / sum(raw), atol=1e-7)


# ---------------------------------------------------------------------------- bilinear


def test_bilinear_kernel_values_by_hand() -> None:
    x = np.array([0, 0.25, -0.25, 0.5, 1, -1, 1.5, -3], dtype=np.float32)
    out = triangle(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1.0, 0.75, 0.75, 0.5, 0.0, 0.0, 0.0, 0.0])


def test_vl_imreadjpeg_bilinear_upsample_weights_by_hand() -> None:
    M = vl_imreadjpeg_filter(4, 8, interpolation="bilinear")
    # alpha = 0.5, beta = -0.25; support 2, two taps from ceil(u - 1)
    # v = 0: u = -0.25, taps -1 (delta 0.75, h 0.25) and 0 (delta -0.25, h 0.75): both land
    # on pixel 0 (replicated border)
    assert M[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    # v = 3: u = 1.25, taps 1 (h 0.75) and 2 (h 0.25)
    np.testing.assert_allclose(M[3], [0, 0.75, 0.25, 0], atol=1e-7)
    # v = 7: u = 3.25, taps 3 (h 0.75) and 4 (h 0.25, replicated onto pixel 3)
    assert M[7].tolist() == [0.0, 0.0, 0.0, 1.0]
    # the bicubic filter of the same sizes differs (4 taps, negative lobes)
    assert (vl_imreadjpeg_filter(4, 8) < 0).any() and not (M < 0).any()


def test_vl_imreadjpeg_bilinear_downsample_is_antialiased() -> None:
    M = vl_imreadjpeg_filter(256, 224, interpolation="bilinear")
    # support 2 * 256/224 = 2.29 input pixels: some outputs use 3 (plain bilinear: 2)
    assert (M != 0).sum(axis=1).max() == 3
    # v = 100: u = (8/7) * 100 + 1/14 = 114.357, taps from ceil(u - 8/7) = 114 at
    # (u - k) * 7/8 = 0.3125, -0.5625, -1.4375: h = 0.6875, 0.4375, 0; mass 1.125
    u = 8 / 7 * 100 + 1 / 14
    raw = [_tri((u - k) * 7 / 8) for k in range(114, 117)]
    assert raw[2] == 0.0
    # the C code computes u in single precision (ulp at 114 is 7.6e-6; weight slope 0.78)
    np.testing.assert_allclose(M[100, 114:117], np.array(raw) / sum(raw), atol=1e-5)
    np.testing.assert_allclose(M[100, 114:116], [0.6875 / 1.125, 0.4375 / 1.125], atol=1e-5)
    # a plain (not stretched) triangle would weigh 114 and 115 with 0.643 and 0.357
    assert abs(M[100, 114] - (1 - (u - 114))) > 0.02
    np.testing.assert_allclose(M.sum(axis=1), 1.0, atol=1e-6)
    im = np.full((256, 256, 3), 77, dtype=np.uint8)
    out = vl_imreadjpeg_resize(im, (224, 224), interpolation="bilinear")
    assert out.dtype == np.float32 and out.shape == (224, 224, 3)
    np.testing.assert_allclose(out, 77, atol=1e-4)


def test_vl_imreadjpeg_bilinear_crop_is_exact_at_unit_scale() -> None:
    # alpha = 1: taps at distances 1 (h = 0) and 0 (h = 1); the zero tap is skipped
    rng = np.random.default_rng(7)
    im = rng.integers(0, 256, size=(4, 12), dtype=np.uint8)
    out = vl_imreadjpeg_resize(im, (4, 4), interpolation="bilinear")
    assert out.shape == (4, 4, 1)
    np.testing.assert_array_equal(out[:, :, 0], im[:, 4:8].astype(np.float32))


def test_vl_imreadjpeg_bilinear_and_bicubic_differ_on_an_edge() -> None:
    # 8 x 2 -> 4 x 1 (same aspect ratio: no crop) on a step 0,0,0,0,100,100,100,100 down the
    # rows (alpha 2, beta 0.5): output 1 has u = 2.5
    # bilinear: support 4, taps ceil(0.5) = 1..4 at (u - k) / 2 = 0.75, 0.25, -0.25, -0.75:
    # h = 0.25, 0.75, 0.75, 0.25 (mass 2); pixels 1, 2, 3 are 0, pixel 4 is 100
    step = np.repeat(np.array([0, 0, 0, 0, 100, 100, 100, 100], np.float32)[:, None], 2, axis=1)
    bil = vl_imreadjpeg_resize(step, (4, 1), interpolation="bilinear")[:, 0, 0]
    assert bil[1] == pytest.approx(100 * 0.25 / 2, abs=1e-4)
    # bicubic: support 8, taps ceil(-1.5) = -1..6 at (u - k) / 2; pixels 4..6 hold 100
    raw = {k: _keys((2.5 - k) / 2) for k in range(-1, 7)}
    expected = 100 * sum(raw[k] for k in (4, 5, 6)) / sum(raw.values())
    cub = vl_imreadjpeg_resize(step, (4, 1))[:, 0, 0]
    assert cub[1] == pytest.approx(expected, abs=1e-4)
    assert abs(cub[1] - bil[1]) > 1


def test_imresize_bilinear_matches_hand_loops() -> None:
    # MATLAB imresize(..., 'bilinear'): the triangle of width 2, stretched when shrinking
    ramp = [float(v) ** 2 for v in range(10)]
    expected = _resize_1d(ramp, 4, kernel=_tri, base_width=2)
    ours = imresize(np.array(ramp)[:, None], (4, 1), method="bilinear")[:, 0]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    up = _resize_1d([0.0, 10.0, 30.0], 7, kernel=_tri, base_width=2)
    np.testing.assert_allclose(imresize(np.array([[0.0, 10.0, 30.0]]), (1, 7),
                                        method="bilinear")[0], up, rtol=0, atol=1e-12)
    # 3 -> 7, output 1: u = 1/(7/3) + 0.5 * (1 - 3/7) = 0.714, taps 0 and 1 (1-based) with
    # h = 0.286 and 0.714; tap 0 mirrors to pixel 1, so the value is pixel 1's (0)
    assert up[0] == pytest.approx(0.0, abs=1e-12)
    w, _ = imresize_contributions(8, 4, method="bilinear")
    assert w.shape == (4, 6)  # width 2 / 0.5 = 4 -> ceil(4) + 2 taps


def test_unknown_interpolation_is_named() -> None:
    with pytest.raises(InputError, match="unknown interpolation 'nearest'"):
        vl_imreadjpeg_filter(8, 4, interpolation="nearest")
    with pytest.raises(InputError, match="unknown interpolation"):
        imresize(np.zeros((4, 4)), (2, 2), method="box")


def test_bad_shapes_are_named() -> None:
    with pytest.raises(InputError, match="imresize"):
        imresize(np.zeros((2, 2, 2, 2)), (4, 4))
    with pytest.raises(InputError, match="uint8 or floating"):
        imresize(np.zeros((4, 4), dtype=np.int32), (2, 2))
