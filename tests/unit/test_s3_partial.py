"""S3 down, or slow: `status` still reports every host and marks the storage it could not check
as unknown; `plan` probes the storage, the recorders and the servers at the same time."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from tests.unit.test_flow_bootstrap import INVENTORY, Db1
from tests.unit.test_flow_servers import DEVICES, write_inventory
from tests.unit.test_flow_verify import Api
from tests.unit.test_recorder_host import CONVERGED, ScriptedRemote
from tsops import s3
from tsops.context import RunContext
from tsops.errors import ExitCode
from tsops.events import Recorded
from tsops.flows import bootstrap as flow
from tsops.flows.status import gather_status
from tsops.inventory.load import Target, load_inventory
from tsops.inventory.model import Storage

WITH_RECORDER = INVENTORY + """\
recorders:
  hosts:
    rec1: {}
storage:
  destination: s3://acme-recordings
  region: us-east-1
  endpoint: http://127.0.0.1:9
  allow_plain_http: true
timeouts:
  s3: 0.5
"""


class DownS3:
    """An S3 client whose every call fails as a stopped endpoint does (after `wait_for`)."""

    def __init__(self, wait_for: threading.Event | None = None) -> None:
        self.wait_for = wait_for
        self.calls: list[str] = []
        self.waited: bool | None = None

    def __getattr__(self, name: str) -> Any:
        def call(**kwargs: Any) -> Any:
            self.calls.append(name)
            if self.wait_for is not None:
                # Set by the server probe: when plan is sequential, the server is probed only
                # after the storage, and this waits in vain (and the test fails, not hangs).
                self.waited = self.wait_for.wait(60)
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/acme-recordings")

        return call

    def get_paginator(self, name: str) -> Any:
        client = self

        class Paginator:
            def paginate(self, **kwargs: Any) -> Any:
                getattr(client, name)(**kwargs)
                return iter(())

        return Paginator()


def context_for(path: Path, s3_client: Any, probed: threading.Event | None = None
                ) -> RunContext:
    inventory = load_inventory(path)
    db1, rec1 = Db1(), ScriptedRemote(CONVERGED)
    if probed is not None:
        answer = next(iter(db1.host.script))
        original = db1.host.script[answer]

        def probe(script: str) -> Any:
            probed.set()
            return original(script)  # type: ignore[operator]

        db1.host.script[answer] = probe
    hosts: dict[str, Any] = {"db1": db1.host, "rec1": rec1}

    def connect(target: Target) -> Any:
        return hosts[target.name]

    return RunContext(inventory, inventory.servers, Recorded(), connect=connect,
                      s3_factory=lambda storage, keys: s3_client,
                      api_factory=lambda context: Api(DEVICES))  # type: ignore[arg-type,return-value]


def test_status_with_s3_down_reports_every_host_and_the_storage_as_not_checked(
    tmp_path: Path
) -> None:
    path = write_inventory(tmp_path, WITH_RECORDER)
    with context_for(path, DownS3()) as context:
        status = gather_status(context)
    assert [h.name for h in status.hosts] == ["db1", "rec1"]
    db1, rec1 = status.hosts
    assert db1.reason is None and db1.check("reachable") is not None
    assert rec1.reason is None
    assert rec1.check("unit") is not None and rec1.check("unit").state == "ok"  # type: ignore[union-attr]
    destination = rec1.check("destination")
    assert destination is not None and destination.state == "unknown"
    assert destination.actual.startswith("not checked: S3: read bucket acme-recordings: "
                                         "cannot reach S3 (Could not connect")
    assert status.storage is not None and status.storage.state == "unknown"
    assert status.storage.actual == destination.actual
    assert status.recordings is not None and status.recordings.state == "unknown"
    assert status.recordings.actual.startswith("not checked: cannot list ")
    assert status.problems == (f"storage: {status.storage.actual.removeprefix('not checked: ')}",)
    assert status.state == "error" and status.exit_code == ExitCode.FAILED
    data = status.as_dict()
    assert data["storage"]["state"] == "unknown" and data["recordings"]["state"] == "unknown"
    assert [h["name"] for h in data["hosts"]] == ["db1", "rec1"]


def test_a_refused_bucket_read_is_still_an_error_but_credentials_are_not_checked() -> None:
    from botocore.exceptions import ClientError, NoCredentialsError

    from tsops.recorders.bucket import gather_bucket

    class Refusing:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def head_bucket(self, **kwargs: Any) -> Any:
            raise self.error

    slow = ClientError({"Error": {"Code": "SlowDown", "Message": "x"}}, "HeadBucket")
    for error, credentials in ((slow, False), (NoCredentialsError(), True)):
        with pytest.raises(s3.S3Error) as raised:
            gather_bucket(Refusing(error), "b")  # type: ignore[arg-type]
        assert isinstance(raised.value, s3.S3CredentialsError) is credentials
        assert raised.value.reached is not credentials


def test_plan_probes_storage_and_servers_at_the_same_time_in_a_fixed_order(
    tmp_path: Path
) -> None:
    path = write_inventory(tmp_path, WITH_RECORDER)
    probed = threading.Event()
    bucket = DownS3(wait_for=probed)
    with context_for(path, bucket, probed) as context:
        planned = flow.plan(context)
    assert bucket.waited is True  # the server was probed while the bucket was being read
    assert [p.target.name for p in planned.hosts] == ["db1"]
    assert planned.recorders is not None
    assert [p.target.name for p in planned.recorders.hosts] == ["rec1"]
    assert planned.recorders.bucket is not None and planned.recorders.bucket.unread
    assert planned.problem


def test_the_inventory_timeout_reaches_the_run_s_clients(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, WITH_RECORDER)
    inventory = load_inventory(path)
    assert inventory.model.timeouts.s3 == 0.5
    context = RunContext(inventory, (), Recorded())
    storage = inventory.model.storage
    assert isinstance(storage, Storage)
    client: Any = context.s3(storage, ("a", "b"))
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (0.5, 0.5)
