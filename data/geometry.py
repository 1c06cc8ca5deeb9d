"""Graph ops that move boxes, polygons and keypoints with the image (core TF ops only).

Every geometric op of data/preprocess.py and data/augment.py moves the pixels with
tf.image and everything on them with one affine map: boxes through `clip_boxes` (after
the caller moved their corners), polygons and keypoints through `move_points`.
Coordinates are (y, x), normalized to the current image unless a function says so.

Why our own ops: until 2026-12 boxes moved through keras-cv 0.9 layers, driven by their
internal per-sample hooks with hand-built transform dicts; keras-cv has had no release
since 2024, and the ~25 lines below keep its box rule (`clip_boxes`) bit for bit.

Example layout: "One image, after parsing" in docs/CONTRACTS.md. Per-object fields
share the object axis N; polygon vertices are grouped by `polygon_instance` and
`polygon_part`, each part's vertices contiguous.
"""
import tensorflow as tf

OBJECT_KEYS = ("boxes", "classes", "is_crowd", "areas", "keypoints")
VERTEX_KEYS = ("polygon_points", "polygon_instance", "polygon_part")


def _part_segments(instance, part):
    """Contiguous segment id per vertex (a new segment wherever instance/part changes)."""
    key = tf.stack([instance, part], axis=1)
    changed = tf.reduce_any(key[1:] != key[:-1], axis=1)
    starts = tf.concat([tf.ones([tf.minimum(tf.size(instance), 1)], tf.bool), changed], 0)
    return tf.cumsum(tf.cast(starts, tf.int32)) - 1


def _clip_half_plane(points, seg, axis, bound, keep_greater):
    """One Sutherland-Hodgman pass of every closed part against one half-plane."""
    n = tf.shape(points)[0]
    idx = tf.range(n)
    num_segs = tf.maximum(tf.reduce_max(seg) + 1, 0)
    first = tf.math.unsorted_segment_min(idx, seg, num_segs)
    is_last = tf.concat([seg[1:] != seg[:-1], tf.ones([tf.minimum(n, 1)], tf.bool)], 0)
    nxt = tf.where(is_last, tf.gather(first, seg), idx + 1)
    cur_p, nxt_p = points, tf.gather(points, nxt)
    c, d = cur_p[:, axis], nxt_p[:, axis]
    inside_c = c >= bound if keep_greater else c <= bound
    inside_n = d >= bound if keep_greater else d <= bound
    denom = tf.where(tf.equal(d, c), tf.ones_like(c), d - c)
    t = tf.clip_by_value((bound - c) / denom, 0.0, 1.0)
    cross = cur_p + t[:, None] * (nxt_p - cur_p)
    # Edge (cur -> nxt) emits [crossing if it crosses] then [nxt if inside].
    candidates = tf.stack([cross, nxt_p], axis=1)  # [n, 2, 2]
    emit = tf.stack([tf.not_equal(inside_c, inside_n), inside_n], axis=1)  # [n, 2]
    new_points = tf.boolean_mask(candidates, emit)
    new_seg = tf.boolean_mask(tf.stack([seg, seg], axis=1), emit)
    return new_points, new_seg


def clip_polygons(points, instance, part, lo, hi):
    """Clips every polygon part to the rectangle [lo, hi] (each a (y, x) pair).

    Returns (points, instance, part) without parts left with fewer than 3 vertices;
    part indices are renumbered 0.. within each instance.
    """
    points = tf.convert_to_tensor(points, tf.float32)
    instance = tf.convert_to_tensor(instance, tf.int32)
    part = tf.convert_to_tensor(part, tf.int32)
    seg = _part_segments(instance, part)
    seg_instance = tf.math.unsorted_segment_max(instance, seg, tf.maximum(tf.reduce_max(seg) + 1, 0))
    for axis, bound, keep_greater in ((0, lo[0], True), (1, lo[1], True),
                                      (0, hi[0], False), (1, hi[1], False)):
        points, seg = _clip_half_plane(points, seg, axis, tf.cast(bound, tf.float32), keep_greater)
    counts = tf.math.bincount(seg, minlength=tf.size(seg_instance), dtype=tf.int32)
    keep = tf.gather(counts, seg) >= 3
    points, seg = tf.boolean_mask(points, keep), tf.boolean_mask(seg, keep)
    new_instance = tf.gather(seg_instance, seg)
    # Renumber parts: segment rank minus the first rank of its instance.
    seg_rank = _part_segments(new_instance, seg)
    first_of_instance = tf.math.unsorted_segment_min(
        seg_rank, new_instance, tf.maximum(tf.reduce_max(new_instance) + 1, 0))
    new_part = seg_rank - tf.gather(first_of_instance, new_instance)
    return points, new_instance, new_part


def move_points(example, scale, shift, flip=False):
    """Applies p' = p * scale - shift (then x' = 1 - x' when `flip`) to polygons and
    keypoints; polygons are clipped and keypoints outside [0, 1]^2 become (0, 0, 0)."""
    out = dict(example)
    scale = tf.cast(scale, tf.float32)
    shift = tf.cast(shift, tf.float32)

    def affine(yx):
        yx = yx * scale - shift
        if flip is not False:
            flipped = tf.stack([yx[..., 0], 1.0 - yx[..., 1]], axis=-1)
            yx = tf.where(tf.cast(flip, tf.bool), flipped, yx)
        return yx

    if "polygon_points" in example:
        pts, inst, part = clip_polygons(
            affine(example["polygon_points"]), example["polygon_instance"],
            example["polygon_part"], (0.0, 0.0), (1.0, 1.0))
        out["polygon_points"], out["polygon_instance"], out["polygon_part"] = pts, inst, part
    if "keypoints" in example:
        kp = example["keypoints"]
        yx = affine(kp[..., :2])
        v = kp[..., 2]
        inside = tf.reduce_all((yx >= 0.0) & (yx <= 1.0), axis=-1) & (v > 0)
        out["keypoints"] = tf.where(inside[..., None], tf.concat([yx, v[..., None]], -1),
                                    tf.zeros_like(kp))
    return out


def swap_keypoints(keypoints, flip_pairs, flip):
    """After a horizontal flip a left keypoint sits where the right one was: swap
    each (left, right) pair of the K axis when `flip` is true."""
    k = keypoints.shape[-2]
    if not flip_pairs or k is None:
        if flip_pairs and k is None:
            raise ValueError("swap_keypoints needs a static keypoint count; received shape "
                             f"{keypoints.shape}")
        return keypoints
    perm = list(range(k))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    swapped = tf.gather(keypoints, perm, axis=-2)
    return tf.where(tf.cast(flip, tf.bool), swapped, keypoints)


def clip_boxes(boxes, extent=1.0):
    """Clips yxyx boxes [N, 4] given in units of `extent` (1: normalized; S: pixels of an
    S x S canvas) to the image; returns (boxes, kept [N] bool).

    The rule keras-cv's `clip_to_image` applied (same float ops, so the same numbers):
    corners are divided by `extent`, clipped to [0, 1] and multiplied back; a box left
    with no positive height and width (or whose area underflows, or NaN) is lost: its
    row becomes -1 and `kept` is false."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    clipped = tf.clip_by_value(boxes / extent, 0.0, 1.0)
    height = clipped[..., 2] - clipped[..., 0]
    width = clipped[..., 3] - clipped[..., 1]
    area = tf.where((height > 0.0) & (width > 0.0), width * height, 0.0)
    kept = area > 0.0
    return tf.where(kept[..., None], clipped * extent, -1.0), kept


def flip_boxes(boxes, flip):
    """Mirrors normalized yxyx boxes left/right when `flip` (bool scalar) is true:
    x becomes 1 - x, so xmin and xmax trade places."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    flipped = tf.stack([boxes[..., 0], 1.0 - boxes[..., 3], boxes[..., 2], 1.0 - boxes[..., 1]], axis=-1)
    return tf.where(tf.cast(flip, tf.bool), flipped, boxes)


def keep_objects(example, keep):
    """Keeps the objects where `keep` [N] is true, with their polygon vertices;
    polygon_instance is renumbered to the new object order."""
    out = dict(example)
    keep = tf.convert_to_tensor(keep, tf.bool)
    for key in OBJECT_KEYS:
        if key in example:
            out[key] = tf.boolean_mask(example[key], keep)
    if "polygon_points" in example:
        inst = example["polygon_instance"]
        new_index = tf.cumsum(tf.cast(keep, tf.int32)) - 1
        vkeep = tf.gather(keep, inst)
        for key in VERTEX_KEYS:
            out[key] = tf.boolean_mask(example[key], vkeep)
        out["polygon_instance"] = tf.gather(new_index, out["polygon_instance"])
    return out


def settle_objects(before, moved, box_kept):
    """After a crop: objects whose polygon was clipped away are gone even when a corner
    of their box survived, and a polygon object's box becomes the tight box of its
    visible polygon (what COCO's box of the visible part is). `box_kept` [N]: the box
    survived the crop (`clip_boxes`)."""
    n = tf.shape(moved["boxes"])[0]
    if "polygon_points" not in moved:
        return keep_objects(moved, box_kept)
    had = tf.math.bincount(before["polygon_instance"], minlength=n, maxlength=n) > 0
    inst = moved["polygon_instance"]
    has = tf.math.bincount(inst, minlength=n, maxlength=n) > 0
    pts = moved["polygon_points"]
    lo = tf.math.unsorted_segment_min(pts, inst, n)
    hi = tf.math.unsorted_segment_max(pts, inst, n)
    out = dict(moved)
    out["boxes"] = tf.where(has[:, None], tf.concat([lo, hi], 1), moved["boxes"])
    return keep_objects(out, tf.cast(box_kept, tf.bool) & (has | ~had))


def select_object(example, index):
    """Reduces the example to the single object `index` (N = 1)."""
    n = tf.shape(example["boxes"])[0]
    return keep_objects(example, tf.equal(tf.range(n), index))
