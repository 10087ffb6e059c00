"""A local stand-in for W&B's API server, for tests of the W&B backend through the real wandb SDK.

An HTTP server on 127.0.0.1 (ephemeral port, stdlib ``http.server``, a daemon thread) answering the GraphQL
operations and the file_stream protocol that wandb 0.31's SDK sends for ``wandb.sweep``, ``wandb.agent``,
``wandb.Api`` read-back, sweep state changes and online runs (facts: shared/reference/wandb-wire.md). Its
controller is W&B's own open-source engine, as W&B's local controller uses it: ``sweeps.next_run`` answers an
agent's heartbeat with a ``run`` command, ``sweeps.stop_runs`` with ``stop``.

Runs logged offline tell the server nothing: their state, summary and history are read from their ``.wandb``
files under ``root`` (``ignite_sweep/wandb_file.py``), as a later ``wandb sync`` would upload them. Online runs
arrive over ``UpsertBucket`` and file_stream.

Every request is logged (``log``), and every agent heartbeat with its wall-clock time and the runs it reported
live (``heartbeats``: when an agent asks matters as much as what). An operation the stand-in does not know is
answered with a GraphQL error and recorded in ``unanswered``, and the fixture fails the test on it, so that SDK
drift names the operation.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from ignite_sweep.engine import plain
from ignite_sweep.wandb_file import read_run

API_KEY = "x" * 40
WIRE_VERSION = "0.31"  # the wandb release these operations were read from
OPERATION = re.compile(r"^\s*(?:query|mutation)\s+(\w+)", re.MULTILINE)


def _engine() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps

    return sweeps


@dataclass
class Run:
    name: str
    sweep: str | None
    entity: str
    project: str
    config: dict[str, Any]  # {key: {"value": v}}
    created: float = field(default_factory=time.time)
    state: str = "pending"  # pending | running | finished | failed | crashed | killed
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    exitcode: int | None = None
    online: bool = False
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    should_stop: bool = False
    stop_sent: bool = False

    def node(self) -> dict[str, Any]:
        return {
            "id": _gql_id("Run", self.name), "projectId": "1", "name": self.name, "displayName": self.name,
            "sweepName": self.sweep, "state": self.state, "group": None, "jobType": None, "commit": None,
            "readOnly": False, "createdAt": _iso(self.created), "heartbeatAt": _iso(time.time()),
            "description": None, "notes": None, "tags": [], "historyLineCount": len(self.history),
            "user": {"name": "me", "username": "me"}, "config": json.dumps(self.config),
            "summaryMetrics": json.dumps(self.summary), "systemMetrics": "{}", "exitcode": self.exitcode,
            "historyKeys": {"lastStep": self.last_step()}, "shouldStop": self.should_stop,
            "failed": self.state == "failed", "stopped": self.state == "killed", "running": self.state == "running",
        }  # fmt: skip

    def last_step(self) -> int:
        return max((int(r.get("_step", i)) for i, r in enumerate(self.history)), default=-1)


@dataclass
class Sweep:
    name: str
    entity: str
    project: str
    config: dict[str, Any]
    created: float = field(default_factory=time.time)
    state: str = "RUNNING"  # RUNNING | PAUSED | FINISHED | CANCELED

    def node(self, runs: list[Run]) -> dict[str, Any]:
        return {
            "__typename": "Sweep", "id": _gql_id("Sweep", self.name), "name": self.name,
            "displayName": self.config.get("name"), "method": self.config.get("method"), "state": self.state,
            "description": None, "bestLoss": None, "config": yaml.safe_dump(self.config),
            "createdAt": _iso(self.created), "updatedAt": _iso(time.time()), "heartbeatAt": _iso(time.time()),
            "runCount": len(runs), "runCountExpected": None, "earlyStopJobRunning": False, "controller": None,
            "scheduler": None, "project": {"id": "p1", "name": self.project, "entity": _entity(self.entity)},
        }  # fmt: skip


def _gql_id(kind: str, name: str) -> str:
    return base64.b64encode(f"{kind}:{name}".encode()).decode()


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


def _entity(name: str) -> dict[str, str]:
    return {"id": f"e-{name}", "name": name}


class WandbStandIn:
    """The server's state and its answers. ``url`` goes in ``WANDB_BASE_URL``."""

    def __init__(self, root: Path, entity: str = "me") -> None:
        self.root, self.entity = root, entity
        self.sweeps: dict[str, Sweep] = {}
        self.runs: dict[str, Run] = {}
        self.agents: dict[str, dict[str, Any]] = {}
        self.log: list[str] = []
        self.heartbeats: list[tuple[float, list[str]]] = []  # (time.time() received, runState's run ids)
        self.unanswered: list[str] = []
        self.refuse_keys = False  # answer 401, as W&B does to a key it does not know
        self.refuse_sweeps = False  # refuse to create sweeps (UpsertSweep without an id), as W&B may (permissions)
        self.extra_config_warnings: list[str] = []  # what a server with a newer sweep schema also warns about
        self.lock = threading.RLock()
        self._ids = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall per answer

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                return gzip.decompress(data) if self.headers.get("Content-Encoding") == "gzip" else data

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self._body()
                if stand_in.refuse_keys:
                    stand_in.log.append(f"401 {self.path}")
                    self._reply(401, {"errors": [{"message": "user is not logged in"}]})
                    return
                status, answer = stand_in.handle_post(self.path, body)
                self._reply(status, answer)

            def do_PUT(self) -> None:  # noqa: N802 - run files uploaded to the URLs CreateRunFiles handed out
                self._body()
                stand_in.log.append(f"PUT {self.path}")
                self._reply(200, {})

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:  # a client hung up: not news
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="wandb-stand-in", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> WandbStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids:05d}"

    # ------------------------------------------------------------ dispatch

    def handle_post(self, path: str, body: bytes) -> tuple[int, Any]:
        with self.lock:
            match = re.fullmatch(r"/files/([^/]+)/([^/]+)/([^/]+)/file_stream", path)
            if match:
                self.log.append("file_stream")
                return 200, self.file_stream(match.group(3), json.loads(body or b"{}"))
            if path != "/graphql":
                self.log.append(f"POST {path}")
                self.unanswered.append(f"POST {path}")
                return 404, {"errors": [{"message": f"stand-in: no route {path}"}]}
            request = json.loads(body)
            query = "\n".join(line for line in request["query"].splitlines() if not line.lstrip().startswith("#"))
            found = OPERATION.search(query)
            name = request.get("operationName") or (found.group(1) if found else "?")
            self.log.append(name)
            handler = getattr(self, f"op_{name}", None)
            if handler is None:
                self.unanswered.append(name)
                return 200, {"data": None, "errors": [{"message": f"stand-in: unknown operation {name}"}]}
            result = handler(request.get("variables") or {})
            if isinstance(result, tuple):  # (HTTP status, body) for errors
                return result
            return 200, {"data": result}

    # ------------------------------------------------------------ viewer and server

    def op_Viewer(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 - operation names
        return {"viewer": {"id": "u1", "entity": self.entity, "username": self.entity, "email": None,
                           "flags": None, "teams": {"edges": []}}}  # fmt: skip

    op_GetDefaultEntity = op_Viewer

    def op_ServerFeaturesQuery(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"serverInfo": {"features": []}}

    # ------------------------------------------------------------ sweeps

    def op_UpsertSweep(self, v: dict[str, Any]) -> Any:  # noqa: N802
        if v.get("id"):  # a state change: the sweep's GraphQL id
            sweep = next((s for s in self.sweeps.values() if _gql_id("Sweep", s.name) == v["id"]), None)
            if sweep is None:
                return {"upsertSweep": None}
            if v.get("state"):
                sweep.state = v["state"]
            return {"upsertSweep": {"sweep": {"name": sweep.name}}}
        if self.refuse_sweeps:
            return 200, {"data": None, "errors": [{"message": "permission denied: cannot create sweeps here"}]}
        config = yaml.safe_load(v["config"])
        entity, project = v.get("entityName") or self.entity, v.get("projectName") or "uncategorized"
        name = self._new_id("sw")
        self.sweeps[name] = Sweep(name, entity, project, config)
        warnings_ = _engine().schema_violations_from_proposed_config(config) + self.extra_config_warnings
        return {"upsertSweep": {"sweep": {"name": name, "project": {"id": "p1", "name": project,
                                                                     "entity": _entity(entity)}},
                                "configValidationWarnings": warnings_}}  # fmt: skip

    def _sweep(self, v: dict[str, Any]) -> Sweep | None:
        return self.sweeps.get(v.get("name") or v.get("sweep") or "")

    def _sweep_runs(self, sweep: Sweep) -> list[Run]:
        self.refresh_offline_runs()
        return sorted((r for r in self.runs.values() if r.sweep == sweep.name), key=lambda r: r.created)

    def op_GetSweep(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        sweep = self._sweep(v)
        return {"project": {"sweep": sweep.node(self._sweep_runs(sweep)) if sweep else None}}

    op_GetSweepLegacy = op_GetSweep

    def op_GetSweepState(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        sweep = self._sweep(v)
        return {"project": {"sweep": {"state": sweep.state} if sweep else None}}

    def op_SweepWithRuns(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        sweep = self._sweep(v)
        if sweep is None:
            return {"project": {"sweep": None}}
        runs = self._sweep_runs(sweep)
        node = sweep.node(runs)
        node["runs"] = {"edges": [{"node": {**r.node(), "sampledHistory": [r.history]}} for r in runs]}
        return {"project": {"sweep": node}}

    # ------------------------------------------------------------ agents: the controller

    def op_CreateAgent(self, v: dict[str, Any]) -> Any:  # noqa: N802
        if v["sweep"] not in self.sweeps:
            return 200, {"data": None, "errors": [{"message": f"sweep {v['sweep']} not found"}]}
        agent_id = self._new_id("ag")
        self.agents[agent_id] = {"sweep": v["sweep"], "host": v.get("host")}
        return {"createAgent": {"agent": {"id": agent_id}}}

    def op_Heartbeat(self, v: dict[str, Any]) -> Any:  # noqa: N802
        agent = self.agents.get(v["id"])
        if agent is None or agent["sweep"] not in self.sweeps:
            return 404, {"errors": [{"message": "agent or sweep not found"}]}
        sweep = self.sweeps[agent["sweep"]]
        reported = list(json.loads(v.get("runState") or "{}"))
        self.heartbeats.append((time.time(), reported))
        live = [name for name in reported if name in self.runs]
        commands = self.controller(sweep, live)
        return {"agentHeartbeat": {"agent": {"id": v["id"]}, "commands": json.dumps(commands)}}

    def controller(self, sweep: Sweep, live: list[str]) -> list[dict[str, Any]]:
        """What W&B's controller answers an agent's heartbeat (wandb-wire.md §1e)."""
        sweeps = _engine()
        runs = self._sweep_runs(sweep)
        if sweep.state == "PAUSED":
            return []
        if sweep.state == "FINISHED":
            return [] if live else [{"type": "exit"}]
        if sweep.state == "CANCELED":
            return [{"type": "stop", "run_id": name} for name in live] or [{"type": "exit"}]
        engine_runs = [sweeps.SweepRun(name=r.name, state=r.state, config=r.config, history=r.history,
                                       summary_metrics=r.summary) for r in runs]  # fmt: skip
        if sweep.config.get("early_terminate"):
            for stopped in sweeps.stop_runs(sweep.config, engine_runs):
                run = self.runs[stopped.name]
                run.should_stop = True
                if stopped.name in live and not run.stop_sent:
                    run.stop_sent = True
                    return [{"type": "stop", "run_id": stopped.name}]
        if live:
            return []
        cap = sweep.config.get("run_cap")
        suggestion = None if cap is not None and len(runs) >= cap else sweeps.next_run(sweep.config, engine_runs)
        if suggestion is None:
            sweep.state = "FINISHED"
            return [{"type": "exit"}]
        name = self._new_id("run").lower()
        config = plain(suggestion.config)  # numpy scalars -> Python
        self.runs[name] = Run(name, sweep.name, sweep.entity, sweep.project, config)
        return [{"type": "run", "run_id": name, "args": config, "program": sweep.config.get("program")}]

    # ------------------------------------------------------------ run data: offline files, online streams

    def refresh_offline_runs(self) -> None:
        """State, summary and history of runs logged offline, from their .wandb files as written so far."""
        for run in self.runs.values():
            if run.online or run.state in ("finished", "failed", "crashed", "killed"):
                continue
            files = list(self.root.glob(f"**/offline-run-*-{run.name}/run-{run.name}.wandb"))
            if not files:
                continue
            rows, summary, exit_code = read_run(files[0], partial=True)  # as written so far
            run.history, run.summary = rows, summary
            if exit_code is None:
                run.state = "running"
            else:
                run.exitcode = exit_code
                run.state = "finished" if exit_code == 0 else "failed"

    def op_UpsertBucket(self, v: dict[str, Any]) -> Any:  # noqa: N802
        sweep = v.get("sweep") or None
        known = self.sweeps.get(sweep or "")
        if sweep is not None and (known is None or known.project != v.get("project")):  # W&B: no run (wandb#8115)
            return 404, {"errors": [{"message": f"sweep {sweep} not found"}]}
        name = v.get("name") or self._new_id("run").lower()
        run = self.runs.get(name)
        if run is None:
            run = self.runs[name] = Run(name, sweep, v.get("entity") or self.entity,
                                        v.get("project") or "uncategorized", {})  # fmt: skip
        run.sweep = sweep or run.sweep
        run.online = True
        if run.state == "pending":
            run.state = "running"
        if v.get("config"):
            run.config = json.loads(v["config"])
        run.group = v.get("groupName") or run.group
        run.tags = v.get("tags") or run.tags
        if v.get("summaryMetrics"):
            run.summary.update(json.loads(v["summaryMetrics"]))
        bucket = {"id": _gql_id("Run", name), "name": name, "displayName": name, "description": None,
                  "config": json.dumps(run.config), "sweepName": run.sweep, "historyLineCount": len(run.history),
                  "project": {"id": "p1", "name": run.project, "entity": _entity(run.entity)}}  # fmt: skip
        return {"upsertBucket": {"bucket": bucket, "inserted": True}}

    def op_RunResumeStatus(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 - resume="allow"/"must", sync
        """What the SDK (runresume.go) reads to go on with a run: its last history rows (``historyTail``, a JSON
        list of JSON rows; the next step is the last ``_step`` + 1), summary, config and ``wandbConfig.t`` (present
        once the run has started). No such run: ``bucket`` is null (a new run under "allow")."""
        run = self.runs.get(v.get("name") or "")
        project = {"id": "p1", "name": v.get("project"), "entity": _entity(v.get("entity") or self.entity)}
        if run is None or not run.online:
            return {"model": {**project, "bucket": None}}
        tail = [json.dumps(r) for r in run.history[-10:]]
        bucket = {"id": _gql_id("Run", run.name), "name": run.name, "displayName": run.name, "notes": None,
                  "summaryMetrics": json.dumps(run.summary), "logLineCount": 0, "historyLineCount": len(run.history),
                  "eventsLineCount": 0, "historyTail": json.dumps(tail), "eventsTail": "[]",
                  "config": json.dumps(run.config), "tags": run.tags, "wandbConfig": json.dumps({"t": 1})}  # fmt: skip
        return {"model": {**project, "bucket": bucket}}

    def file_stream(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        run = self.runs.get(name)
        if run is None:
            return {"exitcode": None, "limits": {}}
        files = body.get("files") or {}
        for line in (files.get("wandb-history.jsonl") or {}).get("content", []):
            run.history.append(json.loads(line))
        summary_lines = (files.get("wandb-summary.json") or {}).get("content", [])
        if summary_lines:
            run.summary = json.loads(summary_lines[-1])
        if body.get("complete"):
            run.exitcode = body.get("exitcode")
            run.state = "finished" if not run.exitcode else "failed"
        answer: dict[str, Any] = {"exitcode": None, "limits": {}}
        if run.should_stop:
            answer["stopped"] = True
        return answer

    def op_CreateRunFiles(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        files = [{"name": f, "uploadUrl": f"{self.url}/upload/{v['run']}/{f}"} for f in v.get("files", [])]
        return {"createRunFiles": {"runID": _gql_id("Run", v["run"]), "uploadHeaders": [], "files": files}}

    def op_ArtifactType(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 - no such artifact yet
        return {"project": {"artifact": None}}

    def op_OrganizationCoreWeaveOrganizationID(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"entity": {"organization": None}}  # an online run's init asks; no organization here

    def op_CreateArtifact(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 - "already there": no upload
        return {"createArtifact": {"artifact": {"id": self._new_id("art"), "state": "COMMITTED",
                                                "artifactSequence": {"latestArtifact": None}}}}  # fmt: skip

    def op_StopRun(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        run = next((r for r in self.runs.values() if _gql_id("Run", r.name) == v["id"]), None)
        if run is not None:
            run.should_stop = True
        return {"stopRun": {"success": run is not None}}

    # ------------------------------------------------------------ read-back (wandb.Api)

    def _project_runs(self, v: dict[str, Any]) -> list[Run]:
        self.refresh_offline_runs()
        filters = json.loads(v.get("filters") or "{}")
        wanted = {f.get("sweep") for f in filters.get("$and", []) if "sweep" in f}
        runs = [r for r in self.runs.values() if r.project == v.get("project") and (not wanted or r.sweep in wanted)]
        order = v.get("order") or "-created_at"
        return sorted(runs, key=lambda r: r.created, reverse=order.startswith("-"))

    def op_Runs(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 - one page, all runs
        runs = self._project_runs(v)
        edges = [{"node": r.node(), "cursor": r.name} for r in runs]
        return {"project": {"internalId": "1", "runCount": len(runs), "readOnly": False, "runs": {
            "edges": edges, "pageInfo": {"endCursor": runs[-1].name if runs else None, "hasNextPage": False}}}}

    def _run(self, v: dict[str, Any]) -> Run | None:
        self.refresh_offline_runs()
        return self.runs.get(v.get("name") or v.get("runName") or v.get("run") or "")

    def op_Run(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        run = self._run(v)
        return {"project": {"run": run.node() if run else None}}

    op_RunState = op_Run
    op_RunHistoryKeys = op_Run

    def op_RunParquetHistory(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        run = self._run(v)
        live = [{"_step": r.get("_step", i)} for i, r in enumerate(run.history)] if run else []
        return {"project": {"run": {"parquetHistory": {"parquetUrls": [], "liveData": live}}}}

    def _sampled(self, run: Run | None, spec: dict[str, Any]) -> list[dict[str, Any]]:
        if run is None:
            return []
        keys = [k for k in spec.get("keys", []) if k]
        lo, hi = spec.get("minStep", -1), spec.get("maxStep", 1 << 62)
        return [{k: row[k] for k in keys} for row in run.history
                if all(k in row for k in keys) and lo <= row.get("_step", 0) <= hi]  # fmt: skip

    def op_SampledHistoryPage(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        run = self._run(v)
        return {"project": {"run": {"sampledHistory": [self._sampled(run, json.loads(v["spec"]))]}}}

    def op_RunSampledHistory(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        run = self._run(v)
        return {"project": {"run": {"sampledHistory": [self._sampled(run, json.loads(s)) for s in v["specs"]]}}}

    def op_HistoryPage(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        run = self._run(v)
        lo, hi = v.get("minStep", 0), v.get("maxStep", 1 << 62)
        rows = [json.dumps(r) for r in (run.history if run else []) if lo <= r.get("_step", 0) < hi]
        return {"project": {"run": {"history": rows}}}

    def op_RunFullHistory(self, v: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        run = self._run(v)
        return {"project": {"run": {"history": [json.dumps(r) for r in (run.history if run else [])]}}}
