"""config.toml: what a contributor writes is read, and a bad value is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from node._errors import ConfigError
from node.config import CONFIG_FILE, load_config


def test_job_cpus_are_read(tmp_path: Path) -> None:
    assert load_config(tmp_path).contributor.job_cpus == ()
    (tmp_path / CONFIG_FILE).write_text("[contributor]\njob_cpus = [0, 1]\n")
    assert load_config(tmp_path).contributor.job_cpus == (0, 1)


def test_a_negative_cpu_is_refused(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("[contributor]\njob_cpus = [-1]\n")
    with pytest.raises(ConfigError, match="job_cpus"):
        load_config(tmp_path)


def test_job_cpus_the_daemon_may_not_use_stop_it_at_start(tmp_path: Path) -> None:
    import os

    import trio

    from node.config import ContributorConfig, NodeConfig
    from node.daemon import run_daemon

    beyond = max(os.sched_getaffinity(0)) + 1
    config = NodeConfig(contributor=ContributorConfig(job_cpus=(0, beyond)))
    with pytest.raises(ConfigError, match="job_cpus"):
        trio.run(run_daemon, tmp_path / "node", config)
    assert not (tmp_path / "node").exists()  # refused before anything was written


def test_api_limits_are_read(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text(
        "[requester]\nmax_price_limit = 5\n"
        "[coordinator]\nfaucet = true\nfaucet_per_minute = 2\nfaucet_account_per_minute = 1\n"
    )
    config = load_config(tmp_path)
    assert config.requester.max_price_limit == 5
    assert config.coordinator.faucet is True
    assert (config.coordinator.faucet_per_minute, config.coordinator.faucet_account_per_minute) == (
        2,
        1,
    )
    (tmp_path / CONFIG_FILE).write_text("[coordinator]\nfaucet_per_minute = 0\n")
    with pytest.raises(ConfigError, match="faucet_per_minute"):
        load_config(tmp_path)
