"""The operator console, tested as a person would use it: a real headless Chromium against a
real three-node cluster (nats-server, controller and node agents as separate processes).

The tests run in file order on one cluster; the last one kills a node.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fades.cluster import LocalCluster, find_examples
from fades.errors import PipelineValidationError, TaskValidationError
from fades.functions.build import build_python
from fades.pipelines.spec import parse_pipeline_text
from fades.task import parse_task_text

from .conftest import WAIT_S, sign_in, wait_for

TASK = """
credentials: {tenant: facilities}
data:
  - {name: temperature, select: {location: room1, sensor_type: temperature}}
function: {artifact: mean_core, memory_mib: 16, time_budget_ms: 20000}
"""
BAD_TASK = """
credentials: {tenant: facilities}
data:
  - {name: temperature, select: {location: room1, sensor_type: temperature}, bogus: 1}
function: {artifact: mean_core, memory_mib: -3}
"""


def Select(element: Any) -> Any:
    from selenium.webdriver.support.ui import Select as _Select

    return _Select(element)


def _click(driver: Any, css: str) -> None:
    """Click the element ``css`` names, found afresh until it works (views are redrawn
    when their data change, which makes a found element stale)."""

    def go() -> bool:
        driver.find_element(_by("CSS_SELECTOR"), css).click()
        return True

    wait_for(go, what=f"clicking {css}")


def _by(kind: str) -> Any:
    from selenium.webdriver.common.by import By

    return getattr(By, kind)


def _cookie_client(cluster: LocalCluster, token: str) -> httpx.Client:
    return httpx.Client(base_url=cluster.url, cookies={"fades_console": token}, timeout=30.0)


# --- sign-in, cookie and actions (no browser needed) -------------------------------------------
def test_sign_in_sets_a_strict_http_only_cookie_and_refuses_unknown_tokens(
    cluster: LocalCluster,
) -> None:
    with httpx.Client(base_url=cluster.url, timeout=30.0) as http:
        page = http.get("/")
        assert page.status_code == 200 and 'id="login-form"' in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        bad = http.post("/console/login", data={"token": "not-a-token-at-all"})
        assert bad.status_code == 401 and "unknown bearer token" in bad.text
        assert http.get("/console/events").status_code == 401  # no cookie: no feed
        good = http.post("/console/login", data={"token": cluster.token})
        assert good.status_code == 303
        cookie = good.headers["set-cookie"]
        assert cookie.startswith(f"fades_console={cluster.token};")
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        assert 'id="tenant">facilities<' in http.get("/").text  # the cookie signs the page in
        out = http.post("/console/logout")
        assert out.status_code == 303 and 'fades_console=""' in out.headers["set-cookie"]
        assert 'id="login-form"' in http.get("/").text  # signed out


def test_console_actions_need_the_console_header_and_stay_within_the_allowed_routes(
    cluster: LocalCluster,
) -> None:
    with _cookie_client(cluster, cluster.token) as http:
        plain = http.get("/console/api/v1/nodes")
        assert plain.status_code == 400 and "X-Fades-Console" in plain.json()["detail"]
        head = {"X-Fades-Console": "1"}
        upload = http.post("/console/api/v1/functions", headers=head, content=b"x")
        assert upload.status_code == 400
        assert "does not forward POST /v1/functions" in upload.json()["detail"]
        nodes = http.get("/console/api/v1/nodes", headers=head)  # a good request afterwards
        assert nodes.status_code == 200 and len(nodes.json()) == 3
    with _cookie_client(cluster, "wrong-token-123") as http:
        refused = http.get("/console/api/v1/nodes", headers={"X-Fades-Console": "1"})
        assert refused.status_code == 401


# --- in the browser ----------------------------------------------------------------------------
def _requests_of(driver: Any) -> list[str]:
    """Every URL the page requested, from the DevTools network log."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def test_the_page_loads_with_no_request_leaving_the_machine_and_shows_three_nodes(
    cluster: LocalCluster, open_browser: Any
) -> None:
    d = open_browser()
    sign_in(d, cluster, cluster.token)
    rows = wait_for(
        lambda: (
            (r := d.find_elements(_by("CSS_SELECTOR"), "#fleet-table tbody tr.up"))
            and len(r) == 3
            and r
        ),
        what="three nodes up in the fleet view",
    )
    assert sorted(r.get_attribute("data-node") for r in rows) == ["edge1", "edge2", "edge3"]
    for view in ("tasks", "pipelines", "stateful", "sensors", "placement", "devices", "submit"):
        d.find_element(_by("CSS_SELECTOR"), f'nav a[data-view="{view}"]').click()
        wait_for(lambda v=view: d.find_element(_by("ID"), f"view-{v}").is_displayed(), what=view)
    urls = _requests_of(d)
    resources = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert any(u.endswith("/console/static/console.js") for u in urls)
    assert any(u.endswith("/console/events") for u in urls + resources)
    outside = [u for u in urls + resources if not u.startswith(cluster.url + "/")]
    assert not outside, f"requests left the controller: {outside}"
    assert cluster.url.startswith("http://127.0.0.1:")


def test_a_task_submitted_from_the_page_shows_the_cli_messages_then_its_result(
    cluster: LocalCluster, open_browser: Any
) -> None:
    d = open_browser()
    sign_in(d, cluster, cluster.token)
    d.find_element(_by("CSS_SELECTOR"), 'nav a[data-view="submit"]').click()
    text = d.find_element(_by("ID"), "submit-text")
    # a malformed task: the same message and problems as the CLI prints (fades.task's parser)
    with pytest.raises(TaskValidationError) as cli:
        parse_task_text(BAD_TASK, source="the pasted task")
    text.send_keys(BAD_TASK)
    d.find_element(_by("ID"), "submit-go").click()
    shown = wait_for(
        lambda: d.find_elements(_by("CSS_SELECTOR"), "#submit-result .problems li"),
        what="the problems of the malformed task",
    )
    assert [li.text for li in shown] == [f"{f}: {r}" for f, r in cli.value.problems]
    detail = d.find_element(_by("CSS_SELECTOR"), "#submit-result .message").text
    assert str(cli.value) in detail and "TaskValidationError (400)" in detail
    # then a good one (the controller kept serving): its result appears on the page
    text.clear()
    text.send_keys(TASK)
    d.find_element(_by("ID"), "submit-go").click()
    out = d.find_element(_by("ID"), "submit-result")
    wait_for(lambda: out.get_attribute("data-status") == "done", what="the task's result")
    task_id = out.text.split()[1]
    result = json.loads(out.find_element(_by("CSS_SELECTOR"), "pre.task-result").text)
    info = cluster.client().wait(task_id, timeout=WAIT_S)
    assert info["status"] == "done" and result == info["result"]
    # its outcome in the tasks view: timing bar, and the placement decision
    d.find_element(_by("CSS_SELECTOR"), 'nav a[data-view="tasks"]').click()
    _click(d, f'#tasks-table tr[data-task="{task_id}"]')
    bars = wait_for(
        lambda: d.find_elements(_by("CSS_SELECTOR"), "#task-detail svg.timing rect"),
        what="the timing bar",
    )
    assert bars and "compute" in d.find_element(_by("ID"), "task-detail").text


def test_a_pipeline_submitted_from_the_page_shows_its_graph_and_run(
    cluster: LocalCluster, open_browser: Any
) -> None:
    spec = (find_examples() / "pipelines" / "building-report.yaml").read_text()
    bad = spec.replace("scatter: true", "scatter: maybe")
    with pytest.raises(PipelineValidationError) as cli:
        parse_pipeline_text(bad, source="the pasted pipeline")
    d = open_browser()
    sign_in(d, cluster, cluster.token)
    d.find_element(_by("CSS_SELECTOR"), 'nav a[data-view="submit"]').click()
    Select(d.find_element(_by("ID"), "submit-kind")).select_by_value("pipeline")
    text = d.find_element(_by("ID"), "submit-text")
    text.send_keys(bad)
    d.find_element(_by("ID"), "submit-go").click()
    shown = wait_for(
        lambda: d.find_elements(_by("CSS_SELECTOR"), "#submit-result .message"), what="refusal"
    )
    assert str(cli.value) in shown[0].text and "stages.summary.scatter" in shown[0].text
    text.clear()
    text.send_keys(spec)
    d.find_element(_by("ID"), "submit-go").click()
    wait_for(
        lambda: (
            "pipeline building-report version" in d.find_element(_by("ID"), "submit-result").text
        ),
        what="the pipeline deployed",
    )
    d.find_element(_by("CSS_SELECTOR"), 'nav a[data-view="pipelines"]').click()
    box = '.pipeline[data-pipeline="building-report"]'
    wait_for(
        lambda: "done 1" in d.find_element(_by("CSS_SELECTOR"), box).text,
        what="the pipeline's run done",
    )
    graph = d.find_element(_by("CSS_SELECTOR"), box + " svg.graph").text
    for stage in ("summary", "report", "edge1", "edge2", "edge3", "queued"):
        assert stage in graph
    wait_for(
        lambda: d.find_elements(_by("CSS_SELECTOR"), box + " svg.timeline rect.st-done"),
        what="the run's timeline",
    )
    cluster.client().cancel_pipeline("building-report")


def _metrics(cluster: LocalCluster) -> dict[str, float]:
    """``fades_results`` by status, summed over where, from /metrics."""
    text = httpx.get(cluster.url + "/metrics", timeout=30.0).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "fades_results":
            for s in fam.samples:
                if s.name == "fades_results_total":
                    out[s.labels["status"]] = out.get(s.labels["status"], 0) + s.value
    return out


def test_the_console_counts_agree_with_metrics(cluster: LocalCluster, open_browser: Any) -> None:
    client = cluster.client()
    ids = [
        client.submit(parse_task_text(TASK).model_dump(mode="json"))["task_id"] for _ in range(3)
    ]
    for tid in ids:
        client.wait(tid, timeout=WAIT_S)
    d = open_browser()
    sign_in(d, cluster, cluster.token)

    def shown() -> dict[str, float]:
        spans = d.find_elements(_by("CSS_SELECTOR"), "#summary span.count")
        return {
            s.get_attribute("data-status"): float(s.find_element(_by("TAG_NAME"), "b").text)
            for s in spans
        }

    # only the facilities tenant ran tasks on this cluster, so its counts are the metrics'
    wait_for(lambda: shown() and shown() == _metrics(cluster), what="console counts == /metrics")
    assert shown()["done"] >= 4


def test_the_visitor_tenant_does_not_see_the_facilities_tasks(
    cluster: LocalCluster, open_browser: Any
) -> None:
    facilities = cluster.client()
    facilities.submit(parse_task_text(TASK).model_dump(mode="json"))
    theirs = {t["task_id"] for t in facilities.tasks(limit=1000)}
    visitor = cluster.client(cluster.visitor_token)
    own = visitor.submit(
        parse_task_text(TASK.replace("facilities", "visitor")).model_dump(mode="json")
    )
    d = open_browser()
    sign_in(d, cluster, cluster.visitor_token)
    assert d.find_element(_by("ID"), "tenant").text == "visitor"
    d.find_element(_by("CSS_SELECTOR"), 'nav a[data-view="tasks"]').click()
    rows = "#tasks-table tbody tr"
    wait_for(
        lambda: d.find_elements(_by("CSS_SELECTOR"), f'{rows}[data-task="{own["task_id"]}"]'),
        what="the visitor's own task",
    )
    seen = {r.get_attribute("data-task") for r in d.find_elements(_by("CSS_SELECTOR"), rows)}
    assert seen == {own["task_id"]}
    assert not (seen & theirs)
    # its live readings are those its nodes' policy lets it read: temperature only
    d.find_element(_by("CSS_SELECTOR"), 'nav a[data-view="sensors"]').click()
    charts = wait_for(
        lambda: d.find_elements(_by("CSS_SELECTOR"), "#sensors figure.sensor"), what="charts"
    )
    kinds = {c.get_attribute("data-sensor").rsplit("/", 1)[1] for c in charts}
    assert kinds == {"temperature"}
    # and through its cookie the visitor cannot read one of the facilities' tasks either
    tid = next(iter(theirs))
    with _cookie_client(cluster, cluster.visitor_token) as http:
        got = http.get(f"/console/api/v1/tasks/{tid}", headers={"X-Fades-Console": "1"})
        assert got.status_code == 404


def test_an_actuator_command_from_the_page_changes_the_device_state_and_is_audited(
    cluster: LocalCluster, open_browser: Any
) -> None:
    d = open_browser()
    sign_in(d, cluster, cluster.token)
    d.find_element(_by("CSS_SELECTOR"), 'nav a[data-view="devices"]').click()
    row = '#devices-table tr[data-device="edge1/fan-room1"]'
    wait_for(lambda: d.find_elements(_by("CSS_SELECTOR"), row), what="the fan of room1")
    before = d.find_element(_by("CSS_SELECTOR"), row + " td.state").text
    want = "off" if '"on"' in before else "on"
    _click(d, f'{row} button[data-command="{want}"]')
    wait_for(
        lambda: f'"{want}"' in d.find_element(_by("CSS_SELECTOR"), row + " td.state").text,
        what=f"the fan's state turning {want}",
    )
    api = {(x["node"], x["device"]): x for x in cluster.client().devices()}
    assert want in json.dumps(api[("edge1", "fan-room1")]["state"])
    assert "applied" in d.find_element(_by("ID"), "command-result").text
    audit = wait_for(
        lambda: d.find_elements(_by("CSS_SELECTOR"), "#audit-table tbody tr"), what="the audit"
    )
    cells = [c.text for c in audit[0].find_elements(_by("TAG_NAME"), "td")]
    assert cells[1:6] == ["facilities", "console", "edge1/fan-room1", want, "applied"]
    # the visitor may not command it: the page disables the buttons, the API refuses (403)
    with _cookie_client(cluster, cluster.visitor_token) as http:
        refused = http.post(
            "/console/api/v1/devices/edge1/fan-room1/commands",
            headers={"X-Fades-Console": "1"},
            json={"command": "on", "source": "console"},
        )
        assert refused.status_code == 403


COUNTER = """
count = 0

def main(data, params):
    global count
    count += 1
    return {"count": count}
"""


def test_a_stateful_task_shows_its_checkpoint_and_moves_with_the_migrate_button(
    cluster: LocalCluster, open_browser: Any, tmp_path: Path
) -> None:
    client = cluster.client()
    src = tmp_path / "counter.py"
    src.write_text(COUNTER)
    client.upload(build_python(src, key=cluster.key).to_bytes())
    task = {
        "credentials": {"tenant": "facilities"},
        "inputs": {"x": 1},
        "function": {
            "artifact": "counter",
            "mode": "persistent",
            "period_s": 1,
            "state": {"checkpoint": "every"},
            "time_budget_ms": 20000,
        },
    }
    receipt = client.submit(task, node="edge1")
    tid = receipt["task_id"]
    d = open_browser()
    sign_in(d, cluster, cluster.token)
    d.find_element(_by("CSS_SELECTOR"), 'nav a[data-view="stateful"]').click()
    row = f'#stateful-table tr[data-task="{tid}"]'
    wait_for(
        lambda: "B" in d.find_element(_by("CSS_SELECTOR"), row + " td.size").text,
        what="the task's first checkpoint",
    )
    assert d.find_element(_by("CSS_SELECTOR"), row + " td.node").text == "edge1"

    def choose_and_click() -> bool:  # the row is redrawn every second: retried when stale
        Select(d.find_element(_by("CSS_SELECTOR"), row + " select.migrate-to")).select_by_value(
            "edge2"
        )
        d.find_element(_by("CSS_SELECTOR"), row + " button.migrate").click()
        return True

    wait_for(choose_and_click, what="choosing edge2 and pressing migrate")
    wait_for(
        lambda: d.find_element(_by("ID"), "migrate-result").text == f"moved {tid} to edge2",
        what="the migration's answer",
    )
    wait_for(
        lambda: d.find_element(_by("CSS_SELECTOR"), row + " td.node").text == "edge2",
        what="the stateful view showing the task on edge2",
    )
    client.cancel(tid)


def test_a_killed_node_turns_red_within_the_down_detection_time(
    cluster: LocalCluster, open_browser: Any
) -> None:
    d = open_browser()
    sign_in(d, cluster, cluster.token)
    row = '#fleet-table tr[data-node="edge3"]'
    wait_for(lambda: "up" in d.find_element(_by("CSS_SELECTOR"), row).get_attribute("class"))
    t0 = time.monotonic()
    cluster.procs["edge3"].send_signal(signal.SIGKILL)
    wait_for(
        lambda: "down" in d.find_element(_by("CSS_SELECTOR"), row).get_attribute("class"),
        what="edge3 turning red",
    )
    took = time.monotonic() - t0
    color = d.find_element(_by("CSS_SELECTOR"), row + " td.state").value_of_css_property("color")
    assert (
        color.startswith("rgba(192, 24, 24")
        and d.find_element(_by("CSS_SELECTOR"), row + " td.state").text == "down"
    )
    # the controller's down-detection time, plus a heartbeat and one console refresh, plus
    # slack for this busy machine
    assert took < cluster.down_after_s + cluster.heartbeat_s + 1.0 + 10.0, took
    print(f"edge3 turned red {took:.1f} s after SIGKILL (down after {cluster.down_after_s} s)")
