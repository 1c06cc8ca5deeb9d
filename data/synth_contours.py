"""Binary mask -> COCO polygons and RLE, with numpy only.

The synthetic generator draws every object into a pixel mask first and derives
its annotation from the pixels that stay visible, so annotations are true to
the image by construction. This module turns such a mask into COCO
segmentation: polygons (for normal objects) or uncompressed RLE (for crowds).

Coordinates follow COCO: pixel (row r, column c) covers x in [c, c+1],
y in [r, r+1]; pycocotools fills a pixel when its centre lies inside a polygon.
Boundaries are traced along pixel edges and then placed on edge midpoints, which
keeps every boundary pixel centre strictly on the correct side; a light
Douglas-Peucker pass then drops near-collinear points.
"""
import numpy as np

SMALL_AREA = 300  # parts smaller than this (pixels) are simplified more gently
# Edge directions: east, south, west, north (image y points down). Turning
# right means (d + 1) % 4.
_STEPS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def _boundary_edges(mask):
    """Directed unit edges between mask and non-mask pixels, mask on the right.

    Returns int arrays (x0, y0, direction) of every edge's start corner.
    Outer boundaries run clockwise on screen, holes counter-clockwise.
    """
    m = np.pad(mask.astype(bool), 1)
    inner = m[1:-1, 1:-1]
    xs, ys, ds = [], [], []
    # (neighbour slice, start corner offset (dx, dy), direction)
    sides = (
        (m[:-2, 1:-1], (0, 0), 0),  # empty above: top edge going east
        (m[1:-1, 2:], (1, 0), 1),  # empty right: right edge going south
        (m[2:, 1:-1], (1, 1), 2),  # empty below: bottom edge going west
        (m[1:-1, :-2], (0, 1), 3),  # empty left: left edge going north
    )
    for neighbour, (dx, dy), d in sides:
        r, c = np.nonzero(inner & ~neighbour)
        xs.append(c + dx)
        ys.append(r + dy)
        ds.append(np.full(r.shape, d))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ds)


def trace_loops(mask):
    """Closed boundary loops of a mask as lists of corner points (x, y).

    Diagonal-only contacts are split (4-connected foreground), so each loop is a
    simple polygon. Returns (loops, signed_areas); positive area = outer
    boundary, negative = hole.
    """
    xs, ys, ds = _boundary_edges(mask)
    width = mask.shape[1] + 1
    starts = {}
    for i, key in enumerate((ys * width + xs).tolist()):
        starts.setdefault(key, []).append(i)
    used = np.zeros(len(xs), bool)
    dirs = ds.tolist()
    loops, areas = [], []
    for first in range(len(xs)):
        if used[first]:
            continue
        loop = []
        edge = first
        while not used[edge]:
            used[edge] = True
            x, y, d = int(xs[edge]), int(ys[edge]), dirs[edge]
            loop.append((x, y))
            nx, ny = x + _STEPS[d][0], y + _STEPS[d][1]
            options = [e for e in starts[ny * width + nx] if not used[e] or e == first]
            if len(options) > 1:  # pinch corner: turn right, stay on this pixel
                options = [e for e in options if dirs[e] == (d + 1) % 4] or options
            if not options:
                break
            edge = options[0]
        pts = np.asarray(loop, np.float64)
        nxt = np.roll(pts, -1, axis=0)
        areas.append(0.5 * float(np.sum(pts[:, 0] * nxt[:, 1] - nxt[:, 0] * pts[:, 1])))
        loops.append(pts)
    return loops, areas


def has_holes(mask):
    """True when some background region is enclosed by the mask."""
    _, areas = trace_loops(mask)
    return any(a < 0 for a in areas)


def _douglas_peucker(points, eps):
    """Open-chain Douglas-Peucker; keeps both end points."""
    keep = np.zeros(len(points), bool)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        a, b = stack.pop()
        if b <= a + 1:
            continue
        seg = points[b] - points[a]
        rel = points[a + 1:b] - points[a]
        norm = np.hypot(seg[0], seg[1])
        if norm == 0:
            dist = np.hypot(rel[:, 0], rel[:, 1])
        else:
            dist = np.abs(seg[0] * rel[:, 1] - seg[1] * rel[:, 0]) / norm
        k = int(np.argmax(dist))
        if dist[k] > eps:
            keep[a + 1 + k] = True
            stack.extend([(a, a + 1 + k), (a + 1 + k, b)])
    return points[keep]


def simplify_loop(corners, eps=0.45):
    """Corner loop -> edge-midpoint loop, simplified; at least 3 points."""
    mids = 0.5 * (corners + np.roll(corners, -1, axis=0))
    if len(mids) <= 4:
        return mids
    far = int(np.argmax(np.hypot(*(mids - mids[0]).T)))
    first = _douglas_peucker(mids[: far + 1], eps)
    second = _douglas_peucker(np.concatenate([mids[far:], mids[:1]]), eps)
    out = np.concatenate([first[:-1], second[:-1]])
    return out if len(out) >= 3 else mids


def mask_to_polygons(mask, eps=None):
    """COCO polygon list ([[x0, y0, x1, y1, ...], ...]) of a hole-free mask.

    `eps` is the Douglas-Peucker tolerance in pixels; by default it grows with
    the part's thickness (2 * area / perimeter) from 0.6 (0.45 for parts under
    SMALL_AREA pixels) to 0.8, which keeps IoU with the mask >= 0.9 while
    keeping big shapes to few points. Raises ValueError if the mask is empty or
    has holes (a COCO polygon list is a union of parts and cannot express holes).
    """
    loops, areas = trace_loops(mask)
    if not loops:
        raise ValueError("mask_to_polygons: empty mask")
    if any(a < 0 for a in areas):
        raise ValueError("mask_to_polygons: mask has holes; polygons cannot represent them")
    polygons = []
    for corners, area in zip(loops, areas):
        if eps is None:
            floor = 0.45 if area < SMALL_AREA else 0.6
            tol = float(np.clip(0.1 * 2 * area / len(corners), floor, 0.8))
        else:
            tol = eps
        pts = simplify_loop(corners, tol)
        polygons.append([round(float(v), 2) for v in pts.reshape(-1)])
    return polygons


def mask_to_rle(mask):
    """Uncompressed COCO RLE {"counts": [...], "size": [h, w]} (column-major runs)."""
    flat = np.asarray(mask, bool).reshape(-1, order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts  # RLE starts with a run of zeros
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def mask_bbox(mask):
    """Tight COCO bbox [x, y, w, h] of a non-empty mask, in pixels."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        raise ValueError("mask_bbox: empty mask")
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]
