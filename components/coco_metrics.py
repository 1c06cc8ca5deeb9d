"""COCO metrics the official way: pycocotools for boxes, masks and keypoints,
pycocoevalcap (PTB tokenization, BLEU-4, CIDEr-D) for captions.

Inputs are plain COCO dicts (a ground-truth dataset dict and result lists in
the COCO results format), so the evaluator component, `pix2seq predict --json`
output and tests all go through the same code. Nothing here is TensorFlow.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import shutil
import subprocess
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from model.tasks import task_class, task_names

# Names of COCOeval.stats entries, per iou type (pycocotools' summarize order).
BOX_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
KEYPOINT_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl")
CAPTION_METRIC_NAMES = ("BLEU-4", "CIDEr-D")


def _quiet():
    """pycocotools and pycocoevalcap print progress to stdout; keep logs clean."""
    return contextlib.redirect_stdout(io.StringIO())


def _load_gt(gt: Mapping) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(dict(gt))
    coco.dataset.setdefault("info", {})
    coco.dataset.setdefault("licenses", [])
    with _quiet():
        coco.createIndex()
    return coco


def coco_ap(gt: Mapping, results: Sequence[Mapping], iou_type: str,
            kpt_oks_sigmas: Optional[Sequence[float]] = None) -> Dict[str, Optional[float]]:
    """COCOeval summary for `iou_type` in {"bbox", "segm", "keypoints"}.

    `gt` is a COCO dataset dict (images, annotations, categories; crowd regions
    as `iscrowd=1` with RLE segmentation are honoured as pycocotools does).
    `results` is a COCO results list. With no results every AP is 0.0; a stat
    pycocotools cannot compute (no ground truth of that kind, reported as -1)
    becomes None so that it is never mistaken for a score.
    """
    names = KEYPOINT_STAT_NAMES if iou_type == "keypoints" else BOX_STAT_NAMES
    if iou_type not in ("bbox", "segm", "keypoints"):
        raise ValueError(f"iou_type must be bbox, segm or keypoints. Received: {iou_type!r}")
    coco_gt = _load_gt(gt)
    if not coco_gt.getAnnIds():
        return {name: None for name in names}
    if not results:
        return {name: 0.0 for name in names}
    results = [dict(r) for r in results]
    if iou_type == "segm":
        # loadRes derives segm areas/boxes itself; a bbox would make it treat
        # the entries as box results when both keys are present.
        for r in results:
            r.pop("bbox", None)
    with _quiet():
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        if iou_type == "keypoints" and kpt_oks_sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.asarray(kpt_oks_sigmas, np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: (None if v < 0 else float(v)) for name, v in zip(names, evaluator.stats)}


def score_kind(kind: str, gt: Mapping, results: Sequence[Mapping], kpt_oks_sigmas=None) -> dict:
    """The metrics of COCO results of `kind` (a task's `coco_kind`: bbox, segm or
    keypoints -> `coco_ap`; captions -> `caption_scores`) against ground truth `gt`."""
    if kind != "captions":
        return coco_ap(gt, results, kind, kpt_oks_sigmas=kpt_oks_sigmas)
    refs = references_from_gt(gt)
    return caption_scores(refs, {int(c["image_id"]): c["caption"] for c in results if int(c["image_id"]) in refs})


def keypoint_ground_truth(gt: Mapping, keypoint_category_ids: Sequence[int]) -> dict:
    """The person-keypoints view of a ground truth: only categories that have
    keypoints and their annotations (as COCO's person_keypoints_*.json)."""
    cats = set(int(c) for c in keypoint_category_ids)
    return {
        "images": list(gt["images"]),
        "categories": [c for c in gt["categories"] if int(c["id"]) in cats],
        "annotations": [a for a in gt["annotations"]
                        if int(a["category_id"]) in cats and "keypoints" in a],
    }


def mask_to_rle(mask: np.ndarray) -> dict:
    """Binary mask [H, W] -> COCO compressed RLE with a JSON-safe `counts` string."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


# ---------------------------------------------------------------- captions

_PUNCTUATION = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",",
                ":", "-", "--", "...", ";"}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}


def java_available() -> bool:
    """PTBTokenizer shells out to `java -cp stanford-corenlp-*.jar`."""
    java = shutil.which("java")
    if java is None:
        return False
    try:
        return subprocess.run([java, "-version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _regex_ptb_tokenize(captions: Mapping[int, List[dict]]) -> Dict[int, List[str]]:
    """Fallback when Java is missing: a PTB-like split (clitics `'s`/`n't` split off,
    hyphenated words kept, brackets as -lrb-/-rrb-, other punctuation as tokens),
    lower-cased, then the punctuation tokens removed exactly as pycocoevalcap's
    PTBTokenizer removes them."""
    out = {}
    for image_id, entries in captions.items():
        sentences = []
        for entry in entries:
            text = entry["caption"].replace("\n", " ").lower()
            for bracket, name in _BRACKETS.items():
                text = text.replace(bracket, f" {name} ")
            text = re.sub(r"(\w)n't\b", r"\1 n't", text)
            text = re.sub(r"(\w)'(s|re|ve|ll|d|m)\b", r"\1 '\2", text)
            tokens = re.findall(r"-[lr][rcs]b-|n't|'[a-z]+|\w+(?:[-.]\w+)*|[^\s\w]", text)
            sentences.append(" ".join(t for t in tokens if t not in _PUNCTUATION))
        out[image_id] = sentences
    return out


def tokenize_captions(captions: Mapping[int, List[dict]]) -> tuple[Dict[int, List[str]], str]:
    """COCO-caption tokenization; returns (tokenized, tokenizer name)."""
    if java_available():
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        with _quiet():
            return PTBTokenizer().tokenize({k: list(v) for k, v in captions.items()}), "ptb-stanford-corenlp"
    logging.warning("java not found: captions tokenized with the regex PTB approximation, "
                    "BLEU/CIDEr-D may differ slightly from the COCO caption evaluation")
    return _regex_ptb_tokenize(captions), "regex-ptb-approximation"


def caption_scores(references: Mapping[int, Sequence[str]],
                   candidates: Mapping[int, str]) -> Dict[str, object]:
    """Corpus BLEU-4 and CIDEr-D as the COCO caption evaluation computes them
    (`pycocoevalcap`: PTB tokenization, Bleu(4) 'closest' reference length,
    Cider = CIDEr-D with document frequencies from these references).

    Every candidate image must have references; images without a candidate are
    scored as empty captions would be, so missing predictions are penalised.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if not references:
        return {"BLEU-4": None, "CIDEr-D": None, "tokenizer": None}
    unknown = sorted(set(candidates) - set(references))
    if unknown:
        raise ValueError(f"caption predictions for images without references: {unknown[:5]}")
    ids = sorted(references)
    gts = {i: [{"caption": c} for c in references[i]] for i in ids}
    res = {i: [{"caption": candidates.get(i, "")}] for i in ids}
    gts_tok, tokenizer = tokenize_captions(gts)
    res_tok, _ = tokenize_captions(res)
    with _quiet():
        bleu, _ = Bleu(4).compute_score(gts_tok, res_tok, verbose=0)
        cider, _ = Cider().compute_score(gts_tok, res_tok)
    return {"BLEU-4": float(bleu[3]), "CIDEr-D": float(cider), "tokenizer": tokenizer}


def references_from_gt(gt: Mapping) -> Dict[int, List[str]]:
    """{image_id: [captions]} from a COCO captions dict (`annotations` with `caption`)."""
    refs: Dict[int, List[str]] = {}
    for ann in gt["annotations"]:
        refs.setdefault(int(ann["image_id"]), []).append(ann["caption"])
    return refs


def metrics_table(metrics: Mapping[str, Mapping[str, Optional[float]]]) -> List[str]:
    """{task: {metric: value}} -> the lines of the table `pix2seq pipeline run` and
    `pix2seq evaluate` print (None as n/a)."""
    lines = [f"{'task':<14}{'metric':<9}{'value':>8}"]
    for task in task_names():  # each task's `table_metrics`, in registry order
        for name in task_class(task).table_metrics if task in metrics else ():
            value = metrics[task].get(name)
            lines.append(f"{task:<14}{name:<9}{'n/a' if value is None else f'{value:.3f}':>8}")
    return lines
