"""The command line's flags: exporter-toolkit's spellings, the old ones as aliases, flags win."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter.cli import build_parser, load_with_flags
from exporter.config import ListenAddress
from exporter.logs import parse_level

DS = "12345678901234567890123456789012"


@pytest.mark.parametrize(
    ("given", "level"),
    [
        ("debug", "debug"),
        ("INFO", "info"),
        ("Warning", "warning"),
        ("warn", "warning"),
        ("WARN", "warning"),
        ("error", "error"),
    ],
)
def test_log_levels_are_case_insensitive_and_warn_is_warning(given: str, level: str) -> None:
    assert parse_level(given) == level
    assert build_parser().parse_args(["--log.level", given]).log_level == level
    assert build_parser().parse_args([f"--log-level={given}"]).log_level == level


def test_a_bad_level_or_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_code:
        build_parser().parse_args(["--log.level", "verbose"])
    assert exit_code.value.code == 2
    assert "--log.level: must be one of debug, info, warn, warning, error, got 'verbose'" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--log.format", "logfmt"])
    assert "--log.format: must be one of plain, json, got 'logfmt'" in capsys.readouterr().err


def test_defaults_and_new_spellings() -> None:
    args = build_parser().parse_args([])
    assert (args.log_level, args.log_format) == ("info", "plain")
    assert args.listen_addresses is None and args.telemetry_path is None
    assert args.web_config_file is None and args.disable_exporter_metrics is False
    assert not getattr(args, "deprecated_flags", None)
    args = build_parser().parse_args(
        [
            "--log.format=JSON",
            "--web.listen-address=:9891",
            "--web.listen-address",
            "127.0.0.1:9892",
            "--web.config.file",
            "web.yml",
            "--web.telemetry-path",
            "/x",
            "--web.disable-exporter-metrics",
        ]
    )
    assert args.log_format == "json"
    assert args.listen_addresses == [":9891", "127.0.0.1:9892"]
    assert (args.web_config_file, args.telemetry_path) == ("web.yml", "/x")
    assert args.disable_exporter_metrics is True


def test_old_spellings_are_aliases_noted_once_each() -> None:
    args = build_parser().parse_args(
        ["--log-level", "debug", "--log-level", "ERROR", "--log-format", "json"]
    )
    assert (args.log_level, args.log_format) == ("error", "json")  # the last one given wins
    assert args.deprecated_flags == ["--log-level", "--log-format"]


def test_flags_win_over_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "datastores": [{"datastore_id": DS, "image_sets": "all"}],
                "web": {
                    "listen_address": "127.0.0.1:9000",
                    "telemetry_path": "/from-file",
                    "config_file": "file-web.yml",
                },
            }
        )
    )
    from_file = load_with_flags(build_parser().parse_args(["--config", str(path)]))
    assert from_file.web.listen_addresses == (ListenAddress("127.0.0.1", 9000),)
    assert from_file.web.telemetry_path == "/from-file"
    assert from_file.web.disable_exporter_metrics is False
    flagged = load_with_flags(
        build_parser().parse_args(
            [
                "--config",
                str(path),
                "--web.listen-address",
                ":9001",
                "--web.listen-address",
                "[::1]:9002",
                "--web.telemetry-path",
                "/from-flag",
                "--web.config.file",
                "flag-web.yml",
                "--web.disable-exporter-metrics",
            ]
        )
    )
    assert flagged.web.listen_addresses == (ListenAddress("", 9001), ListenAddress("::1", 9002))
    assert flagged.web.telemetry_path == "/from-flag"
    assert flagged.web.config_file == "flag-web.yml"
    assert flagged.web.disable_exporter_metrics is True
    assert flagged.datastores == from_file.datastores
