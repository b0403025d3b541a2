"""`bench validate --explain SUITE`: every resolved train setting of every entry, and where it came from.

    python -m bench validate seed001_protocol --explain

Train settings resolve as suite `train` <- dataset `train` <- strategy `train`; a setting none of them
sets is the harness's default, and a default that differs from a study's protocol is easy to miss
(weight decay 5e-4, a one-cycle schedule with a warmup epoch, crop padding 4, flip). So each setting is
listed per (dataset, strategy) entry with its source, `default` marked, followed by the augmentation
pipeline the cells run (the crop_pad / flip shorthands, then `augment`).
"""

from __future__ import annotations

import dataclasses
import json

from tabulate import tabulate

from bench.augment import shorthand_ops
from bench.settings import Suite, merge_train


def explain(suite: Suite) -> str:
    """Markdown-ish text: one table per (dataset entry, training strategy entry)."""
    parts = []
    for ds in suite.datasets:
        for st in suite.strategies:
            if _combines(st):
                continue
            train = merge_train(suite.train, ds.train, st.train)
            rows = [{"setting": f.name, "value": _text(getattr(train, f.name)),
                     "from": _source(f.name, suite, ds.train, st.train)} for f in dataclasses.fields(train)]
            ops = shorthand_ops(train.crop_pad, train.flip) + list(train.augment)
            pipeline = " -> ".join(_op_text(op) for op in ops) or "(none)"
            defaults = sum(r["from"] == "default" for r in rows)
            parts.append(f"## dataset {ds.name}, strategy {st.id}: {defaults} of {len(rows)} settings are "
                         f"defaults\n\n" + tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True)
                         + f"\n\naugmentation, in order: {pipeline}")
    return "\n\n".join(parts)


def _combines(st) -> bool:
    from bench.strategies import STRATEGIES

    return STRATEGIES.get(st.name)(**st.params).members() is not None


def _source(key: str, suite: Suite, ds_train: dict, st_train: dict) -> str:
    if key in st_train:
        return "strategy"
    if key in ds_train:
        return "dataset"
    return "suite" if key in suite.train_keys else "default"


def _text(value) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _op_text(op: dict) -> str:
    params = ", ".join(f"{k}={_text(v)}" for k, v in op.items() if k != "op")
    return f"{op['op']}({params})"
