"""Hand-made COCO-format directories for ingestion tests (bad-input cases).

`make_valid(root)` writes a small valid dataset (4 images, 3 categories incl. a
person with keypoints, crowd RLE, captions); tests corrupt one thing and check
that exactly that record is reported and everything else is still written.
"""
import io
import json
import os

from PIL import Image

SIZE = (48, 64)  # height, width
PERSON_KEYPOINTS = [f"kp{i}" for i in range(17)]


def image_bytes(height=SIZE[0], width=SIZE[1], mode="RGB", fmt="JPEG", orientation=None, seed=0):
    """A small image with a gradient (so orientation changes are visible)."""
    image = Image.new("RGB", (width, height))
    image.putdata([((x * 4 + seed) % 256, (y * 5) % 256, (x + y) % 256)
                   for y in range(height) for x in range(width)])
    if mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    kwargs = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _keypoints(x, y):
    out = []
    for i in range(17):
        out += [x + 1 + (i % 5), y + 1 + (i // 5), 2 if i % 3 else 1]
    return out


def make_valid(root, suffix="train", num_images=4):
    """Writes images + annotations; returns the three JSON docs (mutable, re-write with `write`)."""
    image_dir = os.path.join(root, "images", suffix)
    os.makedirs(image_dir, exist_ok=True)
    images, anns, caps = [], [], []
    categories = [{"id": 1, "name": "person", "supercategory": "person",
                   "keypoints": PERSON_KEYPOINTS, "skeleton": [[1, 2]]},
                  {"id": 3, "name": "car", "supercategory": "vehicle"},
                  {"id": 7, "name": "kite", "supercategory": "outdoor"}]
    for i in range(num_images):
        image_id = 100 + i
        name = f"{image_id:06d}.jpg"
        with open(os.path.join(image_dir, name), "wb") as f:
            f.write(image_bytes(seed=i))
        images.append({"id": image_id, "file_name": name, "height": SIZE[0], "width": SIZE[1]})
        base = 1000 + 10 * i
        anns.append({"id": base, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                     "bbox": [4.0, 6.0, 20.0, 30.0], "area": 500.0,
                     "segmentation": [[4, 6, 24, 6, 24, 36, 4, 36]], "keypoints": _keypoints(4, 6),
                     "num_keypoints": 17})
        anns.append({"id": base + 1, "image_id": image_id, "category_id": 3, "iscrowd": 0,
                     "bbox": [30.0, 10.0, 16.0, 12.0], "area": 150.0,
                     "segmentation": [[30, 10, 46, 10, 46, 22], [31, 12, 40, 12, 40, 20, 33, 21]]})
        anns.append({"id": base + 2, "image_id": image_id, "category_id": 7, "iscrowd": 1,
                     "bbox": [0.0, 40.0, 10.0, 8.0], "area": 80.0,
                     "segmentation": {"size": [SIZE[0], SIZE[1]],
                                      "counts": [40, 8, 40, 8] + [40, 8] * 8 + [SIZE[0] * SIZE[1] - 480]}})
        for j, text in enumerate(["a person next to a car", "a red car and a kite", " kite in the sky "]):
            caps.append({"id": 5000 + 10 * i + j, "image_id": image_id, "caption": text})
    instances = json.loads(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    for a in instances["annotations"]:
        a.pop("keypoints", None)
        a.pop("num_keypoints", None)
    keypoints = {"images": images, "annotations": [a for a in anns if a["category_id"] == 1],
                 "categories": [categories[0]]}
    captions = {"images": images, "annotations": caps}
    docs = json.loads(json.dumps({"instances": instances, "person_keypoints": keypoints,
                                  "captions": captions}))
    write(root, docs, suffix)
    return docs


def write(root, docs, suffix="train"):
    """(Re)writes the annotation JSONs of `docs` ({kind: doc}) for one split suffix."""
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    for kind, doc in docs.items():
        with open(os.path.join(root, "annotations", f"{kind}_{suffix}.json"), "w") as f:
            json.dump(doc, f)
