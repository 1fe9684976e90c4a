"""devices.yaml validation, the shop floor's physics, and the pipeline 'actuate' field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fades.broker.policy import AccessPolicy
from fades.devices.actuate import command_of
from fades.devices.floor import ShopFloor, shop_floor
from fades.devices.spec import load_devices, parse_devices, registry_entries
from fades.errors import DeviceSpecError, PipelineValidationError
from fades.pipelines.spec import parse_pipeline

FAN = {"device": "fan-1", "location": "room1", "type": "fan", "commands": ["on", "off"],
       "tenants": ["facilities"]}  # fmt: skip


def test_parse_a_declaration() -> None:
    devs = parse_devices(
        {
            "sensors": [
                {"device": "m1-vib", "location": "machine1", "type": "vibration", "unit": "mm/s"}
            ],
            "actuators": [FAN],
        },
        "edge1",
    )
    assert devs[0].topic == "sensors/edge1/machine1/vibration" and devs[0].unit == "mm/s"
    assert devs[1].topic == "actuators/edge1/fan-1/set" and devs[1].commands == ("on", "off")
    assert devs[1].may_command("facilities") and not devs[1].may_command("visitor")
    assert not devs[0].may_command("facilities")


def test_unquoted_on_off_are_commands(tmp_path: Path) -> None:
    (tmp_path / "devices.yaml").write_text(
        "actuators:\n  - {device: f, location: r, type: fan, commands: [on, off], tenants: '*'}\n"
    )
    (dev,) = load_devices(tmp_path, "edge1")
    assert dev.commands == ("on", "off") and dev.tenants is None and dev.may_command("anyone")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"pumps": []}, "unknown key(s) pumps"),
        ({"actuators": [FAN | {"device": "a.b"}]}, "device must be 1-64 letters"),
        ({"actuators": [{k: v for k, v in FAN.items() if k != "commands"}]}, "needs commands"),
        ({"actuators": [FAN | {"commands": []}]}, "non-empty list"),
        ({"actuators": [FAN | {"commands": ["on", "on"]}]}, "'on' is listed twice"),
        ({"actuators": [FAN | {"tenants": "facilities"}]}, "tenants must be '*' or a list"),
        ({"actuators": [FAN, FAN]}, "actuators[1] (fan-1): device name declared twice"),
        ({"sensors": [{"device": "s", "location": "r", "type": "t", "colour": 1}]},
         "unknown field(s) colour"),
    ],
)  # fmt: skip
def test_bad_declarations_name_the_entry(obj: object, message: str) -> None:
    with pytest.raises(DeviceSpecError) as err:
        parse_devices(obj, "edge1")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_yaml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "devices.yaml").write_text("actuators: [\n")
    with pytest.raises(DeviceSpecError, match="not valid YAML") as err:
        load_devices(tmp_path, "edge1")
    assert "\n" not in str(err.value)


def test_registry_entries_follow_the_access_policy() -> None:
    devs = parse_devices(
        {"sensors": [{"device": "co2", "location": "room1", "type": "co2"}], "actuators": [FAN]},
        "edge1",
    )
    policy = AccessPolicy.from_mapping({"tenants": {
        "facilities": {"locations": "*", "sensor_types": "*"},
        "visitor": {"locations": ["room2"], "sensor_types": ["temperature"]},
    }})  # fmt: skip
    co2, fan = registry_entries(devs, policy)
    assert co2["readers"] == ["facilities"] and fan["readers"] == ["facilities"]
    everyone = registry_entries(devs, None)
    assert everyone[0]["readers"] is None and everyone[1]["tenants"] == ["facilities"]


def test_the_fan_lowers_co2_and_a_stopped_conveyor_the_vibration() -> None:
    decl = shop_floor(["room1"], ["co2"], ["facilities"])
    floor = ShopFloor(parse_devices(decl, "edge1"), tau_s=10.0)
    t0 = 1_800_000_000.0
    high = floor.adjust("room1", "co2", t0, 500.0)
    assert high == pytest.approx(420 + 80 + 600)
    assert floor.apply("fan-room1", "on", {"speed": 100}, ts=t0) == ("applied", "")
    assert floor.adjust("room1", "co2", t0 + 60, 500.0) < 420 + 680 * 0.2
    assert floor.apply("fan-room1", "on", {"speed": 500}, ts=t0)[0] == "refused"
    assert floor.state("fan-room1") == {"power": "on", "speed": 100}
    running = floor.machine_value("machine1", "vibration", t0 + 100)
    floor.apply("conveyor-machine1", "stop", {}, ts=t0 + 100)
    assert floor.machine_value("machine1", "vibration", t0 + 160) < running / 4


def test_only_a_finale_may_actuate() -> None:
    def stage(name: str, **kw: object) -> dict[str, object]:
        return {"name": name, "function": {"artifact": "f"}} | kw

    base = {"name": "p", "credentials": {"tenant": "t"}}
    ok = parse_pipeline(base | {"stages": [stage("a"), stage(
        "b", after=["a"], actuate={"device": "edge1/fan-1"})]})  # fmt: skip
    assert ok.stage("b").actuate is not None and ok.stage("b").actuate.node == "edge1"
    with pytest.raises(PipelineValidationError, match=r"stages\.a\.actuate: only a finale"):
        parse_pipeline(base | {"stages": [stage("a", actuate={"device": "edge1/fan-1"}),
                                          stage("b", after=["a"])]})  # fmt: skip
    with pytest.raises(PipelineValidationError, match="must be '<node>/<device>'"):
        parse_pipeline(base | {"stages": [stage("a", actuate={"device": "fan-1"})]})


def test_a_result_is_a_command_or_null() -> None:
    assert command_of(None) is None
    assert command_of({"command": "on"}) == ("on", {})
    assert command_of({"command": "on", "args": {"speed": 5}}) == ("on", {"speed": 5})
    for bad in ({"cmd": "on"}, [1], {"command": "on", "extra": 1}, {"command": "on", "args": 1}):
        with pytest.raises(ValueError):
            command_of(bad)


def test_the_shop_floor_declaration_loads(tmp_path: Path) -> None:
    decl = shop_floor(["room3", "room4"], ["temperature", "co2"], ["facilities"])
    (tmp_path / "devices.yaml").write_text(yaml.safe_dump(decl))
    devs = load_devices(tmp_path, "edge2")
    kinds = {d.device: d.kind for d in devs}
    assert kinds["fan-room3"] == kinds["conveyor-machine4"] == kinds["light-machine3"] == "actuator"
    assert kinds["machine4-vibration-1"] == kinds["room3-co2-1"] == "sensor"
