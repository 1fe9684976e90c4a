"""The black-ice warning for approaching vehicles (a pipeline's finale, guarded by
``ice == true`` and published on ``warnings.<road>``).

Input ``fuse``: ``ice_fuse``'s result. ``params["road"]`` names the road (default ``road1``).
Severity is ``danger`` when an icy segment's mean risk is at least ``params["danger"]``
(default 0.8), else ``warning``.
"""


def main(data, params):
    fused = data["fuse"]
    road = params.get("road", "road1")
    iced = fused.get("iced") or ([fused["segment"]] if fused.get("segment") else [])
    risks = [fused.get("segments", {}).get(s, {}).get("risk", 0.0) for s in iced]
    worst = max(risks, default=0.0)
    severity = "danger" if worst >= float(params.get("danger", 0.8)) else "warning"
    where = ", ".join(iced) if iced else "unknown segment"
    return {
        "road": road,
        "segments": iced,
        "severity": severity,
        "risk": worst,
        "message": f"Black ice on {road} ({where}): slow down, keep your distance",
        "reading_ts": fused.get("ts"),
    }
