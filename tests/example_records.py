"""Hand-drawn COCO-style records for the data-pipeline tests (pure colours, known truth).

Each image (black background) holds a red triangle, a green quadrilateral, a blue
person rectangle carrying keypoint dots (left keypoints magenta, right cyan) and a
small crowd object. Pixels of an object: red R > .5 & B < .5, green G > .5 & B < .5,
person B > .5. Records follow data/coco.py's per-image layout and are encoded by
data/features.py, the same path ingestion uses.
"""
import io

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from data import features

NUM_KEYPOINTS = 17
LEFT, RIGHT = (5, 9, 15), (6, 10, 16)  # shoulders, wrists, ankles (COCO order)
COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "person": (0, 0, 255),
          "left": (255, 0, 255), "right": (0, 255, 255)}
DOT = 3  # keypoint dots are 2 DOT pixels wide
SUPERSAMPLE = 4


def object_masks(image):
    """float image [H, W, 3] in [0, 1] -> {name: bool mask} by colour."""
    r, g, b = image[..., 0] > 0.5, image[..., 1] > 0.5, image[..., 2] > 0.5
    return {"red": r & ~b, "green": g & ~b, "person": b}


def _polygon_object(ann_id, category, xy):
    xs, ys = xy[0::2], xy[1::2]
    x0, y0 = min(xs), min(ys)
    w, h = max(xs) - x0, max(ys) - y0
    return {"id": ann_id, "category_id": category, "bbox": [x0, y0, w, h], "area": float(w * h),
            "iscrowd": 0, "polygons": [list(map(float, xy))], "rle": None, "keypoints": None}


def make_record(image_id, seed, height=120, width=160):
    """One record + its PNG bytes; object placement varies with `seed`."""
    rng = np.random.default_rng(seed)
    # Drawn 4x larger and box-filtered down, so a pixel is coloured when over half of it
    # lies inside the continuous polygon (COCO's coordinate convention).
    img = Image.new("RGB", (SUPERSAMPLE * width, SUPERSAMPLE * height))
    draw = ImageDraw.Draw(img)
    up = lambda xy: [SUPERSAMPLE * v for v in xy]  # noqa: E731
    third = width / 3.0
    j = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    tri = [j(4, 10), j(70, 100), j(0.5 * third, third - 6), j(10, 30), j(third - 8, third - 2), j(90, 112)]
    quad = [j(third + 4, third + 10), j(20, 35), j(2 * third - 10, 2 * third - 4), j(15, 30),
            j(2 * third - 12, 2 * third - 4), j(80, 100), j(third + 6, third + 12), j(85, 105)]
    px0, py0 = j(2 * third + 4, 2 * third + 8), j(8, 20)
    px1, py1 = j(width - 8, width - 4), j(height - 20, height - 8)
    person = [px0, py0, px1, py0, px1, py1, px0, py1]
    for name, xy in (("red", tri), ("green", quad), ("person", person)):
        draw.polygon(list(zip(up(xy)[0::2], up(xy)[1::2])), fill=COLORS[name])
    keypoints = [0.0] * (3 * NUM_KEYPOINTS)
    cx, w = (px0 + px1) / 2.0, (px1 - px0)
    for row, (left, right) in enumerate(zip(LEFT, RIGHT)):
        y = py0 + (row + 1) * (py1 - py0) / 4.0
        # The person faces the camera: their left side is on the image's right.
        for index, x, colour in ((left, cx + 0.25 * w, "left"), (right, cx - 0.25 * w, "right")):
            keypoints[3 * index:3 * index + 3] = [x, y, 2.0]
            draw.rectangle(up([x - DOT, y - DOT, x + DOT, y + DOT]), fill=COLORS[colour])
    objects = [_polygon_object(10 * image_id + 1, 2, tri), _polygon_object(10 * image_id + 2, 3, quad),
               dict(_polygon_object(10 * image_id + 3, 1, person), keypoints=keypoints)]
    objects.append({"id": 10 * image_id + 4, "category_id": 2, "bbox": [2.0, 2.0, 8.0, 6.0], "area": 48.0,
                    "iscrowd": 1, "polygons": [], "rle": {"size": [height, width], "counts": "0"},
                    "keypoints": None})
    captions = [{"id": 1, "text": "a red triangle", "ids": [5, 6, 7]},
                {"id": 2, "text": "shapes and a person", "ids": [8, 9, 10, 11]}]
    record = {"image_id": image_id, "file_name": f"{image_id}.png", "height": height, "width": width,
              "objects": objects, "captions": captions, "source_file": "test"}
    buf = io.BytesIO()
    img.resize((width, height), Image.BOX).save(buf, "PNG")
    return record, buf.getvalue()


def serialized(record, png):
    return features.encode_example(record, png, "png", NUM_KEYPOINTS).SerializeToString()


def write_shards(directory, num_images, num_shards=2, first_id=1):
    """Writes gzipped TFRecord shards like ingestion's Split-* dirs; returns their paths."""
    paths = [f"{directory}/data_tfrecord-{i:05d}-of-{num_shards:05d}.gz" for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p, options="GZIP") for p in paths]
    for i in range(num_images):
        writers[i % num_shards].write(serialized(*make_record(first_id + i, seed=first_id + i)))
    for w in writers:
        w.close()
    return paths
