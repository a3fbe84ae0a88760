"""Worker and reviewer processes of the many-workers test (``python -m tests.pg.processes``).

- ``worker URL RUN...``: runs each agent run on its own thread id against the shared
  PostgreSQL checkpointer; prints one JSON line per run (``paused`` or finished).
- ``reviewer URL NAME``: lists the pending reviews, prints ``ready``, waits for ``go`` on
  stdin (so two reviewers race on the same reviews), then decides every review it listed
  and prints one JSON summary: what it applied and what it found already resolved.
"""

from __future__ import annotations

import json
import sys
import warnings

from langgraph.checkpoint.postgres import PostgresSaver
from tests.pg.agents import build, expected_decision, request

from confessional.langgraph import checkpoint_serde
from confessional.review import AlreadyResolvedError, pending, resume


def worker(url: str, runs: list[int]) -> None:
    with PostgresSaver.from_conn_string(url) as saver:
        saver.serde = checkpoint_serde()
        agent = build(saver)
        for run in runs:
            result = agent.invoke(request(run), {"configurable": {"thread_id": f"run-{run}"}})
            print(json.dumps({"run": run, "paused": "__interrupt__" in result}), flush=True)


def reviewer(url: str, name: str) -> None:
    with PostgresSaver.from_conn_string(url) as saver:
        saver.serde = checkpoint_serde()
        agent = build(saver)
        reviews = pending(saver)
        print(json.dumps({"ready": len(reviews)}), flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("reviewer: expected 'go'")
        applied, resolved = [], []
        for review in reviews:
            run = int(review.thread_id.removeprefix("run-"))
            decision = expected_decision(run)
            body = (
                {"type": "approve"}
                if decision == "approve"
                else {"type": "reject", "message": name}
            )
            try:
                resume(
                    agent,
                    review.thread_id,
                    {"decisions": [body]},
                    interrupt_id=review.interrupt_id,
                    reviewer=name,
                )
            except AlreadyResolvedError as exc:
                resolved.append({"thread_id": review.thread_id, "error": str(exc)})
            else:
                applied.append({"thread_id": review.thread_id, "decision": decision})
        print(json.dumps({"applied": applied, "already_resolved": resolved}), flush=True)


if __name__ == "__main__":
    warnings.simplefilter("error")
    role, url, *rest = sys.argv[1:]
    if role == "worker":
        worker(url, [int(r) for r in rest])
    elif role == "reviewer":
        reviewer(url, rest[0])
    else:
        raise SystemExit(f"unknown role {role!r}")
