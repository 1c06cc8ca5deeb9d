"""Blessing decision: is a candidate model good enough to push?

Pure function over metric dicts (`{task: {metric: value}}`, as metrics.json
holds them), so the rule is testable without TFX. A model is blessed when
every configured threshold is met and, when a baseline (the latest blessed
model) was evaluated on the same data, no task's headline metric dropped by
more than the allowed margin. The comparison runs per task over the tasks both
models were scored on: a candidate task the baseline does not serve is judged by
its thresholds only, a baseline task the candidate no longer serves is not
compared (each is a SKIP line). Every check contributes a human-readable reason.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Union

from model.tasks import headline_metrics as task_headline_metrics


@dataclasses.dataclass(frozen=True)
class BlessingDecision:
    blessed: bool
    reasons: List[str]  # one line per failed check (empty when blessed)
    checks: List[str]  # one line per check made, passed or failed

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _value(metrics: Mapping, task: str, metric: str) -> Optional[float]:
    value = (metrics.get(task) or {}).get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def decide(
    metrics: Mapping[str, Mapping[str, Optional[float]]],
    thresholds: Mapping[str, Mapping[str, float]],
    baseline_metrics: Optional[Mapping[str, Mapping[str, Optional[float]]]] = None,
    margin: Union[float, Mapping[str, float]] = 0.0,
    headline_metrics: Optional[Mapping[str, str]] = None,
) -> BlessingDecision:
    """Decide the blessing.

    Args:
      metrics: the candidate's metrics, `{task: {metric: value}}`.
      thresholds: `{task: {metric: minimum}}`; a configured metric that is
        missing (or None: no ground truth to compute it) fails its check.
      baseline_metrics: the latest blessed model's metrics on the same eval
        data, or None when there is no blessed model yet.
      margin: allowed absolute drop of a task's headline metric relative to
        the baseline; a float for all tasks or `{task: margin}`.
      headline_metrics: metric compared per task, for the tasks in both metric
        dicts (a task in one only is skipped: its model does not serve it);
        None: each registered task's `headline_metric` (model/tasks).

    Returns:
      BlessingDecision with `blessed`, the failure `reasons` and all `checks`.
    """
    reasons: List[str] = []
    checks: List[str] = []

    def check(ok: bool, text: str) -> None:
        checks.append(("PASS " if ok else "FAIL ") + text)
        if not ok:
            reasons.append(text)

    for task in sorted(thresholds):
        for metric, minimum in sorted(thresholds[task].items()):
            value = _value(metrics, task, metric)
            if value is None:
                check(False, f"{task}/{metric} is missing (threshold {minimum:g})")
            else:
                check(value >= minimum, f"{task}/{metric} = {value:.4f} vs threshold {minimum:g}")

    if baseline_metrics is not None:
        for task, metric in (headline_metrics or task_headline_metrics()).items():
            if task not in metrics and task not in baseline_metrics:
                continue
            if task not in baseline_metrics:
                checks.append(f"SKIP {task}/{metric}: the baseline does not serve {task} (thresholds only)")
                continue
            if task not in metrics:
                checks.append(f"SKIP {task}/{metric}: the candidate does not serve {task}")
                continue
            allowed = margin.get(task, 0.0) if isinstance(margin, Mapping) else float(margin)
            base = _value(baseline_metrics, task, metric)
            value = _value(metrics, task, metric)
            if base is None:
                checks.append(f"SKIP {task}/{metric}: the baseline has no value")
                continue
            if value is None:
                check(False, f"{task}/{metric} is missing but the baseline has {base:.4f}")
                continue
            check(value >= base - allowed,
                  f"{task}/{metric} = {value:.4f} vs baseline {base:.4f} (allowed drop {allowed:g})")

    return BlessingDecision(blessed=not reasons, reasons=reasons, checks=checks)


def metric_summary(metrics: Mapping[str, Mapping[str, Optional[float]]]) -> Dict[str, Optional[float]]:
    """`{task: headline value}` for tables and logs."""
    return {task: _value(metrics, task, metric) for task, metric in task_headline_metrics().items()
            if task in metrics}
