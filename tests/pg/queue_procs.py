"""Agent processes and worker settings of the queue tests (``python -m tests.pg.queue_procs``).

- ``agent URL NAME COUNT [--in-process]``: a background pipeline on the queue submits
  COUNT episodes (requests ``task NAME-i``, or ``poison NAME-i`` when NAME starts with
  ``poison``), prints ``{"enqueued": COUNT}`` once every submit returned, then waits on
  stdin until it is killed.
- ``confess COUNT CONCURRENCY``: the floor of the throughput benchmark. What a worker
  process does with COUNT jobs, CONCURRENCY at a time, without the queue: the same
  executor on the same records, handed out in memory. Prints ``ready`` once warmed up,
  waits for ``go`` on stdin, confesses, prints ``{"done": COUNT}``.
- :func:`worker_options`: what ``confessional worker --options
  tests.pg.queue_procs:worker_options`` confesses with, from the environment:
  ``QUEUE_TEST_OUT`` (the JSONL sink), ``QUEUE_TEST_DELAY_S`` (the confessing model's
  latency), ``QUEUE_TEST_LEASE_S``, ``QUEUE_TEST_ATTEMPTS``.

The confessing model sleeps inside the model, like a provider's latency; a request
containing ``poison`` gets an unparseable reply, so its confession always fails.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatResult

from confessional import ConfessionOptions, JsonlSink
from confessional.pipeline import ConfessionPipeline
from confessional.spool import episode_record
from confessional.testing import (
    ScriptedChatModel,
    admitting_confessor,
    garbage_confessor,
    last_human_text,
)


class SlowConfessor(ScriptedChatModel):
    """Admits (quoting the request), after ``latency_s``; garbage for a poison request."""

    latency_s: float = 0.1

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        time.sleep(self.latency_s)
        return super()._generate(messages, stop, run_manager, **kwargs)


def slow_confessor(latency_s: float) -> SlowConfessor:
    admits, garbage = admitting_confessor(), garbage_confessor()

    def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> AIMessage | str:
        chosen = garbage if "poison" in last_human_text(messages) else admits
        return chosen.respond(messages, tools)

    return SlowConfessor(respond=respond, latency_s=latency_s, model_name="slow-confessor")


def episode(request: str) -> list[BaseMessage]:
    """One finished turn with a tool call."""
    return [
        HumanMessage(request),
        AIMessage("", tool_calls=[{"name": "run_tests", "args": {}, "id": "call-1"}]),
        ToolMessage("2 passed", tool_call_id="call-1"),
        AIMessage("Done. All tests pass."),
    ]


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def worker_options() -> ConfessionOptions:
    return ConfessionOptions(
        model=slow_confessor(_env_float("QUEUE_TEST_DELAY_S", 0.1)),
        sinks=[JsonlSink(os.environ["QUEUE_TEST_OUT"])],
        queue_lease_s=_env_float("QUEUE_TEST_LEASE_S", 2.0),
        queue_max_attempts=int(os.environ.get("QUEUE_TEST_ATTEMPTS", "5")),
        queue_retry_backoff_s=0.05,
        flush_timeout_s=_env_float("QUEUE_TEST_GRACE_S", 5.0),
    )


def agent(url: str, name: str, count: int, in_process: bool) -> None:
    options = worker_options()
    pipeline = ConfessionPipeline(
        options,
        background=True,
        queue=url,
        queue_workers_in_process=in_process,
        max_concurrency=2,
    )
    kind = "poison" if name.startswith("poison") else "task"
    for index in range(count):
        future = pipeline.submit(episode(f"{kind} {name}-{index}"))
        assert future is not None
        assert future.result().error is not None
    print(json.dumps({"enqueued": count}), flush=True)
    sys.stdin.readline()  # until the test kills us, or closes stdin


def record(index: int) -> dict[str, Any]:
    """The spool record of one benchmark episode (what the queue's payload holds)."""
    extracted = ConfessionPipeline().episode(episode(f"task bench-{index}"))
    assert extracted is not None
    return episode_record(extracted, reason="queued")


def confess(count: int, concurrency: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from confessional.queue import ClaimedJob
    from confessional.queue._deliver import JobExecutor, worker_pipeline

    executor = JobExecutor(worker_pipeline(worker_options()))
    executor.warm_up()
    jobs = [
        ClaimedJob(
            id=index,
            confession_id=uuid.uuid4().hex,
            payload=record(index),
            attempt=1,
            wait_s=0.0,
            worker="floor",
        )
        for index in range(count)
    ]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("confess: expected 'go'")
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(executor, jobs))
    print(json.dumps({"done": count}), flush=True)


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "agent":
        agent(rest[0], rest[1], int(rest[2]), "--in-process" in rest)
    elif command == "confess":
        confess(int(rest[0]), int(rest[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")
