"""Ventilation on when a room's CO2 stays high (the finale of examples/pipelines/ventilation.yaml).

Dataset ``co2``: the room's recent CO2 readings. When every one of them is above
``params["high"]`` ppm (default 1000) the function returns the command for the room's fan,
``{"command": "on", "args": {"speed": params["speed"]}}``; when ``params["low"]`` is given
and every reading is below it, ``{"command": "off"}``; otherwise ``None`` (no command).
The pipeline's ``actuate`` names the fan; the controller sends the command and audits it.
"""


def main(data, params):
    vals = data["co2"].values
    if len(vals) == 0:
        return None
    high = float(params.get("high", 1000))
    low = params.get("low")
    if min(vals) > high:
        return {"command": "on", "args": {"speed": int(params.get("speed", 100))}}
    if low is not None and max(vals) < float(low):
        return {"command": "off"}
    return None
