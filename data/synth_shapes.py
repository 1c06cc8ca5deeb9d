"""Categories, colours and shape outlines of the synthetic COCO-format dataset.

Category ids are COCO-style: non-contiguous, `person` is 1. Each shape class
has its own outline and two colours of its own, so a tiny model can tell classes
apart by shape and by colour; sizes and colours still vary within a class.
"""
import numpy as np

PERSON_ID = 1

CATEGORIES = (
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "circle", "supercategory": "shape"},
    {"id": 5, "name": "square", "supercategory": "shape"},
    {"id": 8, "name": "triangle", "supercategory": "shape"},
    {"id": 11, "name": "star", "supercategory": "shape"},
    {"id": 14, "name": "hexagon", "supercategory": "shape"},
    {"id": 17, "name": "cross", "supercategory": "shape"},
)
CATEGORY_NAMES = {c["id"]: c["name"] for c in CATEGORIES}
SHAPE_IDS = tuple(c["id"] for c in CATEGORIES if c["id"] != PERSON_ID)
PLURALS = {"person": "people", "cross": "crosses"}

COLOURS = {
    "black": (25, 25, 25),
    "brown": (125, 75, 35),
    "red": (215, 35, 35),
    "pink": (245, 130, 190),
    "blue": (35, 75, 215),
    "white": (245, 245, 240),
    "green": (35, 150, 55),
    "cyan": (40, 200, 215),
    "yellow": (240, 215, 40),
    "orange": (245, 135, 20),
    "purple": (125, 50, 175),
    "teal": (0, 120, 120),
    "magenta": (220, 40, 200),
    "maroon": (120, 20, 40),
}
CLASS_COLOURS = {
    1: ("black", "brown"),
    3: ("red", "pink"),
    5: ("blue", "white"),
    8: ("green", "cyan"),
    11: ("yellow", "orange"),
    14: ("purple", "teal"),
    17: ("magenta", "maroon"),
}


def plural(name):
    return PLURALS.get(name, name + "s")


def _regular(n, radius, angle, phase=0.0):
    """Vertices of a regular n-gon of circumradius `radius` around the origin."""
    t = angle + phase + np.arange(n) * 2 * np.pi / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def shape_outline(category_id, cx, cy, radius, angle):
    """Polygon (N x 2, x/y in COCO pixel coordinates) of one shape.

    `radius` is half the shape's extent; `angle` its rotation in radians
    (squares are kept within +-20 degrees of upright so they stay squares).
    """
    if category_id == 3:
        pts = _regular(48, radius, 0.0)
    elif category_id == 5:
        pts = _regular(4, radius, np.clip(angle, -0.35, 0.35), np.pi / 4)
    elif category_id == 8:
        pts = _regular(3, radius, angle, -np.pi / 2)
    elif category_id == 11:
        outer = _regular(5, radius, angle, -np.pi / 2)
        inner = _regular(5, 0.45 * radius, angle, -np.pi / 2 + np.pi / 5)
        pts = np.stack([outer, inner], axis=1).reshape(-1, 2)
    elif category_id == 14:
        pts = _regular(6, radius, angle)
    elif category_id == 17:
        a, b = 0.3 * radius, radius  # half arm width, arm reach
        base = np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a),
                         (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)])
        c, s = np.cos(angle), np.sin(angle)
        pts = base @ np.array([[c, s], [-s, c]])
    else:
        raise ValueError(f"shape_outline: unknown shape category_id {category_id}")
    return pts + np.array([cx, cy])
