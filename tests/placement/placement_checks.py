"""An independent checker of allocations: recomputes every prediction from the inputs."""

from __future__ import annotations

import numpy as np

from fades.placement.model import CLOUD, LOCAL, Allocation, Devices, Infrastructure


def check_allocation(al: Allocation, infra: Infrastructure, devices: Devices) -> None:
    """Assert the published constraints hold for ``al``, recomputed from scratch."""
    n, m = devices.n, infra.n_nodes
    t = al.target
    assert t.shape == (n,)
    # Exactly one target per device: an edge node, the cloud, or local.
    assert np.all((t == CLOUD) | (t == LOCAL) | ((t >= 0) & (t < m)))
    assert np.all((al.cloud >= 0) == (t == CLOUD))
    loads = np.bincount(t[t >= 0], minlength=m)
    assert np.array_equal(loads, al.loads)
    eps_ref = float(devices.eps_t_ms.max()) if n else 0.0
    maxload = infra.maxload(eps_ref)
    assert np.all(loads <= maxload)

    share = infra.wifi_mbps / np.maximum(np.bincount(devices.ap, minlength=infra.n_aps), 1)
    for i in range(n):
        a, d, w = int(devices.ap[i]), float(devices.data_kb[i]), float(devices.tx_power[i])
        if t[i] >= 0:
            j = int(t[i])
            bw = min(share[a], infra.node_bw_mbps[j])
            net = 8 * d / bw + infra.rtt_ms[a, j]
            q = max(0.0, infra.slope_ms[j] * loads[j] + infra.intercept_ms[j])
            lat = net + infra.compute_ms[j] + q
        elif t[i] == CLOUD:
            net = 8 * d / share[a] + infra.cloud_rtt_ms[a, al.cloud[i]]
            lat = net + infra.cloud_inference_ms
        else:
            assert al.latency_ms[i] == devices.local_ms[i]
            assert al.energy_mj[i] == devices.local_mj[i]
            continue
        assert np.isclose(al.latency_ms[i], lat), (i, al.latency_ms[i], lat)
        assert np.isclose(al.energy_mj[i], net * w)
        assert lat <= devices.eps_t_ms[i] + 1e-9, f"device {i} breaks eps_t: {lat}"
        assert net * w <= devices.eps_b_mj[i] + 1e-9, f"device {i} breaks eps_b"
