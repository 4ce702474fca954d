"""Start-up checks: what --check-config and the daemon's start refuse before the first poll."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from exporter.config import Config, ConfigError, parse_config
from exporter.preflight import PreflightError, check_aws, check_startup
from tests.helpers import free_port

DS = "12345678901234567890123456789012"


def config(**sections: object) -> Config:
    raw: dict[str, object] = {
        "datastores": [{"datastore_id": DS, "image_sets": "all"}],
        "web": {"listen_address": "127.0.0.1:0"},
        **sections,
    }
    return parse_config(raw, "c.yaml")


@pytest.fixture(autouse=True)
def no_aws_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An AWS config file of our own, with one profile, and no AWS_PROFILE from outside."""
    aws_config = tmp_path / "aws-config"
    aws_config.write_text("[profile known]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_PROFILE", raising=False)
    return aws_config


def test_a_good_config_passes(tmp_path: Path) -> None:
    check_startup(config(state={"path": str(tmp_path / "s.db")}, aws={"profile": "known"}))


def test_an_existing_sqlite_file_and_an_empty_file_pass(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    check_startup(config(state={"path": str(db)}))
    empty = tmp_path / "empty.db"
    empty.touch()
    check_startup(config(state={"path": str(empty)}))
    check_startup(config(state={"path": ":memory:"}))


def test_missing_profile_is_one_line_and_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        check_aws(config(aws={"profile": "unknown"}), "c.yaml")
    assert isinstance(caught.value, PreflightError)
    assert str(caught.value) == (
        "c.yaml: aws.profile: The config profile (unknown) could not be found"
    )


def test_missing_aws_profile_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "gone")
    with pytest.raises(PreflightError, match=r"AWS_PROFILE: The config profile \(gone\)"):
        check_aws(config())


def test_state_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match=f"state.path {tmp_path}: is a directory, not a file"):
        check_startup(config(state={"path": str(tmp_path)}))


def test_state_path_in_a_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "s.db"
    with pytest.raises(PreflightError, match=f"directory {tmp_path / 'missing'} does not exist"):
        check_startup(config(state={"path": str(path)}))


def test_state_path_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_text("hello, not SQLite")
    with pytest.raises(PreflightError, match=f"state.path {path}: is not an SQLite database"):
        check_startup(config(state={"path": str(path)}))


def test_port_in_use_is_reported_and_every_problem_is_listed(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        bad = config(
            web={"listen_address": f"127.0.0.1:{port}"},
            state={"path": str(tmp_path)},
            aws={"profile": "unknown"},
        )
        with pytest.raises(PreflightError) as caught:
            check_startup(bad, "c.yaml")
        with pytest.raises(PreflightError) as without_listen:
            check_startup(bad, "c.yaml", listen=False)
    message = str(caught.value)
    assert message.startswith("c.yaml: aws.profile: ")
    assert "; state.path " in message
    assert (
        f"; web.listen_address 127.0.0.1:{port}: cannot listen: Address already in use" in message
    )
    assert "web.listen_address" not in str(without_listen.value)


def test_unreadable_web_config_is_reported(tmp_path: Path) -> None:
    bad = config(web={"listen_address": "127.0.0.1:0", "config_file": str(tmp_path / "no.yml")})
    with pytest.raises(PreflightError, match=r"web config .*no.yml: cannot read"):
        check_startup(bad)


def test_every_listen_address_is_checked(tmp_path: Path) -> None:
    state = {"path": str(tmp_path / "s.db")}
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        bad = config(web={"listen_address": ["127.0.0.1:0", f"127.0.0.1:{busy}"]}, state=state)
        with pytest.raises(PreflightError) as caught:
            check_startup(bad, "c.yaml")
    assert str(caught.value) == (
        f"c.yaml: web.listen_address 127.0.0.1:{busy}: cannot listen: Address already in use"
        " (by another process, such as an exporter already running)"
    )
    # Every interface and loopback on one port: the daemon could not bind both either.
    port = free_port()
    overlapping = config(web={"listen_address": [f":{port}", f"127.0.0.1:{port}"]}, state=state)
    with pytest.raises(PreflightError) as overlap:
        check_startup(overlapping, "c.yaml")
    assert str(overlap.value) == (
        f"c.yaml: web.listen_address 127.0.0.1:{port}: cannot listen: Address already in use"
        f" (by :{port}, listed before it)"
    )
    check_startup(config(web={"listen_address": [f":{port}", "127.0.0.1:0"]}, state=state))
