"""Room occupancy by sensor fusion: light, sound, CO2 and proximity vote per time bucket.

Datasets (any subset of): ``light``, ``audio``, ``co2``, ``proximity``; optional ``truth``
(ground-truth occupancy 0/1) turns on the accuracy report. Sensors report at their own
instants, so readings are averaged per ``params["bucket_s"]`` (default 60 s). A room counts as
occupied in a bucket when at least ``params["votes"]`` (default 2) of its sensors say so.
"""

THRESHOLDS = {"light": 300.0, "audio": 40.0, "co2": 650.0, "proximity": 1.0}


def _by_room_time(ds, bucket_s):
    """{room: {bucket: mean value}} for one dataset."""
    sums = {}
    labels = ds.labels["location"]
    for loc, t, v in zip(ds.codes("location"), ds.ts, ds.values):
        per_room = sums.setdefault(labels[loc], {})
        b = int(t // bucket_s)
        acc = per_room.get(b)
        if acc is None:
            per_room[b] = [v, 1]
        else:
            acc[0] += v
            acc[1] += 1
    return {
        room: {b: total / n for b, (total, n) in buckets.items()} for room, buckets in sums.items()
    }


def main(data, params):
    thresholds = dict(THRESHOLDS, **params.get("thresholds", {}))
    need = params.get("votes", 2)
    bucket_s = float(params.get("bucket_s", 60))
    sensors = {name: _by_room_time(ds, bucket_s) for name, ds in data.items() if name in thresholds}
    truth = _by_room_time(data["truth"], bucket_s) if "truth" in data else None
    rooms = sorted({room for per_room in sensors.values() for room in per_room})
    report = {}
    for room in rooms:
        series = {n: s[room] for n, s in sensors.items() if room in s}
        times = sorted(set().union(*(s.keys() for s in series.values())))
        occupied = []
        for t in times:
            votes = sum(1 for n, s in series.items() if t in s and s[t] >= thresholds[n])
            occupied.append((t, votes >= min(need, len(series))))
        n_occ = sum(1 for _, o in occupied if o)
        room_report = {
            "sensors": sorted(series),
            "buckets": len(occupied),
            "occupied_fraction": n_occ / len(occupied) if occupied else 0.0,
            "occupied_now": occupied[-1][1] if occupied else False,
        }
        if truth is not None and room in truth:
            tp = fp = tn = fn = 0
            for t, o in occupied:
                if t not in truth[room]:
                    continue
                real = truth[room][t] >= 0.5
                tp += o and real
                fp += o and not real
                tn += (not o) and (not real)
                fn += (not o) and real
            total = tp + fp + tn + fn
            room_report["accuracy"] = (tp + tn) / total if total else None
            room_report["confusion"] = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
        report[room] = room_report
    scored = [r for r in report.values() if r.get("accuracy") is not None]
    overall = None
    if scored:
        hits = sum(r["confusion"]["tp"] + r["confusion"]["tn"] for r in scored)
        total = sum(sum(r["confusion"].values()) for r in scored)
        overall = hits / total
    return {"rooms": report, "accuracy": overall}
