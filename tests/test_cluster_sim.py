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


def test_random_initial_allocation_fits_slots_and_quota(catalog):
    # Two pools of 4 GPUs and a quota of 6 GPUs: every drawn start must fit
    # both, use an option whose GPU exists, and keep replicas within bounds.
    cluster = make_cluster(catalog, [H100, A100], [deployment("a", max_replicas=4), deployment("b", max_replicas=4)],
                           quota={"requests.nvidia.com/gpu": 6})
    series = [[constant_series(1.0, 10, name="s")] for _ in cluster.deployments]
    randomization = Randomization(random_window=False, initial_allocation=1.0)
    sim = BatchedSimulator(cluster, series, n_envs=256, episode_ticks=10, randomization=randomization)
    sim.reset(seed=3)
    state, params = sim.state, sim.params
    names = [params.option_names[o] for o in state.option.ravel()]
    # The handbook catalog's profiles of this model on these pools are the
    # single-GPU options; both must be drawn.
    assert set(names) == {"h100-1", "a100-1"}
    devices = params.option_devices[state.option] * state.ready
    assert devices.sum(axis=1).max() <= 6
    assert ((state.ready >= 1) & (state.ready <= 4)).all()
    assert (state.desired == state.ready).all()
    # Most rows leave the configured start (h100-1, one replica each).
    configured = (state.option == catalog.option_index("h100-1")).all(axis=1) & (state.ready == 1).all(axis=1)
    assert configured.mean() < 0.5


def test_initial_allocation_off_keeps_configured_start(catalog):
    cluster = make_cluster(catalog, [H100, A100], [deployment("a", initial_replicas=2)])
    series = [[constant_series(1.0, 10, name="s")]]
    sim = BatchedSimulator(cluster, series, n_envs=16, episode_ticks=10, randomization=Randomization())
    sim.reset(seed=3)
    assert (sim.state.option == catalog.option_index("h100-1")).all()
    assert (sim.state.ready == 2).all()


def test_token_scale_multiplies_request_tokens(catalog):
    # A fixed input factor of 4 and output factor of 0.5 turn 1000/100 tokens
    # into 4000/50 per request, in the signals and in the reward's reference.
    cluster = make_cluster(catalog, [H100], [deployment()])
    series = [[constant_series(1.0, 10, name="s")]]
    plain = BatchedSimulator(cluster, series, n_envs=1, episode_ticks=10, randomization=FIXED)
    scaled = BatchedSimulator(cluster, series, n_envs=1, episode_ticks=10, randomization=Randomization(
        random_window=False, input_token_scale=(4.0, 4.0), output_token_scale=(0.5, 0.5)))
    for sim in (plain, scaled):
        sim.reset(seed=0)
        sim.step(np.array([[1]]), np.array([[catalog.option_index("h100-1")]]))
    assert scaled.state.input_tokens[0, 0] == pytest.approx(4000.0)
    assert scaled.state.output_tokens[0, 0] == pytest.approx(50.0)
    assert plain.state.input_tokens[0, 0] == pytest.approx(1000.0)
    # Longer prompts take longer to prefill, so TTFT grows.
    assert scaled.state.ttft_p50_s[0, 0] > plain.state.ttft_p50_s[0, 0]


def test_reward_cost_basis_by_hand(catalog):
    # 1 request/s of 1000/100 tokens needs less than one replica of any option
    # at 85 % utilisation. So each reference is one 15-s tick of the option
    # cheapest per replica: an L40S (1.86 USD/h) for dollars and a 3g.40gb
    # slice (3/7 of a GPU) for GPU-hours.
    from envs.reward import RewardWeights, compute_reward

    pools = [H100, {"name": "l40s", "gpu": "L40S-48GB", "nodes": 1, "gpus_per_node": 2},
             {"name": "mig", "gpu": "H100-80GB", "nodes": 1, "gpus_per_node": 1, "mig_layout": {"3g.40gb": 2}}]
    cluster = make_cluster(catalog, pools, [deployment(initial_replicas=2)])
    sim = simulator(cluster)
    tick_h = 15.0 / 3600.0
    l40s = cluster.catalog.options[catalog.option_index("l40s-1")].price_per_hour
    assert sim.state.reference_cost[0, 0] == pytest.approx(l40s * tick_h)
    slice_share = cluster.catalog.options[catalog.option_index("h100-mig-3g.40gb")].gpu_equivalents
    assert slice_share == pytest.approx(3.0 / 7.0, rel=1e-5)
    assert sim.state.reference_gpu_hours[0, 0] == pytest.approx(slice_share * tick_h)
    info = sim.step(np.array([[2]]), np.array([[catalog.option_index("h100-1")]]))
    zero = dict(slo_weight=0.0, drop_weight=0.0, churn_weight=0.0, allocation_change_weight=0.0)
    by_hours = compute_reward(RewardWeights(cost_basis="gpu_hours", **zero), sim.params, sim.state, info)
    by_dollars = compute_reward(RewardWeights(**zero), sim.params, sim.state, info)
    # Two H100 replicas: 2 GPUs against 3/7 of one, and 2 x 6.88 USD/h against the L40S price.
    assert by_hours[0, 0] == pytest.approx(-2.0 / slice_share)
    h100 = cluster.catalog.options[catalog.option_index("h100-1")].price_per_hour
    assert by_dollars[0, 0] == pytest.approx(-2.0 * h100 / l40s)
    with pytest.raises(ValueError, match="cost_basis"):
        RewardWeights(cost_basis="euros")
