"""The synthetic COCO-format dataset: files, COCO tooling, truth to pixels, captions, CLI."""
import contextlib
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data import synth
from data.synth_contours import has_holes, mask_to_polygons, mask_to_rle
from data.synth_shapes import CATEGORIES, COLOURS, PERSON_ID, plural

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLIT_SIZES = {"train": 12, "val": 6}  # conftest's synth_coco_dir (seed 0, size 256)
KINDS = ("instances", "person_keypoints", "captions")


def _load(root, kind, split):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(os.path.join(root, "annotations", f"{kind}_{split}.json"))


@pytest.fixture(scope="module")
def scenes():
    """The scenes generate() drew for conftest's dataset, keyed by (split, index)."""
    return {(split, i): synth.scene_for(0, split, i, 256)
            for split, n in SPLIT_SIZES.items() for i in range(n)}


def test_writes_coco_layout_with_varied_image_sizes(synth_coco_dir):
    shapes, ids = set(), set()
    for split, n in SPLIT_SIZES.items():
        coco = _load(synth_coco_dir, "instances", split)
        assert len(coco.imgs) == n
        assert sorted(os.listdir(os.path.join(synth_coco_dir, "images", split))) == sorted(
            img["file_name"] for img in coco.imgs.values())
        for img in coco.imgs.values():
            with Image.open(os.path.join(synth_coco_dir, "images", split, img["file_name"])) as im:
                assert im.format == "JPEG" and im.size == (img["width"], img["height"])
            assert max(img["width"], img["height"]) == 256
            shapes.add((img["width"], img["height"]))
            ids.add(img["id"])
        for kind in KINDS:
            other = _load(synth_coco_dir, kind, split)
            assert other.imgs == coco.imgs
    assert len(ids) == sum(SPLIT_SIZES.values())  # image ids unique across splits
    assert len(shapes) >= 3 and any(w != h for w, h in shapes)


def test_categories_are_coco_style(synth_coco_dir):
    coco = _load(synth_coco_dir, "instances", "train")
    cat_ids = sorted(coco.cats)
    assert len(cat_ids) >= 6 and coco.cats[1]["name"] == "person"
    assert cat_ids != list(range(1, len(cat_ids) + 1))  # non-contiguous, like COCO
    kp = _load(synth_coco_dir, "person_keypoints", "train")
    assert list(kp.cats) == [PERSON_ID]
    person = kp.cats[PERSON_ID]
    assert person["keypoints"][:3] == ["nose", "left_eye", "right_eye"] and len(person["keypoints"]) == 17
    assert len(person["skeleton"]) == 19
    assert all(1 <= i <= 17 for pair in person["skeleton"] for i in pair)


def test_classes_are_balanced(synth_coco_dir):
    counts = {c["id"]: 0 for c in CATEGORIES}
    for split in SPLIT_SIZES:
        for ann in _load(synth_coco_dir, "instances", split).anns.values():
            counts[ann["category_id"]] += 1
    assert min(counts.values()) >= 3, counts


def _predictions(coco, iou_type, shift=0.0):
    preds = []
    for ann in coco.anns.values():
        if ann["iscrowd"]:
            continue
        pred = {"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 1.0}
        if iou_type == "bbox":
            x, y, w, h = ann["bbox"]
            pred["bbox"] = [x + shift * w, y, w, h]
        elif iou_type == "segm":  # results carry RLE, as a model's output would
            moved = np.roll(coco.annToMask(ann), int(shift * ann["bbox"][2]), axis=1)
            pred["segmentation"] = mask_util.encode(np.asfortranarray(moved))
        else:
            kps = np.array(ann["keypoints"], float).reshape(-1, 3)
            kps[:, 0] += shift * ann["bbox"][2]
            pred["keypoints"] = kps.reshape(-1).tolist()
        preds.append(pred)
    return preds


def _average_precision(gt, preds, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(preds)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0]


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_ground_truth_fed_back_scores_ap_1(synth_coco_dir, iou_type):
    kind = "person_keypoints" if iou_type == "keypoints" else "instances"
    gt = _load(synth_coco_dir, kind, "train")
    assert _average_precision(gt, _predictions(gt, iou_type), iou_type) == pytest.approx(1.0)
    # The metric does see errors: shifted predictions score lower.
    assert _average_precision(gt, _predictions(gt, iou_type, shift=0.3), iou_type) < 0.9


def test_files_hold_exactly_the_drawn_scenes(synth_coco_dir, scenes):
    for (split, index), scene in scenes.items():
        img = _load(synth_coco_dir, "instances", split).dataset["images"][index]
        path = os.path.join(synth_coco_dir, "images", split, img["file_name"])
        buf = io.BytesIO()
        Image.fromarray(scene.image).save(buf, format="JPEG", quality=synth.JPEG_QUALITY, subsampling=0)
        with open(path, "rb") as f:
            assert f.read() == buf.getvalue()
        decoded = np.asarray(Image.open(path).convert("RGB"), np.float64)
        assert np.abs(decoded - scene.image).mean() < 3.0


def test_annotations_match_drawn_pixels(synth_coco_dir, scenes):
    worst_iou, crowds = 1.0, 0
    for split in SPLIT_SIZES:
        coco = _load(synth_coco_dir, "instances", split)
        for index, img in enumerate(coco.dataset["images"]):
            scene = scenes[(split, index)]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert len(anns) == len(scene.objects)
            for ann, obj in zip(anns, scene.objects):
                vis = obj.visible
                assert ann["category_id"] == obj.category_id and ann["iscrowd"] == obj.iscrowd
                # The visible pixels are painted in this object's own colours.
                colours = {tuple(rgb) for _, rgb in obj.layers}
                assert {tuple(p) for p in scene.image[vis]} <= colours
                rows, cols = np.nonzero(vis)
                assert ann["bbox"] == [cols.min(), rows.min(), cols.max() + 1 - cols.min(),
                                       rows.max() + 1 - rows.min()]
                assert ann["area"] == vis.sum()
                raster = coco.annToMask(ann).astype(bool)
                iou = (raster & vis).sum() / (raster | vis).sum()
                if obj.iscrowd:
                    crowds += 1
                    assert isinstance(ann["segmentation"]["counts"], list) and iou == 1.0
                else:
                    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
                    worst_iou = min(worst_iou, iou)
    assert worst_iou >= 0.9
    assert crowds >= 2  # train images 3 and 11 carry a crowd


def test_keypoints_lie_on_the_drawn_figure(synth_coco_dir, scenes):
    seen = {0: 0, 1: 0, 2: 0}
    for split in SPLIT_SIZES:
        kp = _load(synth_coco_dir, "person_keypoints", split)
        inst = _load(synth_coco_dir, "instances", split)
        for index, img in enumerate(kp.dataset["images"]):
            people = [o for o in scenes[(split, index)].objects if o.category_id == PERSON_ID]
            anns = kp.loadAnns(kp.getAnnIds(imgIds=img["id"]))
            assert len(anns) == len(people)
            for ann, obj in zip(anns, people):
                same = inst.anns[ann["id"]]
                assert {k: ann[k] for k in same} == same  # same object as in instances
                kps = np.array(ann["keypoints"]).reshape(17, 3)
                assert ann["num_keypoints"] == int((kps[:, 2] > 0).sum())
                for x, y, v in kps:
                    seen[int(v)] += 1
                    if v == 0:
                        assert x == 0 and y == 0
                        continue
                    r, c = int(y), int(x)
                    assert obj.full[r, c]  # on the figure as drawn
                    assert obj.visible[r, c] == (v == 2)  # v=1: covered by a later object
    assert seen[2] > 50 and seen[0] > 0


def test_keypoint_occlusion_marks_v1():
    """A scene where a shape covers part of a person: covered keypoints are v=1."""
    for index in range(200):
        scene = synth.scene_for(3, "train", index, 192)
        for obj in scene.objects:
            if obj.keypoints is not None and (obj.keypoints[:, 2] == 1).any():
                for x, y, v in obj.keypoints[obj.keypoints[:, 2] == 1]:
                    assert obj.full[int(y), int(x)] and not obj.visible[int(y), int(x)]
                return
    pytest.fail("no occluded keypoint in 200 scenes")


CLASS_WORDS = {c["name"]: re.compile(rf"\b({c['name']}|{plural(c['name'])})\b") for c in CATEGORIES}
COLOUR_WORDS = {name: re.compile(rf"\b{name}\b") for name in COLOURS}
NUMBER = {w: i for i, w in enumerate(("no", "one", "two", "three", "four", "five", "six", "seven"))}


def test_captions_describe_the_scene(synth_coco_dir, scenes):
    for split in SPLIT_SIZES:
        caps = _load(synth_coco_dir, "captions", split)
        for index, img in enumerate(caps.dataset["images"]):
            scene = scenes[(split, index)]
            texts = [a["caption"] for a in caps.loadAnns(caps.getAnnIds(imgIds=img["id"]))]
            assert len(set(texts)) == len(texts) >= 3
            present = {obj.category_id for obj in scene.objects}
            names = {c["name"] for c in CATEGORIES if c["id"] in present}
            colours = {obj.colour for obj in scene.objects}
            joined = " ".join(texts).lower()
            for name, pattern in CLASS_WORDS.items():
                assert bool(pattern.search(joined)) == (name in names), (name, texts)
            for name, pattern in COLOUR_WORDS.items():
                if pattern.search(joined):
                    assert name in colours, (name, texts)
            count = sum(1 for o in scene.objects if not o.iscrowd)
            for text in texts:
                m = re.match(r"There are (\w+) \w+ in the picture", text)
                if m:
                    assert NUMBER[m.group(1)] == count, text


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    def files(root):
        out = {}
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = f.read()
        return out

    synth.generate(str(tmp_path / "a"), 3, 2, image_size=128, seed=5)
    synth.generate(str(tmp_path / "b"), 3, 2, image_size=128, seed=5)
    synth.generate(str(tmp_path / "c"), 3, 2, image_size=128, seed=6)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(a) == 5 + 6 and a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if k.endswith(".jpg"))


@pytest.mark.parametrize("kwargs, field", [
    ({"num_train": -1}, "num_train"),
    ({"num_val": 1.5}, "num_val"),
    ({"image_size": 10}, "image_size"),
    ({"seed": -2}, "seed"),
])
def test_bad_arguments_name_the_field(tmp_path, kwargs, field):
    args = dict(num_train=1, num_val=1, image_size=64, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=field):
        synth.generate(str(tmp_path), **args)
    assert not os.listdir(tmp_path)


def test_polygons_and_rle_round_trip_through_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(30):
        canvas = Image.new("L", (96, 64))
        pts = [(float(x), float(y)) for x, y in rng.uniform([5, 5], [90, 60], size=(5, 2))]
        ImageDraw.Draw(canvas).polygon(pts, fill=255)
        ImageDraw.Draw(canvas).ellipse([10, 10, 30, 25], fill=255)
        mask = np.asarray(canvas) > 0
        rle = mask_util.frPyObjects(mask_to_rle(mask), 64, 96)
        assert (mask_util.decode(rle).astype(bool) == mask).all()
        if has_holes(mask):
            with pytest.raises(ValueError, match="holes"):
                mask_to_polygons(mask)
            continue
        polys = mask_to_polygons(mask)
        raster = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polys, 64, 96))).astype(bool)
        assert (raster & mask).sum() / (raster | mask).sum() >= 0.93


def test_diagonal_contact_and_holes():
    pinch = np.zeros((6, 6), bool)
    pinch[1:3, 1:3] = pinch[3:5, 3:5] = True  # two squares touching at one corner
    polys = mask_to_polygons(pinch)
    assert len(polys) == 2
    raster = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polys, 6, 6))).astype(bool)
    assert (raster == pinch).all()
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[3, 3] = False
    assert has_holes(ring) and not has_holes(pinch)
    with pytest.raises(ValueError, match="empty"):
        mask_to_polygons(np.zeros((4, 4), bool))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pix2seq.cli", "synth", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_the_same_dataset_as_generate(tmp_path):
    out = tmp_path / "cli"
    proc = _cli(str(out), "--train", "4", "--val", "2", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    synth.generate(str(tmp_path / "api"), 4, 2, image_size=256, seed=1)
    for split, n in (("train", 4), ("val", 2)):
        assert len(os.listdir(out / "images" / split)) == n
        for kind in KINDS:
            name = f"{kind}_{split}.json"
            with open(out / "annotations" / name) as f, open(tmp_path / "api" / "annotations" / name) as g:
                assert json.load(f) == json.load(g)


def test_cli_help_and_errors(tmp_path):
    proc = _cli("--help")
    assert proc.returncode == 0
    for flag in ("OUT_DIR", "--train", "--val", "--image-size", "--seed"):
        assert flag in proc.stdout
    bad = _cli(str(tmp_path / "x"), "--image-size", "8")
    assert bad.returncode == 2 and "image_size" in bad.stderr
    bad = _cli(str(tmp_path / "x"), "--train", "-4")
    assert bad.returncode == 2 and "--train" in bad.stderr


def test_empty_split_is_still_valid_coco(tmp_path):
    synth.generate(str(tmp_path), 1, 0, image_size=64, seed=0)
    for kind in KINDS:
        coco = _load(str(tmp_path), kind, "val")
        assert not coco.imgs and not coco.anns
        assert len(_load(str(tmp_path), kind, "train").imgs) == 1
    assert os.listdir(tmp_path / "images" / "val") == []
