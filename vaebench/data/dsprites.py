"""Procedural dSprites: a deterministic, download-free re-creation of the dataset.

dSprites (Matthey et al. 2017) is 737,280 binary 64x64 images of a white shape on black,
one image per combination of five independent factors:

    shape        3   square, ellipse, heart
    scale        6   linearly spaced in [0.5, 1]
    orientation 40   linearly spaced in [0, 2*pi), counter-clockwise as displayed
    pos_x       32   linearly spaced in [0, 1], left -> right
    pos_y       32   linearly spaced in [0, 1], top -> bottom (image row order)

Factor indices enumerate in the original order: shape varies slowest, pos_y fastest.

Differences from the original, on purpose:
- orientation uses endpoint=False, so the 40 angles are distinct (the original includes
  2*pi as its 40th value, which duplicates the first for every shape). Index 10 is
  exactly pi/2 and index 20 exactly pi.
- each position step moves the shape by exactly one pixel: the shape centre is the centre
  of pixel 16 + index, in both axes. Every image is therefore an exact integer translate of
  one of 3 * 6 * 40 = 720 sprites, which are rasterised once per process (4x4
  supersampling of an inside-test, coverage >= 0.5 lit) and pasted; rendering is then
  pure integer copying, so it is fast and bit-for-bit deterministic.

Geometry: every shape is defined so that it fits the unit disc under any rotation, and is
drawn with radius `scale * MAX_RADIUS_PX` (15 px at scale 1). A sprite is the
31x31 window around its centre pixel, so even the largest shape at the extreme positions
leaves row 0, row 63, column 0 and column 63 dark. The shapes, in unit-disc units:
- square: half side 1/sqrt(2) (its corners touch the disc when rotated),
- ellipse: semi-axes 1 (horizontal at orientation 0) and 0.5,
- heart: the implicit curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, point down at orientation 0,
  shifted up by 0.25 and shrunk by 1.25 so that its bounding disc is the unit disc.
"""
from __future__ import annotations

import functools
import math

import numpy as np

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
N_IMAGES = math.prod(FACTOR_SIZES)  # 737,280
SHAPE_NAMES = ("square", "ellipse", "heart")

IMAGE_SIZE = 64
MAX_RADIUS_PX = 15.0  # radius of the bounding disc of the largest shape (scale 1)
SPRITE_HALF = 15  # a sprite is the (2*15+1)^2 window around its centre pixel
SPRITE_SIZE = 2 * SPRITE_HALF + 1
FIRST_CENTRE_PX = 16  # centre pixel at position index 0; index k -> pixel 16 + k
SUPERSAMPLE = 4  # sub-samples per pixel side

SCALES = np.linspace(0.5, 1.0, FACTOR_SIZES[1])
ORIENTATIONS = np.linspace(0.0, 2.0 * np.pi, FACTOR_SIZES[2], endpoint=False)
POSITIONS = np.linspace(0.0, 1.0, FACTOR_SIZES[3])

# Flat offsets (in a 64*64 image) of every sprite pixel relative to the sprite's top-left.
_WINDOW = np.arange(SPRITE_SIZE)
_WINDOW_OFFSETS = (_WINDOW[:, None] * IMAGE_SIZE + _WINDOW[None, :]).ravel()


def _inside_square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    half = 1.0 / math.sqrt(2.0)
    return (np.abs(x) <= half) & (np.abs(y) <= half)


def _inside_ellipse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x * x + (y / 0.5) ** 2 <= 1.0


def _inside_heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    hx = 1.25 * x
    hy = 1.25 * y + 0.25
    r = hx * hx + hy * hy - 1.0
    return r * r * r - hx * hx * hy * hy * hy <= 0.0


_INSIDE = (_inside_square, _inside_ellipse, _inside_heart)


@functools.lru_cache(maxsize=1)
def _sprite_atlas() -> np.ndarray:
    """All 720 sprites, (3, 6, 40, 31, 31) uint8 in {0, 1}; read-only, built once."""
    # Sub-sample coordinates in pixels relative to the centre of the centre pixel; the
    # sample set is symmetric, so a rotation by pi/2 maps samples onto samples.
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    axis = (_WINDOW - SPRITE_HALF)[:, None] + sub[None, :]  # (31, S)
    u = axis[None, None, :, :]  # columns: x to the right
    v = -axis[:, :, None, None]  # rows: y up, as displayed
    # Rotating the shape by +theta = sampling the unrotated shape at R(-theta) p.
    cos = np.cos(ORIENTATIONS)[:, None, None, None, None]
    sin = np.sin(ORIENTATIONS)[:, None, None, None, None]
    x_rot = cos * u + sin * v  # (40, 31, S, 31, S)
    y_rot = cos * v - sin * u
    atlas = np.empty((FACTOR_SIZES[0], FACTOR_SIZES[1], FACTOR_SIZES[2], SPRITE_SIZE, SPRITE_SIZE), np.uint8)
    threshold = SUPERSAMPLE * SUPERSAMPLE / 2
    for s_idx, inside in enumerate(_INSIDE):
        for k, scale in enumerate(SCALES):
            radius = scale * MAX_RADIUS_PX
            hits = inside(x_rot / radius, y_rot / radius).sum(axis=(2, 4))
            atlas[s_idx, k] = hits >= threshold
    atlas.setflags(write=False)
    return atlas


def _check_factors(factors: np.ndarray) -> np.ndarray:
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"factors must be (N, {len(FACTOR_SIZES)}), got {factors.shape}")
    if factors.size and not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors must be integer indices, got dtype {factors.dtype}")
    factors = factors.astype(np.int64, copy=False)
    if factors.size and ((factors < 0).any() or (factors >= np.array(FACTOR_SIZES)).any()):
        raise ValueError(f"factor indices out of range {FACTOR_SIZES}")
    return factors


def factor_values(factors: np.ndarray) -> dict[str, np.ndarray]:
    """(N, 5) factor indices -> {name: (N,) values}.

    shape stays the integer index (see SHAPE_NAMES); scale in [0.5, 1]; orientation in
    radians in [0, 2*pi); pos_x and pos_y in [0, 1].
    """
    factors = _check_factors(factors)
    return {
        "shape": factors[:, 0].copy(),
        "scale": SCALES[factors[:, 1]],
        "orientation": ORIENTATIONS[factors[:, 2]],
        "pos_x": POSITIONS[factors[:, 3]],
        "pos_y": POSITIONS[factors[:, 4]],
    }


def render(factors: np.ndarray, chunk_size: int = 8192) -> np.ndarray:
    """(N, 5) int factor indices -> (N, 1, 64, 64) uint8 images in {0, 1}.

    Deterministic bit for bit; temporary memory is bounded by `chunk_size` images.
    """
    factors = _check_factors(factors)
    n = len(factors)
    atlas = _sprite_atlas()
    out = np.zeros((n, IMAGE_SIZE * IMAGE_SIZE), np.uint8)
    first_top_left = FIRST_CENTRE_PX - SPRITE_HALF
    for start in range(0, n, chunk_size):
        f = factors[start : start + chunk_size]
        sprites = atlas[f[:, 0], f[:, 1], f[:, 2]].reshape(len(f), -1)
        top_left = (first_top_left + f[:, 4]) * IMAGE_SIZE + (first_top_left + f[:, 3])
        index = top_left[:, None] + _WINDOW_OFFSETS[None, :]
        np.put_along_axis(out[start : start + len(f)], index, sprites, axis=1)
    return out.reshape(n, 1, IMAGE_SIZE, IMAGE_SIZE)


def all_factors() -> np.ndarray:
    """The full (737280, 5) int64 factor product, in dSprites order (pos_y fastest)."""
    return np.indices(FACTOR_SIZES, dtype=np.int64).reshape(len(FACTOR_SIZES), -1).T


def sample_factors(n: int, seed: int, replace: bool = False) -> np.ndarray:
    """(n, 5) int64 factor indices drawn uniformly from the product with a seeded Generator.

    Without replacement (default) the n combinations are distinct, so n <= 737,280.
    """
    if n < 0 or (not replace and n > N_IMAGES):
        raise ValueError(f"n must be in [0, {N_IMAGES}] without replacement, got {n}")
    rng = np.random.default_rng(seed)
    flat = rng.choice(N_IMAGES, size=n, replace=replace)
    return np.stack(np.unravel_index(flat, FACTOR_SIZES), axis=1).astype(np.int64)


def load_dsprites(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n random distinct dSprites: images (n, 1, 64, 64) float32 in {0, 1},
    labels (n,) int64 = shape index (3 classes), factors (n, 5) int64."""
    factors = sample_factors(n, seed)
    images = render(factors).astype(np.float32)
    return images, factors[:, 0].copy(), factors
