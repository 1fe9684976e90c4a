"""Fuse the lampposts' black-ice detections along each road segment (a pipeline's gathering
stage after the scattered ``detect``).

Input ``detect``: one detection (``ice_detect``'s result) per node that ran it, as
``{node: result}``; a node whose detection did not arrive in time is a skipped input (falsy)
and is listed in ``missing``. A segment is icy when at least half of its reporting lampposts
say so, or when their mean risk reaches ``params["risk"]`` (default 0.75). Returns ``ice``
(any segment icy), ``segment`` (the icy segment at most risk, else None), ``iced`` (every icy
segment) and the per-segment votes.
"""

SKIPPED_KEY = "__fades_skipped__"


def _skipped(v):
    return not v or (isinstance(v, dict) and SKIPPED_KEY in v)


def _detections(value):
    """``{instance: detection}`` whether the upstream was scattered or not."""
    if isinstance(value, dict) and "lampposts" in value:
        return {"_": value}
    if _skipped(value):
        return {"_": None}
    return {k: (None if _skipped(v) else v) for k, v in value.items()}


def main(data, params):
    risk_limit = float(params.get("risk", 0.75))
    found = _detections(data["detect"])
    missing = sorted(k for k, v in found.items() if v is None)
    segments = {}
    ts = None
    for det in found.values():
        if det is None:
            continue
        for lamp in det.get("lampposts", {}).values():
            seg = segments.setdefault(lamp["segment"], {"votes": 0, "reporting": 0, "risk": 0.0})
            seg["reporting"] += 1
            seg["votes"] += 1 if lamp["ice"] else 0
            seg["risk"] += lamp["risk"]
            if lamp.get("ts") is not None and (ts is None or lamp["ts"] > ts):
                ts = lamp["ts"]
    for seg in segments.values():
        seg["risk"] = round(seg["risk"] / seg["reporting"], 3)
        seg["ice"] = 2 * seg["votes"] >= seg["reporting"] or seg["risk"] >= risk_limit
    iced = sorted(s for s, v in segments.items() if v["ice"])
    worst = max(iced, key=lambda s: segments[s]["risk"]) if iced else None
    return {
        "ice": bool(iced),
        "segment": worst,
        "iced": iced,
        "segments": segments,
        "missing": missing,
        "ts": ts,
    }
