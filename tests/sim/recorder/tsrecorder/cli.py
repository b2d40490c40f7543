"""Flags, environment and start-up checks of the simulated tsrecorder, then its main loop."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from . import VERSION
from .control import ControlClient, JoinError, Tailnet
from .server import RecordingServer
from .storage import LocalStorage, S3Credentials, S3Storage, Storage, StorageError
from .ui import UiServer

log = logging.getLogger("tsrecorder")

# Exit codes: 2 for bad flags (as Go's flag package), 1 for a fatal error at run time (log.Fatal).
EXIT_USAGE = 2
EXIT_FATAL = 1


class ConfigError(Exception):
    """A flag or environment problem found before anything is started."""


@dataclass(frozen=True)
class Config:
    """Everything the recorder was told, validated."""

    dst: str
    bucket: str | None
    credentials: S3Credentials | None
    hostname: str
    statedir: Path
    # Only tsnet's default state directory is created; a directory that was named must exist.
    statedir_is_default: bool
    auth_key: str | None
    login_server: str
    send_content_md5: bool
    ui: bool
    # Simulator-only: the lab address to listen on and register, instead of discovering it.
    listen_address: str | None

    @property
    def s3_endpoint(self) -> str | None:
        """The `host[:port]` of the S3 endpoint, or None in local-directory mode."""
        return self.dst.removeprefix("s3://") if self.dst.startswith("s3://") else None


def parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """Return the flag parser; each flag's default comes from its documented variable."""
    p = argparse.ArgumentParser(prog="tsrecorder", description="Tailscale SSH session recorder")
    p.add_argument("--dst", default=environ.get("TSRECORDER_DST", ""),
                   help="local directory, or s3://<endpoint-host> (TSRECORDER_DST)")
    p.add_argument("--bucket", default=environ.get("TSRECORDER_BUCKET", ""),
                   help="S3 bucket, required with an s3:// destination (TSRECORDER_BUCKET)")
    p.add_argument("--access-key", default=environ.get("AWS_ACCESS_KEY_ID", ""))
    p.add_argument("--secret-key", default=environ.get("AWS_SECRET_ACCESS_KEY", ""))
    p.add_argument("--hostname", default=environ.get("TSRECORDER_HOSTNAME", "recorder"))
    p.add_argument("--statedir", default="",
                   help="state directory; must exist and be writable (required with S3)")
    p.add_argument("--ui", action="store_true",
                   default=environ.get("TSRECORDER_UI", "").lower() == "true",
                   help="web UI on :443 (plain HTTP in the lab) (TSRECORDER_UI=true)")
    p.add_argument("--version", action="version", version=VERSION)
    return p


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """Where tsnet keeps state when no directory is given: <user config dir>/tsnet-tsrecorder."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "/")) / ".config")
    return Path(base) / "tsnet-tsrecorder"


def read_auth_key(environ: Mapping[str, str]) -> str | None:
    """Return the auth key from TS_AUTHKEY, else from the file TS_AUTHKEY_FILE names."""
    if environ.get("TS_AUTHKEY"):
        return environ["TS_AUTHKEY"].strip()
    key_file = environ.get("TS_AUTHKEY_FILE")
    if key_file:
        try:
            return Path(key_file).read_text().strip() or None
        except OSError as error:
            raise ConfigError(f"reading TS_AUTHKEY_FILE {key_file}: {error.strerror}") from error
    return None


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Turn flags and environment into a Config, or raise ConfigError saying what is wrong."""
    args = parser(environ).parse_args(list(argv))
    if not args.dst:
        raise ConfigError("--dst (or TSRECORDER_DST) is required")
    s3 = args.dst.startswith("s3://")
    credentials = None
    if s3:
        endpoint = args.dst.removeprefix("s3://")
        if not endpoint or "/" in endpoint:
            raise ConfigError(
                f"--dst {args.dst}: give the S3 endpoint as s3://<endpoint-host>, "
                "the bucket goes in --bucket"
            )
        if not args.bucket:
            raise ConfigError("--bucket (or TSRECORDER_BUCKET) is required with an s3:// --dst")
        # Some versions ignore TS_STATE_DIR in S3 mode; this simulator always does (strict).
        if not args.statedir:
            raise ConfigError("--statedir is required when recording to S3")
        if not (args.access_key and args.secret_key):
            raise ConfigError(
                "no S3 credentials: pass --access-key/--secret-key or set AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY (the lab has no instance role)"
            )
        credentials = S3Credentials(args.access_key, args.secret_key)
    named_statedir = args.statedir or environ.get("TS_STATE_DIR")
    statedir = Path(named_statedir) if named_statedir else default_state_dir(environ)
    login_server = environ.get("TSRECORDER_LOGIN_SERVER", "")
    if not login_server:
        raise ConfigError(
            "TSRECORDER_LOGIN_SERVER is not set: the lab has no default control server"
        )
    return Config(
        dst=args.dst,
        bucket=args.bucket or None,
        credentials=credentials,
        hostname=args.hostname,
        statedir=statedir,
        statedir_is_default=not named_statedir,
        auth_key=read_auth_key(environ),
        login_server=login_server.rstrip("/"),
        send_content_md5=environ.get("S3_SEND_CONTENT_MD5", "").lower() == "true",
        ui=args.ui,
        listen_address=environ.get("TSRECORDER_SIM_LISTEN_ADDRESS") or None,
    )


def check_state_dir(path: Path, *, create: bool) -> None:
    """Fail unless `path` is a writable directory; only tsnet's default directory is created."""
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise ConfigError(f"creating state directory {path}: {error.strerror}") from error
    try:
        is_dir = path.is_dir()
    except OSError as error:
        raise ConfigError(f"state directory {path}: {error.strerror}") from error
    if not is_dir:
        raise ConfigError(f"state directory {path} does not exist (it is not created)")
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ConfigError(f"state directory {path} is not writable: {error.strerror}") from error


def open_storage(config: Config) -> Storage:
    """Return the storage backend for `config`, checked (bucket reachable, directory usable)."""
    endpoint = config.s3_endpoint
    if endpoint is not None:
        assert config.bucket is not None and config.credentials is not None
        storage: Storage = S3Storage(
            endpoint, config.bucket, config.credentials, send_content_md5=config.send_content_md5
        )
    else:
        storage = LocalStorage(Path(config.dst))
    storage.check()
    return storage


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """Run the recorder until SIGTERM/SIGINT; return the process exit code."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s tsrecorder: %(message)s")
    env = os.environ if environ is None else environ
    try:
        config = parse_config(argv, env)
        check_state_dir(config.statedir, create=config.statedir_is_default)
    except ConfigError as error:
        log.error("%s", error)
        return EXIT_USAGE
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        storage = open_storage(config)
        control = ControlClient(config.login_server)
        address = config.listen_address or control.local_address()
        server = RecordingServer(address, storage)
        ui = UiServer(address, storage) if config.ui else None
    except (StorageError, JoinError, OSError) as error:
        log.error("%s", error)
        return EXIT_FATAL
    try:
        tailnet = Tailnet(control, config.statedir, config.hostname, address, config.auth_key)
        node = tailnet.join()
        log.info("joined the tailnet as %s (%s), tags %s; recording to %s",
                 node.get("name"), node.get("nodeId"), node.get("tags"), storage.describe())
        server.start()
        if ui is not None:
            ui.start()
        tailnet.start_heartbeat(stop)
        # A signal may land on another thread; waking up regularly lets the main thread run
        # the handler soon after.
        while not stop.wait(0.2):
            pass
    except JoinError as error:
        log.error("%s", error)
        return EXIT_FATAL
    finally:
        server.close()
        if ui is not None:
            ui.close()
    if tailnet.failure is not None:
        log.error("%s", tailnet.failure)
        return EXIT_FATAL
    log.info("stopped")
    return 0
