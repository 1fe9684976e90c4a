"""Black-ice risk at each lamppost from its road-weather sensors (a pipeline's scattered
first stage: it runs on every node that holds lamppost readings).

Dataset ``road`` with ``surface_temp`` and ``dew_point`` readings (or ``air_temp`` and
``humidity``, from which the dew point is computed) of one or more lampposts over the last
window. Per lamppost it averages the readings of the last ``params["recent_s"]`` seconds
(default 600) and calls it icing when the surface is at or below 0 °C and at or below the dew
point (each with ``params["margin"]`` °C of slack, default 0). ``risk`` (0..1) grows smoothly
as the surface goes below both.
"""

import math

MAGNUS_B, MAGNUS_C = 17.62, 243.12


def _dew_point(temp, rh):
    rh = min(max(rh, 1.0), 100.0)
    g = math.log(rh / 100.0) + MAGNUS_B * temp / (MAGNUS_C + temp)
    return MAGNUS_C * g / (MAGNUS_B - g)


def _recent_mean(ds, recent_s):
    ts, vals = ds.ts, ds.values
    if len(ts) == 0:
        return None, None
    last = max(ts)
    picked = [v for t, v in zip(ts, vals) if t >= last - recent_s]
    return sum(picked) / len(picked), last


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


def segment_of(location):
    return location.rsplit("-lamp", 1)[0]


def main(data, params):
    recent_s = float(params.get("recent_s", 600))
    margin = float(params.get("margin", 0.0))
    scale = float(params.get("scale", 0.4))
    road = data["road"]
    by = {}
    for (loc, st), ds in road.split("location", "sensor_type").items():
        by.setdefault(loc, {})[st] = ds
    lampposts = {}
    for loc in sorted(by):
        s = by[loc]
        if "surface_temp" not in s:
            continue
        surface, ts = _recent_mean(s["surface_temp"], recent_s)
        if "dew_point" in s:
            dew, _ = _recent_mean(s["dew_point"], recent_s)
        elif "air_temp" in s and "humidity" in s:
            air, _ = _recent_mean(s["air_temp"], recent_s)
            rh, _ = _recent_mean(s["humidity"], recent_s)
            dew = _dew_point(air, rh)
        else:
            continue
        ice = surface <= margin and surface <= dew + margin
        risk = _sigmoid(-surface / scale) * _sigmoid((dew - surface) / scale)
        lampposts[loc] = {
            "segment": segment_of(loc),
            "ice": ice,
            "risk": round(risk, 3),
            "surface": round(surface, 2),
            "dew_point": round(dew, 2),
            "ts": ts,
        }
    return {
        "ice": any(v["ice"] for v in lampposts.values()),
        "lampposts": lampposts,
        "ts": max((v["ts"] for v in lampposts.values()), default=None),
    }
