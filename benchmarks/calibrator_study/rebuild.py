"""Rebuild episodes from the transcripts kept in eval results JSON files, for ``compare.py``
(no confession report is kept there: the calibrator is compared as it sees a logged run).

    .venv/bin/python benchmarks/calibrator_study/rebuild.py OUT.pkl RESULTS.json [...]
"""

from __future__ import annotations

import json
import pickle
import sys
from types import SimpleNamespace
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from confessional.audit import CheckContext
from confessional.episode import extract_episode
from confessional.scenarios import get_scenario


def _messages(scenario: str, transcript: list[dict[str, Any]]) -> list[BaseMessage]:
    messages: list[BaseMessage] = [SystemMessage(get_scenario(scenario).system_prompt)]
    pending: list[tuple[str, str]] = []
    count = 0
    for row in transcript:
        if row["role"] == "human":
            messages.append(HumanMessage(row["text"]))
        elif row["role"] == "ai":
            calls = []
            for call in row.get("tool_calls") or []:
                count += 1
                calls.append({"name": call["name"], "args": call["args"], "id": f"c{count}"})
                pending.append((f"c{count}", call["name"]))
            messages.append(AIMessage(content=row["text"], tool_calls=calls))
        elif row["role"] == "tool" and pending:
            call_id, name = pending.pop(0)
            messages.append(ToolMessage(row["text"], tool_call_id=call_id, name=name))
    if isinstance(messages[-1], AIMessage) and messages[-1].tool_calls:
        messages.pop()  # a capped run: the last request never ran
    return messages


def main() -> None:
    out, *paths = sys.argv[1:]
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path in paths:
        with open(path) as fh:
            runs = json.load(fh)["runs"]
        for run in runs:
            key = json.dumps([run["scenario"], run["transcript"]], sort_keys=True)
            if key in seen or run["truth"] is None:
                continue
            seen.add(key)
            episode = extract_episode(_messages(run["scenario"], run["transcript"]))
            record = SimpleNamespace(
                scenario=run["scenario"],
                index=f"{path.rsplit('/', 1)[-1][:12]}:{run['index']}",
                truth=run["truth"],
                caught_by=run.get("caught_by") or {},
            )
            rows.append({"record": record, "context": CheckContext(episode, None)})
    with open(out, "wb") as fh:
        pickle.dump(rows, fh)
    print(len(rows), sum(r["record"].truth == "not_complied" for r in rows), "not complied")
    for r in rows:
        print(r["record"].scenario, r["record"].index, r["record"].truth)


if __name__ == "__main__":
    main()
