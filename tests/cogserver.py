"""A real Cog server (coglet) on 127.0.0.1 for the tests' own predictors.

Each folder in tests/cog_predictors/ holds one predictor. Before starting, the fixture writes
the folder's `.cog/openapi_schema.json` (normally made by `cog build`) from
`cog._inspector.create_predictor`, marking streaming predictors with `x-cog-streaming`
(without the schema coglet neither validates inputs nor streams). The server's worker runs as
plain `python` from PATH, so the venv's bin goes first on PATH.

Run as a script (`python cogserver.py schema FOLDER [--streaming]`) it only writes the schema;
the fixture does that in a subprocess so predictor modules never load into the test process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PREDICTORS = Path(__file__).parent / "cog_predictors"
STREAMING = {"text"}  # predictor folders whose outputs stream


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openapi_document(info: object, streaming: bool) -> dict:
    """The subset of Cog's OpenAPI document that coglet and clients read."""
    props: dict[str, dict] = {}
    required: list[str] = []
    for name, field in info.inputs.items():  # type: ignore[attr-defined]
        prop = dict(field.type.json_type())
        prop["title"] = name.replace("_", " ").title()
        prop["x-order"] = field.order
        if field.description:
            prop["description"] = field.description
        if field.ge is not None:
            prop["minimum"] = field.ge
        if field.le is not None:
            prop["maximum"] = field.le
        if field.choices:
            prop["enum"] = list(field.choices)
        if field.default is not None:
            prop["default"] = field.type.json_encode(field.default)
        elif field.type.repetition.name not in ("OPTIONAL", "OPTIONAL_REPEATED"):
            required.append(name)
        props[name] = prop
    input_schema: dict = {"title": "Input", "type": "object", "properties": props}
    if required:
        input_schema["required"] = required
    post: dict = {
        "summary": "Predict",
        "operationId": "predict_predictions_post",
        "requestBody": {"content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/PredictionRequest"}}}},
        "responses": {"200": {"description": "Successful Response", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictionResponse"}}}}},
    }
    if streaming:
        post["x-cog-streaming"] = True
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {
            "/predictions": {"post": post},
            "/predictions/{prediction_id}": {"put": dict(post, operationId="predict_idempotent")},
            "/predictions/{prediction_id}/cancel": {"post": {"summary": "Cancel"}},
        },
        "components": {"schemas": {
            "Input": input_schema,
            "Output": info.output.json_type(),  # type: ignore[attr-defined]
            "PredictionRequest": {"title": "PredictionRequest", "type": "object", "properties": {
                "id": {"type": "string"},
                "input": {"$ref": "#/components/schemas/Input"},
            }},
            "PredictionResponse": {"title": "PredictionResponse", "type": "object", "properties": {
                "output": {"$ref": "#/components/schemas/Output"},
                "status": {"type": "string"},
            }},
        }},
    }


def write_schema(folder: Path, streaming: bool) -> None:
    """Write `.cog/openapi_schema.json` by inspecting `predict.py:Predictor` (run in the folder)."""
    from cog import _inspector

    sys.path.insert(0, str(folder))
    info = _inspector.create_predictor("predict", "Predictor")
    (folder / ".cog").mkdir(exist_ok=True)
    doc = openapi_document(info, streaming)
    (folder / ".cog" / "openapi_schema.json").write_text(json.dumps(doc, indent=1))


class CogServer:
    """One coglet server for one predictor folder (copied to a temp dir so the repo stays clean)."""

    def __init__(self, name: str, *, concurrency: int = 1) -> None:
        self.name = name
        self.concurrency = concurrency
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"nbchat-cog-{name}-"))
        self.log = self.workdir / "server.log"

    def start(self, timeout: float = 60.0) -> CogServer:
        folder = self.workdir / "predictor"
        shutil.copytree(PREDICTORS / self.name, folder,
                        ignore=shutil.ignore_patterns(".cog", "__pycache__"))
        args = [sys.executable, __file__, "schema", str(folder)]
        if self.name in STREAMING:
            args.append("--streaming")
        subprocess.run(args, check=True, cwd=folder, capture_output=True)
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env.update(PORT=str(self.port), COG_PREDICT_TYPE_STUB="predict.py:Predictor",
                   COG_MAX_CONCURRENCY=str(self.concurrency), TMPDIR=str(self.workdir))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"],
                cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        self.wait_ready(timeout)
        return self

    def health(self) -> str:
        try:
            return str(httpx.get(self.url + "/health-check", timeout=2).json().get("status"))
        except (httpx.HTTPError, ValueError):
            return "DOWN"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"cog server for {self.name} exited:\n{self.log.read_text()}")
            if self.health() == "READY":
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"cog server for {self.name} not ready:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> CogServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "schema":
        write_schema(Path(sys.argv[2]).resolve(), "--streaming" in sys.argv[3:])
    else:
        sys.exit("usage: cogserver.py schema FOLDER [--streaming]")
