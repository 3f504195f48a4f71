"""Settings: command-line option > USERDATA_* variable > default, and refusing unusable values.

Every test passes an explicit environment to ``resolve``: the real one is never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from userdata.settings import Settings, SettingsError, resolve

DEFAULTS: dict[str, Any] = {
    "data_dir": Path("minio-data"),
    "s3_endpoint": None,
    "bucket": "datalake",
    "prefix": "src-data/",
    "output_key": "processed_data/output.csv",
    "host": "127.0.0.1",
    "port": 8080,
    "rescan_interval": 60.0,
    "database_url": None,
    "webhook_token": None,
    "log_level": "info",
}


def public(settings: Settings) -> dict[str, Any]:
    """The settings a user can give, as a dict."""
    return {name: getattr(settings, name) for name in DEFAULTS}


def test_defaults_when_nothing_is_given() -> None:
    assert public(resolve({}, {})) == DEFAULTS


def test_options_given_as_none_count_as_not_given() -> None:
    assert public(resolve(dict.fromkeys(DEFAULTS), {})) == DEFAULTS


def test_variables_of_other_programs_are_ignored() -> None:
    assert public(resolve({}, {"PORT": "1", "DATA_DIR": "x", "USERDATA": "y", "userdata_port": "2"})) == DEFAULTS


# (option, text given as option, text given as variable, what the option gives, what the variable gives)
PRECEDENCE = [
    pytest.param("port", "9000", "8000", 9000, 8000, id="port"),
    pytest.param("bucket", "from-option", "from-variable", "from-option", "from-variable", id="bucket"),
    pytest.param("data_dir", "/opt/a", "/opt/b", Path("/opt/a"), Path("/opt/b"), id="data_dir"),
    pytest.param("prefix", "users", "people/", "users/", "people/", id="prefix"),
    pytest.param("rescan_interval", "0", "2.5", 0.0, 2.5, id="rescan_interval"),
    pytest.param("host", "0.0.0.0", "::1", "0.0.0.0", "::1", id="host"),
    pytest.param("log_level", "DEBUG", "Warning", "debug", "warning", id="log_level"),
    pytest.param("output_key", "out/a.csv", "out/b.csv", "out/a.csv", "out/b.csv", id="output_key"),
]


@pytest.mark.parametrize(("name", "option", "variable", "from_option", "from_variable"), PRECEDENCE)
def test_option_wins_over_variable(name: str, option: str, variable: str, from_option: Any, from_variable: Any) -> None:
    settings = resolve({name: option}, {"USERDATA_" + name.upper(): variable})
    assert getattr(settings, name) == from_option
    assert public(settings) == DEFAULTS | {name: from_option}


@pytest.mark.parametrize(("name", "option", "variable", "from_option", "from_variable"), PRECEDENCE)
def test_variable_wins_over_default(
    name: str, option: str, variable: str, from_option: Any, from_variable: Any
) -> None:
    settings = resolve({name: None}, {"USERDATA_" + name.upper(): variable})
    assert public(settings) == DEFAULTS | {name: from_variable}


def test_several_options_and_variables_mix() -> None:
    settings = resolve(
        {"port": "9001", "bucket": None},
        {"USERDATA_PORT": "9002", "USERDATA_BUCKET": "lake", "USERDATA_RESCAN_INTERVAL": "5"},
    )
    assert public(settings) == DEFAULTS | {"port": 9001, "bucket": "lake", "rescan_interval": 5.0}


@pytest.mark.parametrize("name", ["port", "bucket", "prefix", "rescan_interval", "log_level", "data_dir"])
def test_an_empty_variable_counts_as_unset(name: str) -> None:
    assert public(resolve({}, {"USERDATA_" + name.upper(): ""})) == DEFAULTS


def test_an_empty_variable_does_not_hide_a_valid_option() -> None:
    assert resolve({"port": "9000"}, {"USERDATA_PORT": ""}).port == 9000


def test_a_bad_variable_is_not_read_when_the_option_is_given() -> None:
    assert resolve({"port": "9000"}, {"USERDATA_PORT": "not a port"}).port == 9000


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param("src-data", "src-data/", id="adds-slash"),
        pytest.param("src-data/", "src-data/", id="kept"),
        pytest.param("/src-data/", "src-data/", id="leading-slash-dropped"),
        pytest.param("a/b", "a/b/", id="nested"),
        pytest.param("/", "", id="root-slash"),
        pytest.param("", "", id="empty"),
    ],
)
def test_prefix_is_normalised(given: str, expected: str) -> None:
    assert resolve({"prefix": given}, {}).prefix == expected
    assert Settings(prefix=given).prefix == expected


def test_an_output_key_in_a_sub_folder_of_the_prefix_is_allowed() -> None:
    assert resolve({"output_key": "src-data/processed/output.csv"}, {}).output_key == "src-data/processed/output.csv"


# (option, bad value, what the message must name when given as an option)
BAD_VALUES = [
    pytest.param("port", "x", id="port-x"),
    pytest.param("port", "70000", id="port-70000"),
    pytest.param("port", "-1", id="port-negative"),
    pytest.param("port", "80.5", id="port-fraction"),
    pytest.param("rescan_interval", "-1", id="rescan_interval-negative"),
    pytest.param("rescan_interval", "nan", id="rescan_interval-nan"),
    pytest.param("rescan_interval", "inf", id="rescan_interval-inf"),
    pytest.param("rescan_interval", "soon", id="rescan_interval-word"),
    pytest.param("bucket", "a/b", id="bucket-slash"),
    pytest.param("log_level", "loud", id="log_level-loud"),
    pytest.param("output_key", "src-data/output.csv", id="output_key-in-source-prefix"),
    pytest.param("output_key", "processed_data/", id="output_key-folder"),
    pytest.param("database_url", "mysql://db.example/users", id="database_url-not-postgresql"),
    pytest.param("database_url", "host=db.example dbname=users", id="database_url-not-a-url"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_a_bad_option_raises_settings_error_naming_the_option(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        resolve({name: value}, {})
    option = "--" + name.replace("_", "-")
    assert str(raised.value).startswith(option + ":"), str(raised.value)


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_a_bad_variable_raises_settings_error_naming_the_variable(name: str, value: str) -> None:
    variable = "USERDATA_" + name.upper()
    with pytest.raises(SettingsError) as raised:
        resolve({}, {variable: value})
    # The user set the variable, not the option: the message must point at what they set.
    assert str(raised.value).startswith(variable + ":"), str(raised.value)


def test_an_output_key_inside_a_normalised_prefix_is_refused() -> None:
    with pytest.raises(SettingsError, match="--output-key"):
        resolve({"prefix": "in", "output_key": "in/output.csv"}, {})


def test_with_the_root_prefix_an_output_key_at_the_top_is_refused() -> None:
    with pytest.raises(SettingsError, match="--output-key"):
        resolve({"prefix": "/", "output_key": "output.csv"}, {})


def test_repr_hides_the_webhook_token_and_the_database_password() -> None:
    settings = resolve(
        {"webhook_token": "tok-s3cr3t", "database_url": "postgresql://app:pa55w0rd@db.example:5432/users"}, {}
    )
    text = repr(settings)
    assert "tok-s3cr3t" not in text, text
    assert "pa55w0rd" not in text, text
    assert "postgresql://app:***@db.example:5432/users" in text, text
    assert "webhook_token='***'" in text, text
    assert str(settings) == text


def test_repr_hides_secrets_given_as_variables() -> None:
    text = repr(
        resolve({}, {"USERDATA_WEBHOOK_TOKEN": "tok-from-env", "USERDATA_DATABASE_URL": "postgres://u:envpass@h/db"})
    )
    assert "tok-from-env" not in text and "envpass" not in text, text


def test_repr_keeps_a_database_url_without_password_and_the_other_settings() -> None:
    text = repr(resolve({"database_url": "postgresql://db.example/users", "port": "9000"}, {}))
    assert "database_url='postgresql://db.example/users'" in text, text
    assert "port=9000" in text and "webhook_token=None" in text, text
