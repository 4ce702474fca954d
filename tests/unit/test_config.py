"""Config loading: the example, defaults, and one file per bad config with its one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted((ROOT / "tests" / "data" / "config").glob("*.yaml"))
DS = "12345678901234567890123456789012"


def test_example_config_is_valid_and_documents_defaults() -> None:
    config = load_config(ROOT / "config.example.yaml")
    assert config.datastores[0].datastore_id == DS
    assert config.poll.interval_seconds == 60
    assert config.web.listen_address == "127.0.0.1:9890"
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
