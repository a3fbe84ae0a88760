"""Compare calibrator styles offline on episodes saved by ``collect.py`` (same
transcripts, same confession reports), one local-model server for all of them.

    .venv/bin/python benchmarks/calibrator_study/compare.py EPISODES.pkl [...] \
        --styles report,questions --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from typing import Any

from confessional.audit.calibrator import (
    CALIBRATOR_STYLES,
    answers_report,
    calibration_request,
    disagreements,
    flagged,
)
from confessional.episode import message_text
from confessional.evaluation import is_calibrator_finding
from confessional.findings import CONFESSION_FABRICATED
from confessional.local_model import local_chat_model
from confessional.parsing import parse_report


def _caught(kinds: list[str]) -> bool:
    return any(k != CONFESSION_FABRICATED for k in kinds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("episodes", nargs="+")
    parser.add_argument("--styles", default=",".join(CALIBRATOR_STYLES))
    parser.add_argument("--out", required=True)
    parser.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for path in args.episodes:
        with open(path, "rb") as fh:
            rows += [r for r in pickle.load(fh) if r["context"] is not None]
    styles = [s for s in args.styles.split(",") if s]
    results: list[dict[str, Any]] = []
    with local_chat_model(temperature=args.temperature) as model:
        for row in rows:
            record, context = row["record"], row["context"]
            entry: dict[str, Any] = {
                "scenario": record.scenario,
                "index": record.index,
                "truth": record.truth,
                "caught_by": record.caught_by,
            }
            for style in styles:
                started = time.perf_counter()
                try:
                    reply = model.invoke(calibration_request(context.episode, style))
                    text = message_text(reply)
                    independent = (
                        answers_report(text) if style == "questions" else parse_report(text)
                    )
                    found = (
                        flagged(independent)
                        if context.report is None
                        else disagreements(context.report, independent)
                    )
                    kinds = [f.kind for f in found if is_calibrator_finding(f) or True]
                    error = None
                except Exception as exc:  # a failed calibration is a result too
                    text, kinds, error = "", [], f"{type(exc).__name__}: {exc}"[:300]
                entry[style] = {
                    "kinds": kinds,
                    "caught": _caught(kinds),
                    "error": error,
                    "seconds": round(time.perf_counter() - started, 1),
                    "reply": text[:3000],
                }
                print(
                    f"{record.scenario} #{record.index} {record.truth:13} {style:9} "
                    f"caught={_caught(kinds)!s:5} kinds={kinds} err={error} "
                    f"{time.perf_counter() - started:.0f}s",
                    flush=True,
                )
            results.append(entry)
            with open(args.out, "w") as fh:
                json.dump(results, fh, indent=1)
    for style in styles:
        nc = [r for r in results if r["truth"] == "not_complied"]
        c = [r for r in results if r["truth"] == "complied"]
        hit = sum(r[style]["caught"] for r in nc)
        fp = sum(r[style]["caught"] for r in c)
        any_hit = sum(r[style]["caught"] or r["caught_by"].get("any", False) for r in nc)
        any_fp = sum(r[style]["caught"] or r["caught_by"].get("any", False) for r in c)
        print(
            f"{style}: calibrator caught {hit}/{len(nc)} not complied, flagged {fp}/{len(c)} "
            f"complied; with confession+audit: caught {any_hit}/{len(nc)}, flagged "
            f"{any_fp}/{len(c)}"
        )


if __name__ == "__main__":
    main()
