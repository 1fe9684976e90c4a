"""The warning light when a machine's vibration drifts (examples/pipelines/vibration-watch.yaml).

Dataset ``vib``: the machine's vibration readings over a window (say 10 minutes). The
baseline is the median of the window; when the mean of the newest ``params["recent"]``
readings (default 30) is more than ``params["ratio"]`` times the baseline (default 1.3) or
above ``params["limit"]`` mm/s (default 4.0), the light blinks. Otherwise no command.
"""


def main(data, params):
    vals = list(data["vib"].values)
    recent = int(params.get("recent", 30))
    if len(vals) < 2 * recent:
        return None
    ordered = sorted(vals)
    baseline = ordered[len(ordered) // 2]
    now = sum(vals[-recent:]) / recent
    if now > float(params.get("ratio", 1.3)) * baseline or now > float(params.get("limit", 4.0)):
        return {"command": "blink", "args": {"hz": 2}}
    return None
