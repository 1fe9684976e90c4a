"""Indoor air-quality index per room, 0 (poor) to 100 (excellent), from CO2, humidity and
temperature over the selected window, with the worst sub-index named."""


def _band(value, good, fair, poor):
    """100 inside ``good``, falling linearly to 50 at the edge of ``fair`` and 0 at ``poor``."""
    lo_g, hi_g = good
    lo_f, hi_f = fair
    lo_p, hi_p = poor
    if lo_g <= value <= hi_g:
        return 100.0
    if value > hi_g:
        edge, f, p = hi_g, hi_f, hi_p
    else:
        edge, f, p = lo_g, lo_f, lo_p
    d = abs(value - edge)
    span_f, span_p = abs(f - edge), abs(p - f)
    if d <= span_f:
        return 100.0 - 50.0 * d / span_f
    return max(0.0, 50.0 - 50.0 * (d - span_f) / span_p)


BANDS = {
    "co2": ((350, 800), (300, 1200), (250, 2000)),
    "humidity": ((30, 60), (20, 70), (10, 85)),
    "temperature": ((20, 24), (18, 26), (15, 30)),
}


def _means(ds):
    sums = {}
    labels = ds.labels["location"]
    for loc, v in zip(ds.codes("location"), ds.values):
        s = sums.setdefault(labels[loc], [0.0, 0])
        s[0] += v
        s[1] += 1
    return {room: total / n for room, (total, n) in sums.items()}


def main(data, params):
    means = {name: _means(ds) for name, ds in data.items() if name in BANDS}
    rooms = sorted({room for m in means.values() for room in m})
    out = {}
    for room in rooms:
        subs = {n: round(_band(m[room], *BANDS[n]), 1) for n, m in means.items() if room in m}
        index = min(subs.values())
        worst = min(subs, key=subs.get)
        label = (
            "excellent"
            if index >= 90
            else "good"
            if index >= 70
            else "fair"
            if index >= 50
            else "poor"
        )
        out[room] = {
            "index": index,
            "category": label,
            "limiting": worst,
            "sub_indices": subs,
            "means": {n: round(m[room], 2) for n, m in means.items() if room in m},
        }
    return out
