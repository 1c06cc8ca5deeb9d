"""The end-of-run report of `pix2seq pipeline run` (pix2seq/pipeline_cli.py): a table of
per-task metrics, the blessing, the pushed model, the fingerprints and the time per
component, and the prediction pictures copied out of the evaluation artifact.
"""
from __future__ import annotations

import os
import re
import shutil
from typing import List, Optional

from components.coco_metrics import metrics_table


def _short(fingerprint: str) -> str:
    """'N files, B bytes, sha256:<64 hex>' -> the same with 12 hex digits, for every
    digest (the code fingerprint has a second one for the init checkpoint)."""
    return re.sub(r"(sha256:[0-9a-f]{12})[0-9a-f]+", r"\1", fingerprint)


def format_table(summary) -> str:
    """The end-of-run report: metrics, blessing, push, time per component, pictures."""
    lines: List[str] = []
    metrics = (summary.metrics or {}).get("candidate") or {}
    lines.append(f"pipeline {summary.pipeline_name}  run {summary.run_id}")
    lines.append("")
    lines.extend(metrics_table(metrics))
    baseline = (summary.metrics or {}).get("baseline")
    if baseline:
        lines.append(f"(baseline: {(summary.metrics or {}).get('baseline_model', 'latest blessed model')})")
    lines.append("")
    verdict = {True: "BLESSED", False: "NOT BLESSED", None: "not evaluated"}[summary.blessed]
    lines.append(f"blessing: {verdict}" + (f" ({summary.blessing_message})" if summary.blessing_message else ""))
    if summary.pushed and summary.already_served:
        lines.append(f"pushed model: {summary.pushed_destination} (already served: same model, no new version)")
    elif summary.pushed:
        lines.append(f"pushed model: {summary.pushed_destination}")
        if summary.model_card:
            lines.append(f"model card: {summary.model_card} (Markdown beside it)")
    else:
        lines.append("pushed model: none (not blessed)")
    lines.append("")
    from pipeline.pipeline import EXAMPLE_GEN, TRAINER

    states = {c.component: c.state for c in summary.components}
    for label, value, node in (("input fingerprint", summary.input_fingerprint, EXAMPLE_GEN),
                               ("code fingerprint", summary.code_fingerprint, TRAINER)):
        if value:
            reused = " (unchanged: cached)" if states.get(node) == "CACHED" else ""
            lines.append(f"{label}: {_short(value)}{reused}")
    lines.append("")
    lines.append(f"{'component':<32}{'state':<10}{'seconds':>9}")
    total = 0.0
    for c in summary.components:
        lines.append(f"{c.component:<32}{c.state:<10}{c.seconds:>9.1f}")
        total += c.seconds
    lines.append(f"{'total':<32}{'':<10}{total:>9.1f}")
    return "\n".join(lines)


def copy_pictures(summary, output_dir: str) -> Optional[str]:
    """Copies the evaluation's prediction pictures into `output_dir`; returns it (None if none)."""
    pictures = summary.pictures
    if not pictures:
        return None
    os.makedirs(output_dir, exist_ok=True)
    for path in pictures:
        shutil.copy(path, os.path.join(output_dir, os.path.basename(path)))
    return os.path.abspath(output_dir)
