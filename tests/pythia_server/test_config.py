from __future__ import annotations

import pytest

from pythia_server.config import GatewayConfig


def test_environment_then_overrides() -> None:
    env = {"PYTHIA_DB_PATH": "/tmp/x.db", "PYTHIA_BLOCK_SIZE": "16", "PYTHIA_SESSION_IDLE_TIMEOUT_S": "5.5",
           "UNRELATED": "1"}
    config = GatewayConfig.from_env(env, block_size=32, port=None)
    assert (config.db_path, config.block_size, config.session_idle_timeout_s, config.port) == ("/tmp/x.db", 32, 5.5,
                                                                                               8000)
    assert GatewayConfig.from_env({}) == GatewayConfig()


@pytest.mark.parametrize(("env", "message"), [
    ({"PYTHIA_BLOCK_SIZE": "big"}, "PYTHIA_BLOCK_SIZE='big' is not a valid int"),
    ({"PYTHIA_BLOCK_SIZE": "0"}, "block_size must be positive"),
    ({"PYTHIA_PORT": "70000"}, "port 70000 out of range"),
])
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        GatewayConfig.from_env(env)
