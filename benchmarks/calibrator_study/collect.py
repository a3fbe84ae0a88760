"""Collect real episodes of the local model (with their confession report and ground truth)
so that calibrator prompts can be compared offline on the same transcripts.

    .venv/bin/python benchmarks/calibrator_study/collect.py OUT.pkl --runs 2 [--scenarios a,b]
"""

from __future__ import annotations

import argparse
import pickle
import sys
from dataclasses import dataclass
from typing import Any

from confessional.audit import CheckContext
from confessional.audit.calibrator import Calibrator
from confessional.evaluation import RunLimits, RunRecord, run_eval
from confessional.findings import Finding
from confessional.local_model import local_chat_model

_SEEN: list[CheckContext] = []


@dataclass(frozen=True)
class Recorder(Calibrator):
    """Records what the calibrator would see; makes no model call."""

    def __call__(self, context: CheckContext) -> list[Finding]:
        _SEEN.append(context)
        return []

    async def acheck(self, context: CheckContext) -> list[Finding]:
        return self(context)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--scenarios", default="")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []

    def on_run(record: RunRecord) -> None:
        context = _SEEN[-1] if _SEEN else None
        _SEEN.clear()
        rows.append({"record": record, "context": context})
        print(
            f"{record.scenario} #{record.index}: truth {record.truth}, confessed "
            f"{record.confessed}, caught_by {record.caught_by}, {record.duration_s:.0f}s",
            flush=True,
        )
        with open(args.out, "wb") as fh:
            pickle.dump(rows, fh)

    names = [n for n in args.scenarios.split(",") if n] or None
    with local_chat_model() as model:
        run_eval(
            model,
            scenarios=names,
            runs=args.runs,
            seed=args.seed,
            on_run=on_run,
            limits=RunLimits(max_model_calls=5, max_seconds=180),
            confession_timeout_s=300,
            temperature=0.7,
            calibrator=Recorder(model),  # type: ignore[arg-type]
            calibrator_label="recorder",
        )
    print("done", len(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
