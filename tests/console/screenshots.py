"""Take the console screenshots of docs/console.md: ``python -m tests.console.screenshots``.

Starts a real three-node cluster with the simulated shop floor, gives every view something to
show (tasks, one that fails, a stateful task, a pipeline run, an actuator command), then
photographs each view with headless Chromium into ``docs/img/console-<view>.png``
(palette PNGs, to keep them small).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from fades.cluster import LocalCluster, find_examples
from fades.functions.build import build_python
from fades.pipelines.spec import load_pipeline
from fades.task import parse_task_text

from .browser import chrome
from .conftest import sign_in, wait_for

REPO = Path(__file__).resolve().parents[2]
VIEWS = ("fleet", "tasks", "pipelines", "stateful", "sensors", "placement", "devices", "submit")
COUNTER = """
count = 0
seen = {}

def main(data, params):
    global count
    count += 1
    for loc in data["t"].column("location"):
        seen[loc] = seen.get(loc, 0) + 1
    return {"count": count, "rooms": len(seen)}
"""
FAILING = """
def main(data, params):
    rows = len(data["t"])
    print("rows:", rows)
    return rows / params["divide_by"]
"""


def _task(artifact: str, room: str, **function: Any) -> dict[str, Any]:
    text = (
        "credentials: {tenant: facilities}\n"
        f"data: [{{name: t, select: {{location: {room}, sensor_type: temperature}}}}]\n"
        f"function: {{artifact: {artifact}, memory_mib: 64, time_budget_ms: 20000}}\n"
    )
    task = parse_task_text(text).model_dump(mode="json")
    task["function"] |= function
    return task


def populate(cluster: LocalCluster, work: Path) -> None:
    """Give each view something to show."""
    client = cluster.client()
    for name, src in (("counter", COUNTER), ("divider", FAILING)):
        path = work / f"{name}.py"
        path.write_text(src)
        client.upload(build_python(path, key=cluster.key).to_bytes())
    ids = [client.submit(_task("mean_core", f"room{i}"))["task_id"] for i in (1, 3, 5)]
    ids.append(client.submit(_task("divider", "room2", params={"divide_by": 0}))["task_id"])
    for tid in ids:
        client.wait(tid, timeout=60)
    state = {"checkpoint": "every"}
    client.submit(_task("counter", "room4", mode="persistent", period_s=2, state=state))
    spec = load_pipeline(find_examples() / "pipelines" / "building-report.yaml").to_dict()
    receipt = client.submit_pipeline(spec)
    client.wait_runs(spec["name"], receipt.get("runs") or [], timeout=90)
    client.command("edge1", "fan-room1", "on")
    client.command("edge1", "light-machine1", "blink")


def shoot(out: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(Path(tmp) / "up", nodes=3, days=0.05, devices=True)
        cluster.prepare()
        with cluster:
            populate(cluster, Path(tmp))
            driver = chrome(1200, 760)
            try:
                sign_in(driver, cluster, cluster.token)
                time.sleep(25)  # readings for the charts: the fan lowers room1's CO2
                for view in VIEWS:
                    driver.find_element(By.CSS_SELECTOR, f'nav a[data-view="{view}"]').click()
                    if view == "tasks":
                        rows = driver.find_elements(By.CSS_SELECTOR, "#tasks-table tbody tr")
                        done = [r for r in rows if r.get_attribute("data-status") == "done"]
                        (done or rows)[0].click()
                    if view == "submit":
                        area = driver.find_element(By.ID, "submit-text")
                        area.send_keys("credentials: {tenant: facilities}\nfunction: {}\n")
                        driver.find_element(By.ID, "submit-go").click()
                        wait_for(
                            lambda: driver.find_elements(By.CSS_SELECTOR, "#submit-result .error")
                        )
                    time.sleep(1.5)
                    png = out / f"console-{view}.png"
                    driver.save_screenshot(str(png))
                    Image.open(png).convert("RGB").quantize(64).save(png, optimize=True)
                    print(f"{png} ({png.stat().st_size // 1024} KiB)")
                    if view == "tasks":  # and a failed one: error, traceback, logs
                        driver.find_element(By.CSS_SELECTOR, 'tr[data-status="failed"]').click()
                        time.sleep(1)
                        detail = driver.find_element(By.ID, "task-detail")
                        driver.execute_script("arguments[0].scrollIntoView()", detail)
                        png = out / "console-task-failed.png"
                        driver.save_screenshot(str(png))
                        Image.open(png).convert("RGB").quantize(64).save(png, optimize=True)
            finally:
                driver.quit()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    shoot(parser.parse_args().out)
