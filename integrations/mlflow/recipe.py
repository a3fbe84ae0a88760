"""Start a local MLflow tracking server on 127.0.0.1, send scripted agent runs with
confessions over OTLP (header x-mlflow-experiment-id), record each confession as MLflow
feedback on its trace (confessional.annotations.mlflow_feedback), print the URL and the
flagged query.

    python integrations/mlflow/recipe.py [--keep]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import run_scripted_agents
from servers import start_mlflow, stop

from confessional.annotations import mlflow_feedback


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep MLflow running")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="confessional-mlflow-"))
    server = start_mlflow(workdir)
    try:
        print(f"MLflow is up at {server.url} (started in {server.started_in_s:.1f}s)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=server.url)
            experiment_id = client.create_experiment("confessional-recipe")
        # Each confession becomes feedback named "confession" on its trace (value = verdict,
        # source = the confessing model); it waits for the trace to reach MLflow.
        feedback = mlflow_feedback(tracking_uri=server.url)
        run_scripted_agents(
            f"{server.url}/v1/traces",
            headers={"x-mlflow-experiment-id": experiment_id},
            sinks=[feedback],
        )
        feedback.flush()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traces = client.search_traces(experiment_ids=[experiment_id])
        flagged = [
            t.info.trace_id
            for t in traces
            if any(a.name == "confession" and a.value == "flag" for a in t.info.assessments)
        ]
        print(f"\nOpen {server.url}/#/experiments/{experiment_id}/traces")
        print("The traces table has a 'confession' assessment column: the verdict per run.")
        print("From Python:")
        print(
            "    [t for t in MlflowClient(URL).search_traces(experiment_ids=[ID]) if any("
            "a.name == 'confession' and a.value == 'flag' for a in t.info.assessments)]"
        )
        print(f"-> {len(flagged)} flagged trace(s): {flagged}")
        if args.keep:
            print("MLflow keeps running; Ctrl-C to stop.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
