"""Polygons in TensorFlow graph ops: even resampling along the contour and rasterization.

A polygon is `points` float [P, 2] as (y, x) plus `part` int [P]: vertices of one
part are consecutive and share a part index; a negative part marks padding rows.
Parts are closed contours and a mask is the union of the parts (as COCO does).
Everything here runs eagerly, in `tf.data.map`, under `tf.function` and inside a
SavedModel (no numpy, no py_function).
"""
import tensorflow as tf

MIN_PART_POINTS = 3


def part_index(part):
    """Part labels [P] (consecutive runs) -> dense run index 0..K-1 [P] and K."""
    part = tf.reshape(tf.cast(part, tf.int32), [-1])
    new_run = tf.concat([tf.ones([tf.minimum(tf.size(part), 1)], tf.bool), part[1:] != part[:-1]], 0)
    index = tf.cumsum(tf.cast(new_run, tf.int32)) - 1
    return index, tf.reduce_sum(tf.cast(new_run, tf.int32))


def drop_padding(points, part):
    """Removes rows whose part index is negative."""
    points = tf.reshape(tf.cast(points, tf.float32), [-1, 2])
    part = tf.reshape(tf.cast(part, tf.int32), [-1])
    keep = part >= 0
    return tf.boolean_mask(points, keep), tf.boolean_mask(part, keep)


def _contour_geometry(points, index, num_parts):
    """Per vertex: index of the next vertex on its (closed) part and the edge length."""
    counts = tf.math.unsorted_segment_sum(tf.ones_like(index), index, num_parts)
    starts = tf.cumsum(counts, exclusive=True)
    pos = tf.range(tf.size(index))
    last = pos == tf.gather(starts + counts - 1, index)
    nxt = tf.where(last, tf.gather(starts, index), pos + 1)
    length = tf.norm(tf.gather(points, nxt) - points, axis=1)
    return counts, starts, nxt, length


def resample(points, part, max_pairs: int):
    """Fits a polygon into `max_pairs` (y, x) pairs counting one separator pair between parts.

    A polygon that already fits is returned unchanged. Otherwise the longest parts
    that can keep >= 3 points are kept, every part gets a share of the point budget
    proportional to its perimeter (at least 3), and a part with more vertices than
    its share is resampled at evenly spaced arc lengths along its closed contour
    (starting at its first vertex); parts within their share keep their vertices.
    Returns (points [Q, 2], part [Q]) with dense part indices 0..K'-1.
    """
    points, part = drop_padding(points, part)
    index, num_parts = part_index(part)
    fits = tf.size(index) + tf.maximum(num_parts - 1, 0) <= max_pairs
    return tf.cond(fits, lambda: (points, index), lambda: _resample(points, index, num_parts, max_pairs))


def _resample(points, index, num_parts, max_pairs):
    _, _, _, length = _contour_geometry(points, index, num_parts)
    perimeter = tf.math.unsorted_segment_sum(length, index, num_parts)
    # Keep the longest parts that can each hold MIN_PART_POINTS plus a separator.
    max_parts = (max_pairs + 1) // (MIN_PART_POINTS + 1)
    kept = tf.minimum(num_parts, max_parts)
    rank = tf.argsort(tf.argsort(-perimeter, stable=True), stable=True)
    keep_part = rank < kept
    keep_vertex = tf.gather(keep_part, index)
    points = tf.boolean_mask(points, keep_vertex)
    new_id_of_old = tf.cumsum(tf.cast(keep_part, tf.int32), exclusive=True)
    index = tf.gather(new_id_of_old, tf.boolean_mask(index, keep_vertex))
    counts, starts, nxt, length = _contour_geometry(points, index, kept)
    perimeter = tf.math.unsorted_segment_sum(length, index, kept)

    budget = max_pairs - (kept - 1)
    spare = tf.cast(budget - MIN_PART_POINTS * kept, tf.float32)
    share = MIN_PART_POINTS + tf.cast(
        tf.floor(spare * perimeter / tf.maximum(tf.reduce_sum(perimeter), 1e-12)), tf.int32)
    new_counts = tf.minimum(counts, share)
    verbatim = new_counts >= counts

    total = tf.reduce_sum(new_counts)
    out_part = tf.repeat(tf.range(kept), new_counts)
    out_pos = tf.range(total) - tf.gather(tf.cumsum(new_counts, exclusive=True), out_part)
    part_start = tf.gather(starts, out_part)
    # Verbatim parts: copy vertex out_pos. Resampled parts: walk the contour.
    arc_start = tf.cumsum(length, exclusive=True)
    part_arc = tf.gather(arc_start, part_start)
    target = part_arc + tf.cast(out_pos, tf.float32) * tf.gather(perimeter, out_part) / tf.cast(
        tf.gather(new_counts, out_part), tf.float32)
    seg = tf.searchsorted(arc_start, target, side="right") - 1
    seg = tf.clip_by_value(seg, part_start, part_start + tf.gather(counts, out_part) - 1)
    t = tf.math.divide_no_nan(target - tf.gather(arc_start, seg), tf.gather(length, seg))
    p0 = tf.gather(points, seg)
    p1 = tf.gather(points, tf.gather(nxt, seg))
    walked = p0 + tf.clip_by_value(t, 0.0, 1.0)[:, tf.newaxis] * (p1 - p0)
    copied = tf.gather(points, part_start + out_pos)
    out = tf.where(tf.gather(verbatim, out_part)[:, tf.newaxis], copied, walked)
    return out, out_part


def rasterize(points, part, height: int, width: int):
    """Polygon (canvas-normalized (y, x), part [P], negative = padding) -> bool mask [H, W].

    A pixel is inside when its centre is inside a part by the even-odd rule, and the
    mask is the union of the parts. Scanline form: per row, the x crossings of each
    part's edges are sorted, and a pixel's crossing count to its left decides.
    """
    points, part = drop_padding(points, part)
    index, num_parts = part_index(part)
    num_parts = tf.maximum(num_parts, 1)
    _, _, nxt, _ = _contour_geometry(points, index, num_parts)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    p0 = points * tf.stack([h, w])
    p1 = tf.gather(p0, nxt)
    y0, x0, y1, x1 = p0[:, 0], p0[:, 1], p1[:, 0], p1[:, 1]
    yc = tf.range(h)[:, tf.newaxis] + 0.5  # [H, 1] pixel-centre rows
    crosses = (y0 <= yc) != (y1 <= yc)  # [H, E]
    x_cross = x0 + (yc - y0) * tf.math.divide_no_nan(x1 - x0, y1 - y0)
    band = 4.0 * w + 4.0  # parts live in disjoint x bands
    x_cross = tf.clip_by_value(x_cross, -w, 2.0 * w)
    key = x_cross + tf.cast(index, tf.float32) * band
    key = tf.sort(tf.where(crosses, key, tf.float32.max), axis=1)  # [H, E]
    xc = tf.range(w) + 0.5
    offsets = tf.cast(tf.range(num_parts), tf.float32) * band
    probes = tf.reshape(offsets[:, tf.newaxis] + xc[tf.newaxis, :], [1, -1])  # [1, K*W]
    left = tf.searchsorted(key, tf.tile(probes, [height, 1]), side="left")
    base = tf.searchsorted(key, tf.tile((offsets - 2.0 * w)[tf.newaxis], [height, 1]))
    count = tf.reshape(left, [height, num_parts, width]) - base[:, :, tf.newaxis]
    inside = tf.reduce_any(count % 2 == 1, axis=1)
    has_points = tf.size(points) > 0
    return inside & has_points


def average_masks(masks, threshold: float = 0.5):
    """Mean of N sampled masks [N, ...] (bool or float) thresholded: bool [...]."""
    masks = tf.cast(masks, tf.float32)
    return tf.reduce_mean(masks, axis=0) >= threshold
