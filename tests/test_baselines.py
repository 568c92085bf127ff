"""Baselines: KPA decisions, forecasters, static sizing, the oracle schedule, the tuned-HPA
grid, the report loader and one evaluation of every baseline. Expected numbers are
worked out by hand in the comments.

Profile used throughout: llama-3.1-8b on h100-1 (prefill 20000 tok/s, decode 5000 tok/s,
190 sequences, ITL 7 ms). At 1000 prompt and 100 output tokens one replica needs
1000/20000 + 100/5000 = 0.07 s per request, so it serves 1/0.07 = 14.2857 requests/s.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from agent.baselines.hpa_baseline import HpaSettings
from agent.baselines.kpa import KpaDecider, KpaSettings, window_ticks
from agent.baselines.oracle import (OracleSettings, bridge_gaps, build_oracle, issue_schedule,
                                    measure_ready_offset, startup_ticks)
from agent.baselines.predictive import HoltForecaster, KalmanForecaster, PredictivePlanner, PredictiveSettings
from agent.baselines.static import StaticSettings, plan_static, slo_replicas
from agent.baselines.tuning import Candidate, CandidateResult, TuningSettings, select_candidate, tune_hpa
from agent.controllers.registry import ControllerContext, make_controller
from agent.evaluation import evaluate, run_episode
from agent.report import load_results
from envs.observation import EncoderContext
from envs.signals import WorkloadSignals, batch_signals
from envs.traces.records import ArrivalSeries
from tests.conftest import ROOT, constant_series, make_cluster

H100 = {"name": "h100", "gpu": "H100-80GB", "nodes": 1, "gpus_per_node": 8}


def h100_cluster(catalog, **deployment):
    spec = {"name": "llm", "model": "llama-3.1-8b", "min_replicas": 1, "max_replicas": 8,
            "initial_option": "h100-1", "initial_replicas": 1, "slo_ttft_p95_s": 1.0}
    spec.update(deployment)
    return make_cluster(catalog, [H100], [spec])


def series_of_rates(rates, input_tokens=1000.0, output_tokens=100.0, tick_s=15.0):
    count = np.asarray(rates, dtype=np.float64) * tick_s
    return ArrivalSeries(name="rates", tick_s=tick_s, requests=count, input_tokens=count * input_tokens,
                         output_tokens=count * output_tokens)


# KPA


def kpa(min_replicas=1, max_replicas=100, **settings):
    return KpaDecider(KpaSettings(**{"target": 10.0, **settings}), 15.0, min_replicas, max_replicas)


def test_kpa_windows_in_ticks():
    assert window_ticks(60.0, 15.0) == 4
    # The 6 s panic window is shorter than a tick: the newest tick alone.
    assert window_ticks(6.0, 15.0) == 1


def test_kpa_stable_mode_averages_window():
    decider = kpa()  # target per pod 10 * 0.7 = 7
    assert decider.scale(0.0, 1, 0.0) == 1  # ceil(0 / 7) = 0, raised to min_replicas 1
    # Stable: mean(0, 21) = 10.5 -> ceil(1.5) = 2. Panic: ceil(21 / 7) = 3 pods, 3 / 3 ready < 2.
    assert decider.scale(21.0, 3, 15.0) == 2
    assert decider.panic_since_s is None


def test_kpa_scale_down_rate_limit():
    decider = kpa()
    decider.scale(0.0, 1, 0.0)
    decider.scale(21.0, 3, 15.0)
    # Stable mean(0, 21, 0) = 7 -> 1 pod, but at most halving: floor(8 / 2) = 4.
    assert decider.scale(0.0, 8, 30.0) == 4


def test_kpa_scale_up_rate_limit():
    decider = kpa(max_scale_up_rate=2.0)
    decider.scale(0.0, 1, 0.0)
    # Panic wants ceil(70 / 7) = 10 pods, capped at ceil(2 * 2 ready) = 4.
    assert decider.scale(70.0, 2, 15.0) == 4


def test_kpa_panic_holds_scale():
    decider = kpa()
    decider.scale(0.0, 1, 0.0)
    # Panic: ceil(28 / 7) = 4 pods over 2 ready = 200 %. Desired max(stable ceil(14 / 7) = 2, 4) = 4.
    assert decider.scale(28.0, 2, 15.0) == 4
    assert decider.panic_since_s == 15.0
    # The load falls, but panic mode never scales down before 15 + 60 s has passed.
    assert decider.scale(7.0, 4, 30.0) == 4
    assert decider.scale(0.0, 4, 45.0) == 4
    assert decider.scale(0.0, 4, 60.0) == 4
    assert decider.scale(0.0, 4, 75.0) == 4
    # At 90 s panic ends. The stable mean of the last four ticks (45..90 s) is 0, so the
    # count falls as far as the rate allows: floor(4 / 2) = 2.
    assert decider.scale(0.0, 4, 90.0) == 2
    assert decider.panic_since_s is None


def test_kpa_starts_in_panic_above_one_pod():
    decider = kpa()
    # Knative starts a decider whose first reading shows more than one Ready pod in panic mode.
    assert decider.scale(0.0, 3, 0.0) == 3
    assert decider.panic_since_s == 0.0


def test_kpa_scale_to_zero_grace():
    decider = kpa(min_replicas=0)
    assert decider.scale(0.0, 1, 0.0) == 1
    assert decider.scale(0.0, 1, 15.0) == 1
    # Desired 0 since 0 s; the last pod goes once the 30 s grace period has passed.
    assert decider.scale(0.0, 1, 30.0) == 0


# Forecasters


def test_holt_ramp_exact():
    holt = HoltForecaster(1, alpha=0.5, beta=0.3)
    for value in (2.0, 5.0, 8.0, 11.0):
        holt.update(np.array([value]))
    # Level 2 then trend 3 from the first two points; a ramp keeps both exact.
    assert holt.forecast(3)[0].tolist() == pytest.approx([14.0, 17.0, 20.0])


def test_holt_error_std():
    holt = HoltForecaster(1, alpha=0.5, beta=0.3)
    for value in (2.0, 5.0, 8.0, 11.0, 20.0):
        holt.update(np.array([value]))
    # One-step errors 0 (8), 0 (11) and 20 - 14 = 6: RMS sqrt(36 / 3).
    assert holt.error_std()[0] == pytest.approx(np.sqrt(12.0))


def test_kalman_first_update():
    kalman = KalmanForecaster(1, q_level=1.0, q_trend=0.1, r=4.0)
    kalman.update(np.array([0.0]))
    kalman.update(np.array([10.0]))
    # P0 = diag(4, 4), so the predicted P is [[9, 4], [4, 4.1]] and the gain [9, 4] / 13.
    # On innovation 10 the level becomes 90/13 and the trend 40/13.
    assert kalman.forecast(2)[0].tolist() == pytest.approx([130.0 / 13.0, 170.0 / 13.0])


def test_kalman_constant_converges():
    kalman = KalmanForecaster(1, q_level=1.0, q_trend=0.1, r=4.0)
    kalman.update(np.array([0.0]))
    for _ in range(200):
        kalman.update(np.array([10.0]))
    assert kalman.forecast(1)[0, 0] == pytest.approx(10.0, abs=1e-6)
    assert kalman.state[0, 1] == pytest.approx(0.0, abs=1e-6)


# Sizing and the static allocation


def test_slo_replicas_utilization_cap(catalog):
    ctx = EncoderContext.from_cluster(h100_cluster(catalog))
    option = catalog.option_index("h100-1")
    # 25 / (14.2857 * 0.7 = 10) = 2.5 -> 3 replicas.
    sized = slo_replicas(ctx, 0, option, np.array([25.0]), 1000.0, 100.0, utilization_cap=0.7, attainment=0.0)
    assert sized.tolist() == [3]
    assert slo_replicas(ctx, 0, option, np.array([0.0]), 1000.0, 100.0).tolist() == [0]


def test_slo_replicas_ttft_bound(catalog):
    ctx = EncoderContext.from_cluster(h100_cluster(catalog))
    option = catalog.option_index("h100-1")
    # 16000-token prompts: 0.802 s of work, 1.2469 requests/s per replica. At 1 request/s the
    # prefill time 0.8 * (1 + rho) is 1.44, 1.12 and 1.014 s for 1, 2, 3 replicas (over the 1 s
    # SLO) and 0.960 s for 4, where the Erlang tail term is below 1e-3.
    sized = slo_replicas(ctx, 0, option, np.array([1.0]), 16000.0, 10.0, attainment=0.95)
    assert sized.tolist() == [4]
    # By utilisation alone one replica suffices (rho 0.802).
    assert slo_replicas(ctx, 0, option, np.array([1.0]), 16000.0, 10.0, attainment=0.0).tolist() == [1]
    # 20 requests/s of such prompts exceed 8 replicas: max_replicas + 1.
    assert slo_replicas(ctx, 0, option, np.array([20.0]), 16000.0, 10.0).tolist() == [9]


def test_static_sizes_training_peak(catalog):
    cluster = h100_cluster(catalog)
    train = [[series_of_rates([5.0, 5.0, 25.0, 5.0])]]
    replicas, options = plan_static(cluster, train, StaticSettings(utilization_cap=0.7))
    # Peak 25 requests/s at 10 per replica -> 3; h100-1 is the only option this pool offers.
    assert replicas.tolist() == [3]
    assert options.tolist() == [catalog.option_index("h100-1")]


def test_static_rejects_unknown_option(catalog):
    with pytest.raises(ValueError, match="not a catalog option"):
        plan_static(h100_cluster(catalog), [[series_of_rates([5.0])]], StaticSettings(option="h200-1"))


# Predictive planner


def test_predictive_sizes_constant_load(catalog):
    cluster = h100_cluster(catalog)
    planner = PredictivePlanner(PredictiveSettings(forecaster="holt", prediction_z=0.0, choose_option=False,
                                                   utilization_cap=0.8))
    planner.reset(EncoderContext.from_cluster(cluster), ["llm"], 15.0)
    record = WorkloadSignals(name="llm", request_rate=25.0, mean_input_tokens=1000.0, mean_output_tokens=100.0,
                             desired_replicas=2, ready_replicas=2, option_index=catalog.option_index("h100-1"))
    batch = batch_signals([record], catalog.slot_kinds, len(catalog.options))
    for tick in range(3):
        replicas, options = planner.decide(batch, tick * 15.0)
    # Forecast 25 requests/s; 25 / (14.2857 * 0.8 = 11.43) = 2.19 -> 3 replicas.
    assert replicas.tolist() == [3]
    assert options.tolist() == [catalog.option_index("h100-1")]


def test_predictive_switches_to_cheaper_option(catalog):
    l40s = {"name": "l40s", "gpu": "L40S-48GB", "nodes": 1, "gpus_per_node": 8}
    spec = {"name": "llm", "model": "llama-3.1-8b", "max_replicas": 8, "initial_option": "h100-1",
            "initial_replicas": 1, "slo_ttft_p95_s": 1.0}
    cluster = make_cluster(catalog, [H100, l40s], [spec])
    record = WorkloadSignals(name="llm", request_rate=1.5, mean_input_tokens=1000.0, mean_output_tokens=100.0,
                             desired_replicas=1, ready_replicas=1, option_index=catalog.option_index("h100-1"),
                             free_slots={kind: 8.0 for kind in catalog.slot_kinds})
    batch = batch_signals([record], catalog.slot_kinds, len(catalog.options))
    # One l40s-1 replica serves 4.08 requests/s at this mix. At 1.5 requests/s (rho 0.37) the
    # Erlang tail leaves 1.6 % of requests over the SLO, so one replica at 1.861 USD/h
    # replaces one h100-1 at 6.88 USD/h, a saving of 73 %.
    for saving, expected in ((0.2, "l40s-1"), (0.8, "h100-1")):
        planner = PredictivePlanner(PredictiveSettings(prediction_z=0.0, switch_saving=saving))
        planner.reset(EncoderContext.from_cluster(cluster), ["llm"], 15.0)
        replicas, options = planner.decide(batch, 0.0)
        assert replicas.tolist() == [1]
        assert options.tolist() == [catalog.option_index(expected)]


# Oracle


def test_bridge_gaps_by_hand():
    required = np.array([2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1])
    # Level 2 is Ready at tick 0. Its gap 1..2 (2 ticks) is at most L + 1 = 3, so the pod stays;
    # the gap 4..9 (6 ticks) is longer, so it goes and returns for tick 10. The 2 ticks after
    # tick 10 cost more kept (2) than deleted (1 drain tick).
    plan = bridge_gaps(required, startup=2, initial_ready=2)
    assert plan.tolist() == [2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1]
    # Scale-ups are issued L = 2 ticks ahead: desired is the max over ticks k..k+2.
    assert issue_schedule(plan, 2).tolist() == [2, 2, 2, 2, 1, 1, 1, 1, 2, 2, 2, 1, 1]


def test_bridge_gaps_cannot_cover_cold_start():
    # A pod that is not Ready at tick 0 serves from tick L = 3 at the earliest.
    assert bridge_gaps(np.array([3, 3, 1, 1, 1, 1]), startup=3, initial_ready=1).tolist() == [1, 1, 1, 1, 1, 1]


def test_oracle_schedule_tiny_scenario(catalog):
    cluster = h100_cluster(catalog)
    # 5 requests/s need 1 replica (rho 0.35). 20 requests/s exceed one replica's 14.29 and need
    # 2 (rho 0.7, Erlang tail about 3e-4 of requests over the SLO).
    rates = [5.0] * 6 + [20.0, 20.0] + [5.0] * 4
    series = [series_of_rates(rates)]
    oracle = build_oracle(cluster, series, OracleSettings())
    ctx = EncoderContext.from_cluster(cluster)
    lag = startup_ticks(ctx, 0, catalog.option_index("h100-1")) + measure_ready_offset(cluster)
    # Level 2 is needed at ticks 6 and 7 only: requested from tick 6 - L, removed after tick 7.
    expected = [2 if 6 - lag <= k <= 7 else 1 for k in range(12)]
    assert oracle.schedule[:, 0].tolist() == expected
    trace = run_episode(oracle, cluster, series)
    ready = trace.array("ready")[:, 0]
    assert ready[6] == 2
    assert ready[7] == 2
    assert ready[8] == 1


def test_oracle_objective_selects_option(catalog):
    # At 1 request/s one pod of either option meets the SLO. An L40S costs
    # 1.86 USD/h for one GPU; a 3g.40gb slice of an H100 costs 2.95 USD/h for
    # 3/7 of a GPU. Dollars pick the L40S, GPU-hours the slice.
    pools = [{"name": "l40s", "gpu": "L40S-48GB", "nodes": 1, "gpus_per_node": 2},
             {"name": "mig", "gpu": "H100-80GB", "nodes": 1, "gpus_per_node": 1, "mig_layout": {"3g.40gb": 2}}]
    spec = {"name": "llm", "model": "llama-3.1-8b", "min_replicas": 1, "max_replicas": 2,
            "initial_option": "l40s-1", "initial_replicas": 1, "slo_ttft_p95_s": 2.0}
    cluster = make_cluster(catalog, pools, [spec])
    # 60 ticks, so that the switch from the initial L40S pod pays off.
    series = [series_of_rates([1.0] * 60)]
    by_dollars = build_oracle(cluster, series, OracleSettings(options=("l40s-1", "h100-mig-3g.40gb")))
    by_hours = build_oracle(cluster, series, OracleSettings(options=("l40s-1", "h100-mig-3g.40gb"),
                                                            objective="gpu_hours"))
    assert catalog.option_names[by_dollars.options[0]] == "l40s-1"
    assert catalog.option_names[by_hours.options[0]] == "h100-mig-3g.40gb"
    with pytest.raises(ValueError, match="oracle.objective"):
        OracleSettings(objective="watts")


# Tuned HPA


def result(cost, attainment, target=0.7):
    return CandidateResult(Candidate(HpaSettings(target=target)), cost, attainment)


def test_select_candidate_cheapest_meeting_goal():
    results = [result(10.0, 0.99), result(6.0, 0.96), result(5.0, 0.90), result(7.0, 0.97)]
    assert select_candidate(results, 0.95).cost_usd == 6.0
    # No result reaches 0.995: the best attainment wins.
    assert select_candidate(results, 0.995).cost_usd == 10.0
    # Equal attainment: the cheaper one.
    assert select_candidate([result(9.0, 0.9), result(8.0, 0.9)], 0.95).cost_usd == 8.0


def test_tune_hpa_grid_with_fixed_results(catalog):
    cluster = h100_cluster(catalog)
    seen = []

    def runner(candidates, cluster, series, seeds):
        seen.extend(candidates)
        # Cost 10 * (1 - target), attainment 1 - 0.2 * target: targets 0.5, 0.6, 0.7 reach 0.85.
        return [CandidateResult(c, 10.0 * (1.0 - c.hpa.target), 1.0 - 0.2 * c.hpa.target) for c in candidates]

    settings = TuningSettings(slo_goal=0.85)
    chosen = tune_hpa(cluster, [[series_of_rates([5.0])]], HpaSettings(), settings, search_options=False,
                      runner=runner)
    assert chosen.candidate.hpa.target == pytest.approx(0.7)
    assert len(seen) == 4 * 2 * 2


def test_tune_hpa_real_runs_pick_cheaper_target(catalog):
    cluster = h100_cluster(catalog, initial_replicas=2)
    # 20 requests/s on 2 replicas is rho 0.7. Target 0.5: ratio 1.4 -> 3 replicas; target 0.9:
    # ratio 0.78 -> ceil(1.56) = 2 replicas. Both keep p95 TTFT within 1 s, so 0.9 is cheaper.
    settings = TuningSettings(targets=(0.5, 0.9), tolerances=(0.1,), downscale_stabilization_s=(60.0,),
                              slo_goal=0.95, seeds=(0,))
    chosen = tune_hpa(cluster, [[constant_series(20.0, 40, 1000.0, 100.0)]], HpaSettings(), settings,
                      search_options=False)
    assert chosen.candidate.hpa.target == pytest.approx(0.9)
    assert chosen.slo_attainment >= 0.95


# Report loading


def test_load_results_separates_repeated_seeds(tmp_path):
    for name, seeds in (("a", [0, 1]), ("b", [1]), ("c", [2])):
        (tmp_path / name).mkdir()
        records = [{"trace": "t", "controller": "hpa", "seed": s, "gpu_hours": 1.0} for s in seeds]
        (tmp_path / name / "results.json").write_text(json.dumps({"records": records}))
    loaded = load_results([tmp_path / n / "results.json" for n in ("a", "b", "c")])
    names = [(r["controller"], r["seed"]) for r in loaded]
    # b repeats seed 1, so it gets its own row; c adds a new seed to hpa.
    assert names == [("hpa", 0), ("hpa", 1), ("hpa [b]", 1), ("hpa", 2)]


# Every baseline in one evaluation


def test_settings_reject_unknown_key(default_cfg):
    cfg = OmegaConf.merge(default_cfg, {"eval": {"kpa": {"panic_treshold": 2.0}}})
    from envs.config import build_cluster

    with pytest.raises(ValueError, match="panic_treshold"):
        make_controller("kpa", ControllerContext(cfg=cfg, cluster=build_cluster(cfg)))


@pytest.mark.slow
def test_evaluate_every_baseline(default_cfg, tmp_path):
    controllers = ["hpa", "tuned_hpa", "hpa_best_static", "kpa", "predictive", "static", "oracle"]
    eval_cfg = OmegaConf.load(ROOT / "conf/eval/default.yaml")
    eval_cfg.controllers = controllers
    eval_cfg.seeds = [0]
    # One grid point per option keeps the tuned baselines short.
    eval_cfg.tuned_hpa.targets = [0.7]
    eval_cfg.tuned_hpa.tolerances = [0.1]
    eval_cfg.tuned_hpa.downscale_stabilization_s = [300.0]
    cfg = OmegaConf.merge(default_cfg, {"eval": eval_cfg})
    records = evaluate(cfg, tmp_path)
    assert [r["controller"] for r in records] == controllers
    keys = {"ticks", "requests", "gpu_hours", "cost_usd", "slo_attainment", "ttft_p50_s", "ttft_p95_s",
            "ttft_p99_s", "dropped_requests", "scale_events", "allocation_changes", "pending_pod_seconds",
            "gpu_hours_by_option", "controller", "trace", "seed", "wall_s"}
    for record in records:
        assert keys <= set(record), keys - set(record)
        assert 0.0 <= record["slo_attainment"] <= 1.0
    # Every controller replays the same traffic.
    assert len({r["requests"] for r in records}) == 1
    assert (tmp_path / "results.json").is_file()
