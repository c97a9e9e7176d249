"""Behaviour of the procedural dSprites generator: each factor does what it claims."""
from __future__ import annotations

import numpy as np
import pytest

from vaebench.data import dsprites
from vaebench.data.dsprites import FACTOR_NAMES, FACTOR_SIZES, render

SQUARE, ELLIPSE, HEART = 0, 1, 2
BIGGEST = len(dsprites.SCALES) - 1
MIDDLE = 16


def one(shape=SQUARE, scale=BIGGEST, orientation=0, pos_x=MIDDLE, pos_y=MIDDLE) -> np.ndarray:
    """The (64, 64) image of one factor combination."""
    return render(np.array([[shape, scale, orientation, pos_x, pos_y]]))[0, 0]


def crop(image: np.ndarray) -> np.ndarray:
    """The 31x31 window centred on the shape centre pixel at position (MIDDLE, MIDDLE)."""
    centre = dsprites.FIRST_CENTRE_PX + MIDDLE
    half = dsprites.SPRITE_HALF
    return image[centre - half : centre + half + 1, centre - half : centre + half + 1]


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(image)
    return rows.mean(), cols.mean()


def test_constants():
    assert FACTOR_NAMES == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert FACTOR_SIZES == (3, 6, 40, 32, 32)
    assert dsprites.N_IMAGES == 737_280


def test_factor_values_ranges_and_endpoints():
    values = dsprites.factor_values(dsprites.all_factors())
    assert set(values) == set(FACTOR_NAMES)
    assert values["scale"].min() == 0.5 and values["scale"].max() == 1.0
    assert values["orientation"].min() == 0.0 and values["orientation"].max() < 2 * np.pi
    for pos in ("pos_x", "pos_y"):
        assert values[pos].min() == 0.0 and values[pos].max() == 1.0
    assert np.array_equal(np.unique(values["shape"]), [0, 1, 2])
    one_row = dsprites.factor_values(np.array([[2, 0, 10, 31, 0]]))
    assert one_row["orientation"][0] == pytest.approx(np.pi / 2)
    assert one_row["pos_x"][0] == 1.0 and one_row["pos_y"][0] == 0.0


def test_all_factors_is_the_full_product_in_dsprites_order():
    factors = dsprites.all_factors()
    assert factors.shape == (737_280, 5) and factors.dtype == np.int64
    assert len(np.unique(np.ravel_multi_index(factors.T, FACTOR_SIZES))) == 737_280
    assert np.array_equal(factors[0], [0, 0, 0, 0, 0])
    assert np.array_equal(factors[1], [0, 0, 0, 0, 1])  # pos_y varies fastest
    assert np.array_equal(factors[-1], np.array(FACTOR_SIZES) - 1)


def test_sample_factors_in_range_seeded_and_distinct():
    a = dsprites.sample_factors(5000, seed=3)
    assert a.shape == (5000, 5) and a.dtype == np.int64
    assert (a >= 0).all() and (a < np.array(FACTOR_SIZES)).all()
    assert np.array_equal(a, dsprites.sample_factors(5000, seed=3))
    assert not np.array_equal(a, dsprites.sample_factors(5000, seed=4))
    assert len(np.unique(np.ravel_multi_index(a.T, FACTOR_SIZES))) == 5000
    for column, size in enumerate(FACTOR_SIZES):  # every value of every factor appears
        assert len(np.unique(a[:, column])) == size
    with pytest.raises(ValueError):
        dsprites.sample_factors(737_281, seed=0)


def test_render_shape_dtype_binary_and_deterministic():
    factors = dsprites.sample_factors(300, seed=1)
    images = render(factors)
    assert images.shape == (300, 1, 64, 64) and images.dtype == np.uint8
    assert set(np.unique(images)) == {0, 1}
    assert (images.reshape(300, -1).sum(axis=1) > 0).all()
    assert np.array_equal(images, render(factors))
    # chunking does not change a bit
    assert np.array_equal(images, render(factors, chunk_size=7))
    assert render(np.zeros((0, 5), np.int64)).shape == (0, 1, 64, 64)


def test_render_rejects_bad_factors():
    with pytest.raises(ValueError):
        render(np.array([[3, 0, 0, 0, 0]]))
    with pytest.raises(ValueError):
        render(np.array([[0, 0, 0, 0, -1]]))
    with pytest.raises(ValueError):
        render(np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError):
        render(np.zeros((2, 5), np.float32))


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
@pytest.mark.parametrize("orientation", [0, 7])
def test_scale_strictly_increases_area(shape, orientation):
    areas = [one(shape, scale, orientation).sum() for scale in range(FACTOR_SIZES[1])]
    assert all(b > a for a, b in zip(areas, areas[1:])), areas


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_pos_x_moves_right_and_pos_y_moves_down(shape):
    base = one(shape, orientation=5, pos_x=0, pos_y=0)
    cols = [centre_of_mass(one(shape, orientation=5, pos_x=x, pos_y=0))[1] for x in range(32)]
    rows = [centre_of_mass(one(shape, orientation=5, pos_x=0, pos_y=y))[0] for y in range(32)]
    assert all(b > a for a, b in zip(cols, cols[1:]))
    assert all(b > a for a, b in zip(rows, rows[1:]))
    # a position step is a translation by one pixel: the shape itself does not change
    moved = one(shape, orientation=5, pos_x=9, pos_y=4)
    assert np.array_equal(np.roll(base, (4, 9), axis=(0, 1)), moved)
    # pos_x leaves the row centre alone and pos_y the column centre
    assert np.ptp([centre_of_mass(one(shape, pos_x=x))[0] for x in range(32)]) == 0
    assert np.ptp([centre_of_mass(one(shape, pos_y=y))[1] for y in range(32)]) == 0


def test_rotations_by_symmetry_angles_give_nearly_the_same_image():
    quarter, half = 10, 20  # indices of pi/2 and pi
    for shape, turn in [(SQUARE, quarter), (SQUARE, half), (ELLIPSE, half)]:
        for scale in range(FACTOR_SIZES[1]):
            a, b = one(shape, scale, 0), one(shape, scale, turn)
            assert (a != b).sum() <= 0.02 * a.sum(), (shape, scale, turn)


def test_rotation_changes_asymmetric_views():
    # a square at 45 degrees, an ellipse at 90 degrees and an upside-down heart all differ
    assert (one(SQUARE, orientation=0) != one(SQUARE, orientation=5)).sum() > 20
    ellipse_0, ellipse_90 = one(ELLIPSE, orientation=0), one(ELLIPSE, orientation=10)
    assert (ellipse_0 != ellipse_90).sum() > 100
    # the ellipse is wide at 0 and tall at pi/2, with the same area up to aliasing
    assert np.nonzero(ellipse_0.any(axis=0))[0].size > 1.5 * np.nonzero(ellipse_0.any(axis=1))[0].size
    assert np.nonzero(ellipse_90.any(axis=1))[0].size > 1.5 * np.nonzero(ellipse_90.any(axis=0))[0].size
    heart_0, heart_180 = crop(one(HEART, orientation=0)), crop(one(HEART, orientation=20))
    assert (heart_0[::-1, ::-1] != heart_180).sum() <= 2  # a half turn about the centre
    assert not np.array_equal(heart_0, heart_180)


def test_heart_points_down_and_is_mirror_symmetric():
    heart = crop(one(HEART, orientation=0))
    assert np.array_equal(heart, heart[:, ::-1])  # symmetric about the vertical axis
    rows = np.nonzero(heart.any(axis=1))[0]
    width_top = heart[rows[0] + 3].sum()
    width_bottom = heart[rows[-1] - 3].sum()
    assert width_top > width_bottom  # lobes on top, point at the bottom
    assert heart[rows[0], dsprites.SPRITE_HALF] == 0  # the notch between lobes


def test_three_shapes_differ():
    for scale in (0, BIGGEST):
        images = [one(shape, scale, 3) for shape in (SQUARE, ELLIPSE, HEART)]
        areas = [image.sum() for image in images]
        for i in range(3):
            for j in range(i + 1, 3):
                assert (images[i] != images[j]).sum() > 0.1 * min(areas[i], areas[j])
        # with every shape fitting the same disc: ellipse (pi/2) < square (2) < heart
        assert areas[ELLIPSE] < areas[SQUARE] < areas[HEART]


def test_largest_shapes_at_extreme_positions_stay_inside_with_a_margin():
    corners = [(x, y) for x in (0, 31) for y in (0, 31)]
    factors = np.array(
        [[shape, BIGGEST, o, x, y] for shape in range(3) for o in range(40) for x, y in corners]
    )
    images = render(factors)[:, 0]
    border = np.ones((64, 64), bool)
    border[1:-1, 1:-1] = False
    assert not images[:, border].any()
    # no clipping either: every corner copy has the same area as the centred shape
    areas = images.reshape(len(factors), -1).sum(axis=1).reshape(3, 40, 4)
    assert (areas == areas[:, :, :1]).all()


def test_load_dsprites():
    images, labels, factors = dsprites.load_dsprites(n=500, seed=2)
    assert images.shape == (500, 1, 64, 64) and images.dtype == np.float32
    assert set(np.unique(images)) == {0.0, 1.0}
    assert labels.shape == (500,) and labels.dtype == np.int64
    assert factors.shape == (500, 5) and factors.dtype == np.int64
    assert np.array_equal(labels, factors[:, 0])
    assert set(np.unique(labels)) == {0, 1, 2}
    assert np.array_equal(images, render(factors).astype(np.float32))
    again = dsprites.load_dsprites(n=500, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip((images, labels, factors), again))
