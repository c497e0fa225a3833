"""Settings: the environment with the documented prefix, explicit values first."""

from __future__ import annotations

import pydantic
import pytest

from kubectl_executor.settings import ENV_PREFIX, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    return monkeypatch


def test_prefix_is_documented_and_names_each_field() -> None:
    assert ENV_PREFIX == "KUBECTL_EXECUTOR_"
    assert Settings.env_name("namespace") == "KUBECTL_EXECUTOR_NAMESPACE"
    with pytest.raises(KeyError):
        Settings.env_name("nope")


def test_environment_is_read_and_typed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KUBECTL_EXECUTOR_NAMESPACE", "team-a")
    clean_env.setenv("KUBECTL_EXECUTOR_TIMEOUT", "42")
    clean_env.setenv("kubectl_executor_image", "python:3.12-slim")  # case-insensitive
    s = Settings()
    assert (s.namespace, s.timeout, s.image) == ("team-a", 42, "python:3.12-slim")


def test_explicit_values_win_and_none_means_unset(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KUBECTL_EXECUTOR_NAMESPACE", "from-env")
    assert load_settings(namespace="explicit").namespace == "explicit"
    assert load_settings(namespace=None).namespace == "from-env"


def test_executor_kwargs_carry_only_what_is_set(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KUBECTL_EXECUTOR_CONTEXT", "prod")
    kwargs = Settings().executor_kwargs(timeout=5, image=None)
    assert kwargs == {"context": "prod", "timeout": 5}


def test_empty_variables_count_as_unset(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KUBECTL_EXECUTOR_NAMESPACE", "")
    assert Settings().namespace is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("TIMEOUT", "0"), ("TIMEOUT", "soon"), ("NAMESPACE", "Not_A_Label"), ("MAX_OUTPUT_BYTES", "10")],
)
def test_bad_values_are_refused_naming_the_field(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(ENV_PREFIX + name, value)
    with pytest.raises(pydantic.ValidationError, match=name.lower()):
        Settings()


def test_the_token_is_not_a_setting(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KUBECTL_EXECUTOR_KUBE_TOKEN", "secret")
    assert "secret" not in repr(Settings().model_dump())
