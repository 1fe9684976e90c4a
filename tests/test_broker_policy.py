"""Access policies: who may read which locations and sensor types."""

from __future__ import annotations

from pathlib import Path

import pytest

from fades.broker import AccessPolicy
from fades.broker.base import DataSummary
from fades.errors import AccessDenied, BrokerError
from fades.task import DataOp, Selector

POLICY = {
    "tenants": {
        "acme": {"locations": ["room1", "room2"], "sensor_types": ["temperature", "humidity"]},
        "admin": {"locations": "*", "sensor_types": "*"},
        "lights": {"locations": "*", "sensor_types": ["light"]},
    }
}


def op(name: str = "temps", **select: object) -> DataOp:
    return DataOp(name=name, select=Selector.model_validate(select))


@pytest.fixture
def policy() -> AccessPolicy:
    return AccessPolicy.from_mapping(POLICY)


def test_a_tenant_may_read_what_it_names_within_its_grant(policy: AccessPolicy) -> None:
    policy.check("acme", op(location=["room1"], sensor_type="temperature"))
    policy.check("admin", op())
    policy.check("lights", op(sensor_type="light"))


def test_denial_names_the_refused_locations_and_the_op(policy: AccessPolicy) -> None:
    with pytest.raises(AccessDenied) as err:
        policy.check("acme", op(location=["room1", "room3"], sensor_type="temperature"))
    assert str(err.value) == (
        "data op 'temps': tenant 'acme' may not read location(s) room3 (allowed: room1, room2)"
    )
    assert err.value.context == {"tenant": "acme", "op": "temps"}


def test_denial_names_refused_sensor_types_too(policy: AccessPolicy) -> None:
    with pytest.raises(AccessDenied, match=r"sensor type\(s\) audio, co2 \(allowed: humidity"):
        policy.check("acme", op(location="room1", sensor_type=["audio", "co2", "humidity"]))


def test_an_open_selector_is_refused_to_a_restricted_tenant(policy: AccessPolicy) -> None:
    with pytest.raises(AccessDenied) as err:
        policy.check("acme", op(sensor_type="temperature"))
    assert "may not read all locations; name them (allowed: room1, room2)" in str(err.value)
    with pytest.raises(AccessDenied, match="may not read all sensor types"):
        policy.check("lights", op(location="room4"))


def test_an_unknown_tenant_may_read_nothing(policy: AccessPolicy) -> None:
    with pytest.raises(AccessDenied, match="tenant 'mallory' has no access policy"):
        policy.check("mallory", op(location="room1", sensor_type="temperature"))


def test_allow_all_lets_anyone_read_everything() -> None:
    AccessPolicy.allow_all().check("anyone", op())


def test_policy_loads_from_a_yaml_file_and_round_trips(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text(
        "tenants:\n"
        "  acme:\n"
        "    locations: [room1, room2]\n"
        "    sensor_types: [temperature, humidity]\n"
        "  admin:\n"
        "    locations: '*'\n"
        "    sensor_types: '*'\n"
        "  lights:\n"
        "    locations: '*'\n"
        "    sensor_types: [light]\n"
    )
    loaded = AccessPolicy.load(p)
    assert loaded.to_mapping() == AccessPolicy.from_mapping(POLICY).to_mapping()
    assert AccessPolicy.load(loaded.to_mapping()).to_mapping() == loaded.to_mapping()


def test_a_malformed_policy_names_the_tenant_and_field() -> None:
    with pytest.raises(BrokerError, match="tenant 'x': locations must be"):
        AccessPolicy.from_mapping({"tenants": {"x": {"locations": 3, "sensor_types": "*"}}})
    with pytest.raises(BrokerError, match="lacks 'sensor_types'"):
        AccessPolicy.from_mapping({"tenants": {"x": {"locations": "*"}}})
    with pytest.raises(BrokerError, match="unknown key"):
        AccessPolicy.from_mapping(
            {"tenants": {"x": {"locations": "*", "sensor_types": "*", "devices": "*"}}}
        )


def test_visible_filters_summaries_to_what_the_tenant_may_read(policy: AccessPolicy) -> None:
    summaries = [
        DataSummary("room1", "temperature", "°C", 1, 0.0, 0.0),
        DataSummary("room3", "temperature", "°C", 1, 0.0, 0.0),
        DataSummary("room1", "audio", "dB", 1, 0.0, 0.0),
    ]
    assert [s.location for s in policy.visible("acme", summaries)] == ["room1"]
    assert policy.visible("nobody", summaries) == []
