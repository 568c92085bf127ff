"""Scheduler, quota, cold start, rollout and cost of the batched simulator, by hand."""

import numpy as np
import pytest

from envs.cluster.catalog import CatalogError
from envs.sim.params import Randomization
from envs.sim.simulator import BatchedSimulator
from tests.conftest import constant_series, make_cluster

H100 = {"name": "h100", "gpu": "H100-80GB", "nodes": 1, "gpus_per_node": 4}
A100 = {"name": "a100", "gpu": "A100-80GB", "nodes": 1, "gpus_per_node": 4}
FIXED = Randomization(random_window=False)


def deployment(name="llm", **overrides):
    spec = {"name": name, "model": "llama-3.1-8b", "min_replicas": 1, "max_replicas": 10,
            "initial_option": "h100-1", "initial_replicas": 1}
    spec.update(overrides)
    return spec


def simulator(cluster, ticks=20, rate=1.0):
    series = [[constant_series(rate, ticks, name=f"s{i}")] for i in range(len(cluster.deployments))]
    sim = BatchedSimulator(cluster, series, n_envs=1, episode_ticks=ticks, randomization=FIXED)
    sim.reset(seed=0)
    return sim


def test_pods_beyond_free_devices_stay_pending(catalog):
    sim = simulator(make_cluster(catalog, [H100], [deployment()]))
    h100 = catalog.option_index("h100-1")
    sim.step(np.array([[6]]), np.array([[h100]]))
    # 4 GPUs: the Ready pod holds one, three new pods are placed, two stay Pending.
    assert sim.state.pending[0, 0] == 2
    assert sim.state.starting.sum() == 3
    assert sim.state.ready[0, 0] == 1


def test_quota_limits_placement(catalog):
    cluster = make_cluster(catalog, [H100], [deployment()], quota={"requests.nvidia.com/gpu": 2})
    sim = simulator(cluster)
    sim.step(np.array([[4]]), np.array([[catalog.option_index("h100-1")]]))
    # Quota of 2 GPUs: one Ready pod plus one new pod; two stay Pending.
    assert sim.state.starting.sum() == 1
    assert sim.state.pending[0, 0] == 2


def test_deployments_are_scheduled_in_order(catalog):
    cluster = make_cluster(catalog, [H100], [deployment("a"), deployment("b")])
    sim = simulator(cluster)
    h100 = catalog.option_index("h100-1")
    sim.step(np.array([[3, 3]]), np.array([[h100, h100]]))
    # Two Ready pods hold 2 of 4 GPUs; "a" gets both free ones, "b" gets none.
    assert sim.state.starting[0, 0].sum() == 2
    assert sim.state.starting[0, 1].sum() == 0
    assert sim.state.pending[0].tolist() == [0.0, 2.0]


def test_cold_start_takes_startup_ticks(catalog):
    sim = simulator(make_cluster(catalog, [H100], [deployment()]))
    h100 = catalog.option_index("h100-1")
    # Llama-3.1-8B on h100-1 starts in 60 s: placed in tick 0, it is Ready
    # 4 ticks of 15 s later and serves from tick 4, the fifth step.
    ready = []
    for _ in range(6):
        sim.step(np.array([[2]]), np.array([[h100]]))
        ready.append(sim.state.ready[0, 0])
    assert ready == [1, 1, 1, 1, 2, 2]


def test_scale_down_deletes_pending_then_starting_then_ready(catalog):
    sim = simulator(make_cluster(catalog, [H100], [deployment(initial_replicas=2)]))
    h100 = catalog.option_index("h100-1")
    sim.step(np.array([[6]]), np.array([[h100]]))  # 2 Ready, 2 starting, 2 Pending
    assert sim.state.pending[0, 0] == 2
    sim.step(np.array([[3]]), np.array([[h100]]))
    assert sim.state.pending[0, 0] == 0
    assert sim.state.starting.sum() == 1
    assert sim.state.ready[0, 0] == 2
    assert sim.state.draining_pods[0, 0] == 1


def test_allocation_change_keeps_old_pods_until_new_are_ready(catalog):
    cluster = make_cluster(catalog, [H100, A100], [deployment(initial_replicas=2)])
    sim = simulator(cluster)
    a100 = catalog.option_index("a100-1")
    h100 = catalog.option_index("h100-1")
    sim.step(np.array([[2]]), np.array([[a100]]))
    assert sim.state.option[0, 0] == a100
    assert sim.state.old_option[0, 0] == h100
    assert sim.state.old_ready[0, 0] == 2
    for _ in range(4):
        sim.step(np.array([[2]]), np.array([[a100]]))
    # After the 4-tick cold start the new pods are Ready and the old ones drain.
    assert sim.state.ready[0, 0] == 2
    assert sim.state.old_ready[0, 0] == 0
    assert sim.state.draining_pods[0, 0] == 2


def test_cost_is_device_hours_times_price(catalog):
    sim = simulator(make_cluster(catalog, [H100], [deployment(initial_replicas=3)]))
    info = sim.step(np.array([[3]]), np.array([[catalog.option_index("h100-1")]]))
    # 3 H100 for 15 s at 6.88 USD per hour.
    assert info.cost_usd[0, 0] == pytest.approx(3 * 6.88 * 15 / 3600)
    assert info.gpu_hours[0, 0] == pytest.approx(3 * 15 / 3600)


def test_mig_slice_costs_its_fraction(catalog):
    pool = {"name": "mig", "gpu": "H100-80GB", "nodes": 1, "gpus_per_node": 1, "mig_layout": {"3g.40gb": 2}}
    cluster = make_cluster(catalog, [pool], [deployment(initial_option="h100-mig-3g.40gb", initial_replicas=2)])
    sim = simulator(cluster)
    info = sim.step(np.array([[2]]), np.array([[catalog.option_index("h100-mig-3g.40gb")]]))
    assert info.gpu_hours[0, 0] == pytest.approx(2 * 0.428571 * 15 / 3600)


def test_infeasible_option_keeps_current(catalog):
    sim = simulator(make_cluster(catalog, [H100], [deployment()]))
    sim.step(np.array([[1]]), np.array([[catalog.option_index("a100-1")]]))
    assert sim.state.option[0, 0] == catalog.option_index("h100-1")


def test_replicas_clipped_to_min_and_max(catalog):
    sim = simulator(make_cluster(catalog, [H100], [deployment(max_replicas=3)]))
    sim.step(np.array([[9]]), np.array([[0]]))
    assert sim.state.desired[0, 0] == 3
    sim.step(np.array([[0]]), np.array([[0]]))
    assert sim.state.desired[0, 0] == 1


def test_min_above_max_is_rejected(catalog):
    with pytest.raises(CatalogError, match="min_replicas"):
        make_cluster(catalog, [H100], [deployment(min_replicas=5, max_replicas=2)])


def test_option_no_pool_provides_is_rejected(catalog):
    with pytest.raises(CatalogError, match="no node pool provides it"):
        make_cluster(catalog, [H100], [deployment(initial_option="a100-1")])


def test_mig_layout_over_seven_slices_is_rejected(catalog):
    pool = {"name": "mig", "gpu": "H100-80GB", "nodes": 1, "gpus_per_node": 1, "mig_layout": {"3g.40gb": 2, "2g.20gb": 1}}
    with pytest.raises(CatalogError, match="8/7 compute"):
        make_cluster(catalog, [pool], [deployment()])
