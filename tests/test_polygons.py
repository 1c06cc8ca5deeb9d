"""model/polygons.py: TF rasterization vs pycocotools, even resampling keeps the shape."""
import numpy as np
import tensorflow as tf
from pycocotools import mask as mask_utils

from model import polygons


def star(rng, n, centre, radius):
    """A random star-shaped polygon (y, x) with n vertices, normalized coordinates."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = radius * rng.uniform(0.55, 1.0, n)
    return np.stack([centre[0] + rad * np.sin(ang), centre[1] + rad * np.cos(ang)], 1).astype(np.float32)


def coco_mask(parts, height, width):
    """pycocotools' rasterization of a multi-part polygon (union of parts)."""
    polys = [np.stack([p[:, 1] * width, p[:, 0] * height], 1).reshape(-1).tolist() for p in parts]
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, height, width))).astype(bool)


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def flatten(parts):
    points = np.concatenate(parts).astype(np.float32)
    part = np.concatenate([np.full(len(p), i, np.int32) for i, p in enumerate(parts)])
    return points, part


def test_rasterize_agrees_with_pycocotools():
    rng = np.random.default_rng(0)
    raster = tf.function(polygons.rasterize, reduce_retracing=True)
    ious = []
    while len(ious) < 40:
        h, w = (int(s) for s in rng.integers(40, 96, 2))
        if len(ious) % 4 == 3:  # two disjoint parts, unioned
            parts = [star(rng, rng.integers(3, 10), (0.3, 0.3), 0.2), star(rng, rng.integers(3, 10), (0.7, 0.7), 0.2)]
        else:
            parts = [star(rng, rng.integers(3, 16), rng.uniform(0.35, 0.65, 2), rng.uniform(0.15, 0.35))]
        ref = coco_mask(parts, h, w)
        if ref.sum() < 100:
            continue
        points, part = flatten(parts)
        ours = raster(points, part, tf.constant(h), tf.constant(w)).numpy()
        assert ours.shape == (h, w)
        ious.append(iou(ours, ref))
    print(f"rasterize vs pycocotools IoU: mean {np.mean(ious):.4f} min {np.min(ious):.4f}")
    assert np.mean(ious) >= 0.98 and np.min(ious) >= 0.95, (np.mean(ious), np.min(ious))


def test_rasterize_edge_cases():
    square = np.array([[0.25, 0.25], [0.25, 0.75], [0.75, 0.75], [0.75, 0.25]], np.float32)
    m = polygons.rasterize(square, np.zeros(4, np.int32), 8, 8).numpy()
    assert m[2:6, 2:6].all() and m.sum() == 16
    padded = np.concatenate([square, np.zeros((3, 2), np.float32)])
    np.testing.assert_array_equal(
        polygons.rasterize(padded, np.array([0] * 4 + [-1] * 3), 8, 8).numpy(), m)
    assert not polygons.rasterize(np.zeros([0, 2], np.float32), np.zeros([0], np.int32), 8, 8).numpy().any()


def contour_distance(points, polygon):
    """Distance of each point to the closed polygon's edges."""
    a, b = polygon, np.roll(polygon, -1, 0)
    ab = b - a
    t = np.clip(np.einsum("pij,ij->pi", points[:, None] - a[None], ab) / np.maximum((ab ** 2).sum(1), 1e-12), 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    return np.min(np.linalg.norm(points[:, None] - closest, axis=2), axis=1)


def test_resample_keeps_mask_and_budget():
    rng = np.random.default_rng(1)
    for _ in range(5):
        n = int(rng.integers(200, 600))
        ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
        rad = 0.3 + 0.05 * np.sin(ang * rng.integers(2, 7)) + rng.normal(0, 0.003, n)
        poly = np.stack([0.5 + rad * np.sin(ang), 0.5 + rad * np.cos(ang)], 1).astype(np.float32)
        points, part = polygons.resample(poly, np.zeros(n, np.int32), 128)
        points = points.numpy()
        assert len(points) <= 128 and np.all(part.numpy() == 0)
        np.testing.assert_allclose(points[0], poly[0])  # starts at the first vertex
        assert contour_distance(points, poly).max() < 1e-5  # on the original contour
        steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
        assert steps.max() < 2.0 * np.median(steps)  # evenly spaced
        assert iou(coco_mask([points], 256, 256), coco_mask([poly], 256, 256)) >= 0.95


def test_resample_multi_part_shares_budget_and_keeps_small_parts():
    rng = np.random.default_rng(2)
    big = star(rng, 300, (0.5, 0.5), 0.3)
    small = np.array([[0.05, 0.05], [0.05, 0.1], [0.1, 0.08]], np.float32)
    medium = star(rng, 60, (0.85, 0.85), 0.1)
    points, part = flatten([big, small, medium])
    out, out_part = (x.numpy() for x in polygons.resample(points, part, 64))
    counts = np.bincount(out_part)
    assert len(counts) == 3 and counts.sum() + 2 <= 64 and counts.min() >= 3
    np.testing.assert_allclose(out[out_part == 1], small)  # within its share: unchanged
    assert counts[0] > counts[2]  # longer contour, more points


def test_resample_drops_smallest_parts_when_too_many_and_passes_fitting_polygons():
    rng = np.random.default_rng(3)
    parts = [star(rng, 3, rng.uniform(0.2, 0.8, 2), r) for r in np.linspace(0.01, 0.1, 10)]
    points, part = flatten(parts)
    out, out_part = (x.numpy() for x in polygons.resample(points, part, 16))
    assert out_part.max() + 1 == 4 and len(out) + 3 <= 16  # (16 + 1) // 4 parts kept
    kept = np.concatenate(parts[-4:])  # the 4 largest, in their original order
    np.testing.assert_allclose(out, kept)
    same, same_part = polygons.resample(points, np.where(part == 0, 5, part), 64)
    np.testing.assert_array_equal(same.numpy(), points)
    assert same_part.numpy().max() == 9


def test_average_masks():
    masks = np.zeros((8, 2, 2), bool)
    masks[:4, 0, 0] = True
    masks[:3, 1, 1] = True
    np.testing.assert_array_equal(polygons.average_masks(masks).numpy(), [[True, False], [False, False]])
    soft = np.array([[0.2, 0.9], [0.6, 0.7]], np.float32)[:, None]  # [N=2, 1, 2]
    np.testing.assert_array_equal(polygons.average_masks(soft).numpy(), [[False, True]])
