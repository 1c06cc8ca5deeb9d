"""Synthetic COCO-format dataset: the project's embedded default data.

`generate(out_dir, num_train, num_val, image_size, seed)` writes

    images/{train,val}/<image_id:012d>.jpg
    annotations/instances_{train,val}.json        boxes, polygons / crowd RLE, areas
    annotations/person_keypoints_{train,val}.json persons with COCO's 17 keypoints
    annotations/captions_{train,val}.json         3-5 captions per image

laid out like COCO 2017, so everything downstream reads it exactly as it would
read real COCO. Scenes are drawn pixel mask first and annotated from the
pixels that stay visible (see data/synth_scene.py and docs/SYNTH.md). Every
image's scene depends only on (seed, split, index), so output is reproducible.
"""
import json
import os

import numpy as np
from PIL import Image

from data.synth_captions import captions_for
from data.synth_contours import mask_bbox, mask_to_polygons, mask_to_rle
from data.synth_person import KEYPOINT_NAMES, SKELETON
from data.synth_scene import sample_scene
from data.synth_shapes import CATEGORIES, PERSON_ID

SPLITS = ("train", "val")
CROWD_EVERY = 8  # image index i gets a crowd when i % CROWD_EVERY == CROWD_PHASE
CROWD_PHASE = 3
JPEG_QUALITY = 95
MIN_IMAGE_SIZE = 64
MAX_IMAGE_SIZE = 4096


def scene_for(seed, split, index, image_size):
    """The scene of image `index` of `split` (what generate() draws and annotates)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index, 0])
    return sample_scene(rng, image_size, with_crowd=index % CROWD_EVERY == CROWD_PHASE)


def captions_of(scene, seed, split, index):
    rng = np.random.default_rng([seed, SPLITS.index(split), index, 1])
    return captions_for(scene, rng)


def object_annotation(obj, ann_id, image_id):
    """COCO instance annotation of one drawn object (from its visible pixels)."""
    if obj.iscrowd:
        segmentation = mask_to_rle(obj.visible)
    else:
        segmentation = mask_to_polygons(obj.visible)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": obj.category_id,
        "segmentation": segmentation,
        "area": float(obj.visible.sum()),
        "bbox": mask_bbox(obj.visible),
        "iscrowd": int(obj.iscrowd),
    }


def keypoint_annotation(instance, obj):
    """The instance annotation plus COCO `keypoints` (flat x, y, v) and `num_keypoints`."""
    kps = []
    for x, y, v in obj.keypoints:
        kps += [float(x), float(y), int(v)]
    return dict(instance, keypoints=kps, num_keypoints=int(np.sum(obj.keypoints[:, 2] > 0)))


def _check_args(num_train, num_val, image_size, seed):
    for name, value in (("num_train", num_train), ("num_val", num_val), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"synth.generate: {name} must be a non-negative integer. Received: {value!r}")
    if (isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer))
            or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
        raise ValueError(f"synth.generate: image_size must be an integer in "
                         f"[{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]. Received: {image_size!r}")


def _header(seed, split):
    return {
        "info": {"description": f"pix2seq-tfx synthetic COCO-format data ({split}, seed {seed})",
                 "version": "1.0", "contributor": "pix2seq synth"},
        "licenses": [],
    }


def _write_split(out_dir, split, count, first_id, image_size, seed):
    image_dir = os.path.join(out_dir, "images", split)
    os.makedirs(image_dir, exist_ok=True)
    images, instances, keypoints, captions = [], [], [], []
    ann_id = cap_id = 0
    for index in range(count):
        image_id = first_id + index
        scene = scene_for(seed, split, index, image_size)
        file_name = f"{image_id:012d}.jpg"
        Image.fromarray(scene.image).save(os.path.join(image_dir, file_name),
                                          quality=JPEG_QUALITY, subsampling=0)
        images.append({"id": image_id, "file_name": file_name,
                       "height": scene.height, "width": scene.width})
        for obj in scene.objects:
            ann_id += 1
            ann = object_annotation(obj, ann_id, image_id)
            instances.append(ann)
            if obj.category_id == PERSON_ID and not obj.iscrowd:
                keypoints.append(keypoint_annotation(ann, obj))
        for text in captions_of(scene, seed, split, index):
            cap_id += 1
            captions.append({"id": cap_id, "image_id": image_id, "caption": text})
    person = dict(next(c for c in CATEGORIES if c["id"] == PERSON_ID),
                  keypoints=list(KEYPOINT_NAMES), skeleton=[list(p) for p in SKELETON])
    files = {
        "instances": dict(_header(seed, split), images=images, annotations=instances,
                          categories=[dict(c) for c in CATEGORIES]),
        "person_keypoints": dict(_header(seed, split), images=images, annotations=keypoints,
                                 categories=[person]),
        "captions": dict(_header(seed, split), images=images, annotations=captions),
    }
    ann_dir = os.path.join(out_dir, "annotations")
    os.makedirs(ann_dir, exist_ok=True)
    for kind, content in files.items():
        with open(os.path.join(ann_dir, f"{kind}_{split}.json"), "w") as f:
            json.dump(content, f, separators=(",", ":"))


def generate(out_dir: str, num_train: int, num_val: int, image_size: int = 256, seed: int = 0) -> None:
    """Writes the synthetic dataset under `out_dir` (created if missing).

    `image_size` is the longest image side; the other side follows one of the
    aspect ratios in data.synth_scene.ASPECTS. Image ids: train 1..num_train,
    val num_train+1..num_train+num_val (unique across splits, as in COCO).
    """
    _check_args(num_train, num_val, image_size, seed)
    _write_split(out_dir, "train", num_train, 1, image_size, seed)
    _write_split(out_dir, "val", num_val, num_train + 1, image_size, seed)
