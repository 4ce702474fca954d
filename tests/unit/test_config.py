"""Config loading: the example, defaults, and one file per bad config with its one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import (
    Config,
    ConfigError,
    ListenAddress,
    WebSettings,
    load_config,
    override_web,
    parse_config,
    parse_config_text,
)
from exporter.configfile import MAX_ERRORS_SHOWN, MAX_FILE_BYTES, MAX_SCALAR_CHARS

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted((ROOT / "tests" / "data" / "config").glob("*.yaml"))
DS = "12345678901234567890123456789012"


def test_example_config_is_valid_and_documents_defaults() -> None:
    config = load_config(ROOT / "config.example.yaml")
    assert config.datastores[0].datastore_id == DS
    assert config.poll.interval_seconds == 60
    assert config.web.listen_address == ":9890"
    assert config.aws.rate_limits["ListImageSetVersions"] == 20
    assert config == parse_config(
        {"datastores": [{"datastore_id": DS, "image_sets": ["ea92b0d8838c72a3f25d00d13616f87e"]}]},
        "x",
    )


def test_defaults_for_per_image_set_depend_on_discovery() -> None:
    config = parse_config(
        {
            "datastores": [
                {"datastore_id": DS, "image_sets": "all"},
                {"datastore_id": "a" * 32, "image_sets": ["b" * 32]},
            ]
        }
    )
    assert config.metrics.mode_for(config.datastores[0]) == "failures_only"
    assert config.metrics.mode_for(config.datastores[1]) == "all"


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_names_the_field_in_one_line(path: Path) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert expected in message


def test_missing_file_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"cannot read"):
        load_config("/nonexistent/config.yaml")


def test_shard_flags_are_checked() -> None:
    config = parse_config({"datastores": [{"datastore_id": DS, "image_sets": "all"}]})
    assert config.with_shard(1, 3).shard == 1
    with pytest.raises(ConfigError, match="shard: must be between 0 and total_shards - 1"):
        config.with_shard(3, 3)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
sections = st.fixed_dictionaries(
    {},
    optional={
        "aws": json_values,
        "poll": json_values
        | st.dictionaries(
            st.sampled_from(["interval_seconds", "concurrency", "timeout_seconds"]), json_values
        ),
        "datastores": json_values
        | st.lists(
            st.dictionaries(st.sampled_from(["datastore_id", "image_sets", "region"]), json_values),
            max_size=3,
        ),
        "state": json_values,
        "web": json_values,
        "metrics": json_values,
        "shard": json_values,
        "total_shards": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(sections)
def test_any_input_is_a_valid_config_or_one_config_error(data: dict[str, object]) -> None:
    try:
        parse_config(data, "fuzz")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert str(exc).startswith("fuzz: ")


def test_file_larger_than_the_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=r"big.yaml: is larger than 1024 KiB$"):
        load_config(path)


def test_scalar_longer_than_the_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.yaml"
    path.write_text(f"state: {{path: {'a' * (MAX_SCALAR_CHARS + 1)}}}\n")
    with pytest.raises(ConfigError, match=f"a value longer than {MAX_SCALAR_CHARS} characters"):
        load_config(path)


def test_many_errors_are_capped_and_values_cut_short() -> None:
    bad: dict[str, object] = {f"key{i}": "v" * 10_000 for i in range(500)}
    bad["poll"] = {"interval_seconds": "x" * 10_000}
    with pytest.raises(ConfigError) as caught:
        parse_config(bad, "many")
    message = str(caught.value)
    assert message.count(": unknown key") == MAX_ERRORS_SHOWN
    assert message.endswith("; and 482 more errors")
    assert "x" * 41 not in message and "v" * 41 not in message
    assert len(message) < 200 * MAX_ERRORS_SHOWN


def test_one_error_more_is_singular() -> None:
    bad: dict[str, object] = {f"key{i}": 1 for i in range(MAX_ERRORS_SHOWN + 1)}
    bad["datastores"] = [{"datastore_id": DS, "image_sets": "all"}]
    with pytest.raises(ConfigError, match=r"; and 1 more error$"):
        parse_config(bad, "x")


yaml_like_text = st.text(
    alphabet="[]{}:,-&*!|>?'\"#%@`\\\n\t 0123456789abcdefxyz.e+_<=~", max_size=200
)
plain_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.dates().map(str),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)


def _assert_config_or_one_config_error(text: str) -> None:
    try:
        result = parse_config_text(text, "fuzz")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert str(exc).startswith("fuzz: ")
        assert len(str(exc)) < 200 * MAX_ERRORS_SHOWN
    else:
        assert isinstance(result, Config)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300) | yaml_like_text)
def test_any_yaml_text_is_a_config_or_one_config_error(text: str) -> None:
    _assert_config_or_one_config_error(text)


@settings(max_examples=200, deadline=None)
@given(
    plain_data | st.dictionaries(st.sampled_from(["aws", "poll", "datastores", "web"]), plain_data)
)
def test_any_data_dumped_to_yaml_is_a_config_or_one_config_error(data: object) -> None:
    _assert_config_or_one_config_error(yaml.safe_dump(data))


def test_default_listen_address_is_every_interface_on_9890() -> None:
    web = parse_config({"datastores": [{"datastore_id": DS, "image_sets": "all"}]}).web
    assert web.listen_address == ":9890"
    assert (web.host, web.port) == ("", 9890)
    assert web.telemetry_path == "/metrics"
    assert web.disable_exporter_metrics is False


def test_listen_address_takes_a_string_or_a_list() -> None:
    def web(value: object) -> WebSettings:
        data = {
            "web": {"listen_address": value},
            "datastores": [{"datastore_id": DS, "image_sets": "all"}],
        }
        return parse_config(data).web

    assert web("127.0.0.1:9890").listen_addresses == (ListenAddress("127.0.0.1", 9890),)
    assert web([":9890", "[::1]:9891"]).listen_addresses == (
        ListenAddress("", 9890),
        ListenAddress("::1", 9891),
    )
    assert web([":9890", "[::1]:9891"]).listen_address == ":9890, [::1]:9891"


def test_web_flags_win_over_the_file() -> None:
    config = parse_config(
        {
            "web": {
                "listen_address": "127.0.0.1:1",
                "config_file": "a.yml",
                "telemetry_path": "/a",
                "disable_exporter_metrics": False,
            },
            "datastores": [{"datastore_id": DS, "image_sets": "all"}],
        }
    )
    web = override_web(config.web, [":2", "127.0.0.1:3"], "b.yml", "/b", True)
    assert web.listen_addresses == (ListenAddress("", 2), ListenAddress("127.0.0.1", 3))
    assert (web.config_file, web.telemetry_path, web.disable_exporter_metrics) == (
        "b.yml",
        "/b",
        True,
    )
    # No flag given: the file's settings stay.
    assert override_web(config.web) == config.web


def test_bad_web_flags_are_named_in_one_line() -> None:
    with pytest.raises(ConfigError) as error:
        override_web(WebSettings(), ["localhost"], None, "/-/ready")
    message = str(error.value)
    assert "\n" not in message
    assert "--web.listen-address: must be host:port or :port" in message
    assert "got 'localhost'" in message
    assert "--web.telemetry-path: must not be /-/ready" in message


def test_an_address_listed_twice_is_refused_but_port_0_may_repeat() -> None:
    with pytest.raises(
        ConfigError, match=r"^--web.listen-address: lists an address more than once$"
    ):
        override_web(WebSettings(), [":9890", ":9890"])
    web = override_web(WebSettings(), ["127.0.0.1:0", "127.0.0.1:0"])
    assert web.listen_addresses == (ListenAddress("127.0.0.1", 0),) * 2


def test_initial_lookback_defaults_to_two_intervals_only_when_sharded() -> None:
    base = {"datastores": [{"datastore_id": "1" * 32, "image_sets": ["a" * 32]}]}
    assert parse_config({**base, "poll": {"interval_seconds": 30}}).initial_lookback_seconds == 0
    sharded = parse_config({**base, "poll": {"interval_seconds": 30}, "total_shards": 3})
    assert sharded.initial_lookback_seconds == 60
    explicit = {**base, "total_shards": 3, "discovery": {"initial_lookback_seconds": 0}}
    assert parse_config(explicit).initial_lookback_seconds == 0
