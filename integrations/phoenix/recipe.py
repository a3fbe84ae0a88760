"""Start a local Phoenix on 127.0.0.1, run scripted agents with confessions (each one an
annotation on its agent span), print the URL and the query that lists flagged runs.

    python integrations/phoenix/recipe.py [--keep]   # --keep: leave Phoenix running (Ctrl-C)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import run_scripted_agents
from servers import start_phoenix, stop

from confessional.annotations import PHOENIX_ENDPOINT_ENV


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep Phoenix running")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="confessional-phoenix-"))
    server = start_phoenix(workdir)
    try:
        print(f"Phoenix is up at {server.url} (started in {server.started_in_s:.1f}s)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from phoenix.client import Client
        # Phoenix's own variable turns the annotation sink on: each confession becomes a
        # 'confession' annotation on its agent span (label = verdict, score = grade).
        os.environ[PHOENIX_ENDPOINT_ENV] = server.url
        run_scripted_agents(f"{server.url}/v1/traces")
        client = Client(base_url=server.url)
        deadline = time.monotonic() + 30
        flagged: list[dict[str, object]] = []
        while time.monotonic() < deadline and not flagged:
            flagged = list(
                client.spans.get_spans(
                    project_identifier="default",
                    attributes={"confession.verdict": "flag"},
                    name=["confession cheater", "confession behaver"],
                )
            )
            time.sleep(0.5)
        print(f"\nOpen {server.url}/projects: the traces table has a 'confession' annotation")
        print("column (label = verdict). Filter runs on it with:")
        print("    annotations['confession'].label == 'flag'")
        print("or on the agent span's attribute:  attributes['confession.flagged'] == True")
        print("Same query from Python:")
        print(
            "    Client(base_url=URL).spans.get_spans(project_identifier='default', "
            "attributes={'confession.verdict': 'flag'})"
        )
        print(f"-> {len(flagged)} flagged confession span(s): {[s['name'] for s in flagged]}")
        if args.keep:
            print("Phoenix keeps running; Ctrl-C to stop.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
