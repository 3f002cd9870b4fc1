"""config.toml: what a contributor writes is read, and a bad value is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from node._errors import ConfigError
from node.config import CONFIG_FILE, EDITABLE, NodeConfig, load_config
from node.config._edit import apply_changes


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


# --- sources, environment, errors naming the key, written back, the spec ---------------


def test_each_setting_comes_from_default_file_env_or_flag_in_that_order(tmp_path: Path) -> None:
    from node.config import resolve_config

    (tmp_path / CONFIG_FILE).write_text(
        'chain_id = "from-file"\n[contributor]\nprice_floor = 5\nmax_concurrency = 3\n'
        '[contributor.availability]\ndays = "Mon-Fri"\n'
    )
    env = {
        "AIMX_CONTRIBUTOR_MAX_CONCURRENCY": "7",
        "AIMX_CONTRIBUTOR_JOB_CPUS": "0, 1",
        "AIMX_CONTRIBUTOR_PAUSE_ON_USE_GPU": "false",
        "AIMX_CHAIN_ID": "from-env",
        "AIMX_DATA_DIR": "/elsewhere",  # not a setting: ignored
    }
    config, sources = resolve_config(tmp_path, env=env, flags={"chain_id": "from-flag"})
    assert config.chain_id == "from-flag" and sources["chain_id"] == "flag"
    assert config.contributor.price_floor == 5 and sources["contributor.price_floor"] == "file"
    assert config.contributor.max_concurrency == 7
    assert sources["contributor.max_concurrency"] == "env"
    assert config.contributor.job_cpus == (0, 1)
    assert config.contributor.pause_on_use.gpu is False
    assert config.contributor.availability.days == "Mon-Fri"
    assert sources["contributor.availability.days"] == "file"
    assert sources["contributor.warm_workers"] == "default"
    assert sources["bootstrap"] == "default"


def test_bootstrap_comes_from_the_file_without_the_option(tmp_path: Path) -> None:
    published = "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWLRPJAA5o6Lv5ftBZkqq1V3QtZ1wMLqdfxtDNyHAmJG1G"
    (tmp_path / CONFIG_FILE).write_text(f'bootstrap = ["{published}"]\n')
    assert load_config(tmp_path, bootstrap=None).bootstrap == (published,)
    assert load_config(tmp_path, bootstrap=("/ip4/1.2.3.4/tcp/1",)).bootstrap == (
        "/ip4/1.2.3.4/tcp/1",
    )


def test_a_bad_value_names_the_key_and_where_it_came_from(tmp_path: Path) -> None:
    from node.config import resolve_config

    (tmp_path / CONFIG_FILE).write_text(
        '[contributor.availability]\nhours = "18:00"\ntime_zone = "Mars/Olympus"\n'
    )
    with pytest.raises(ConfigError) as info:
        resolve_config(tmp_path, env={})
    text = str(info.value)
    assert "contributor.availability.hours: '18:00' is not a range of hours" in text, text
    assert "contributor.availability.time_zone: 'Mars/Olympus' is not a known time zone" in text
    assert str(tmp_path / CONFIG_FILE) in text and len(text.splitlines()) == 2
    (tmp_path / CONFIG_FILE).write_text("")
    with pytest.raises(ConfigError) as info:
        resolve_config(tmp_path, env={"AIMX_CONTRIBUTOR_PRICE_FLOOR": "-1"})
    assert "contributor.price_floor:" in str(info.value)
    assert "from AIMX_CONTRIBUTOR_PRICE_FLOOR" in str(info.value)


def test_changes_are_validated_and_written_back_keeping_other_settings(tmp_path: Path) -> None:
    import tomllib

    from node.config import SettingError, apply_changes, flatten, write_changes

    (tmp_path / CONFIG_FILE).write_text(
        '# mine\nroles = ["contributor"]\n[contributor]\nwarm_workers = 1\n'
        "[requester]\nmax_price = 9\n"
    )
    config = load_config(tmp_path)
    changes = flatten(
        {"contributor": {"price_floor": 2500, "availability": {"hours": "18:00-08:00"}}}
    )
    assert changes == {
        "contributor.price_floor": 2500,
        "contributor.availability.hours": "18:00-08:00",
    }
    new = apply_changes(config, changes)
    assert new.contributor.price_floor == 2500 and new.contributor.warm_workers == 1
    write_changes(tmp_path, changes)
    raw = tomllib.loads((tmp_path / CONFIG_FILE).read_text())
    assert raw == {
        "roles": ["contributor"],
        "contributor": {
            "warm_workers": 1,
            "price_floor": 2500,
            "availability": {"hours": "18:00-08:00"},
        },
        "requester": {"max_price": 9},
    }
    assert load_config(tmp_path) == new
    assert (tmp_path / CONFIG_FILE).stat().st_mode & 0o777 == 0o600
    for bad, key in (
        ({"contributor.price_floor": -1}, "contributor.price_floor"),
        ({"contributor.availability.days": "Someday"}, "contributor.availability.days"),
        ({"contributor.warm_workers": 3}, "contributor.warm_workers"),  # not editable
        ({"contributor.colour": "blue"}, "contributor.colour"),
    ):
        with pytest.raises(SettingError) as info:
            apply_changes(config, bad)
        assert info.value.key == key and str(info.value).startswith(key + ":"), info.value


def test_every_setting_is_described_and_in_the_spec() -> None:
    from node.config import DOC_BEGIN, DOC_END, config_doc, config_keys

    missing = [k for k, f in config_keys().items() if not f.description]
    assert not missing, f"settings without a description: {missing}"
    spec = (Path(__file__).parents[2] / "specs" / "config.md").read_text()
    table = DOC_BEGIN + spec.partition(DOC_BEGIN)[2].partition(DOC_END)[0] + DOC_END
    assert table == config_doc(), "specs/config.md is stale: python -m node.config specs/config.md"


def _int_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo]]:
    found: list[tuple[str, FieldInfo]] = []
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            found += _int_fields(kind, f"{prefix}{name}.")
        elif kind is int:
            found.append((f"{prefix}{name}", info))
    return found


def test_every_integer_setting_is_bounded_within_a_u64() -> None:
    # Review round 69, R69-2: price_floor had no upper bound; 2^64 written through
    # PUT /api/config killed the daemon at its next advert, and every start after.
    fields = _int_fields(NodeConfig)
    assert len(fields) > 20
    for name, info in fields:
        highest = [m.le for m in info.metadata if getattr(m, "le", None) is not None]
        assert highest and highest[0] < 2**63, f"{name} has no bound below 2^63"


@pytest.mark.parametrize("key", sorted(EDITABLE))
def test_no_editable_setting_takes_a_value_past_a_u64(key: str) -> None:
    config = NodeConfig()
    value: object = config
    for part in key.split("."):
        value = getattr(value, part)
    if not isinstance(value, int) or isinstance(value, bool):
        return
    with pytest.raises(ConfigError, match=key.rsplit(".", 1)[-1]):
        apply_changes(config, {key: 2**64})


def test_an_escrow_slack_past_what_providers_accept_is_refused() -> None:
    # R69-5: 3,000,000 blocks locked each job's escrow for weeks, and every contributor
    # counted the requester as misbehaving ("absurd times").
    with pytest.raises(ValueError, match="expiry_slack_blocks"):
        NodeConfig.model_validate({"requester": {"expiry_slack_blocks": 3_000_000}})
