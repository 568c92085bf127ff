"""Profile derivation of scripts/generate_profiles.py on hand-computed inputs.

Only the last test runs aiconfigurator, and it is skipped when the optional extra
``profiles`` is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import yaml

from envs.cluster.catalog import CatalogError, parse_catalog

ROOT = Path(__file__).resolve().parent.parent
_SPEC = importlib.util.spec_from_file_location("generate_profiles", ROOT / "scripts" / "generate_profiles.py")
gp = importlib.util.module_from_spec(_SPEC)
sys.modules["generate_profiles"] = gp  # dataclasses look their module up while the file executes
_SPEC.loader.exec_module(gp)

GIB = 1 << 30
LLAMA_8B = {"num_attention_heads": 32, "hidden_size": 4096, "num_key_value_heads": 8, "num_hidden_layers": 32}
MIX = gp.Mix(2000, 100)
# A whole-H100 sweep shaped like aiconfigurator's Llama-3.1-8B output at 2000:100 tokens.
SWEEP = gp.Sweep(mix=MIX, itl_s=0.00624, non_kv_gib=18.5, prefill_tokens_per_s=47000.0,
                 decode_points=((1, 160.0), (16, 1500.0), (64, 5000.0), (208, 8000.0)))


def test_kv_bytes_per_token_models():
    assert gp.kv_bytes_per_token_per_gpu(LLAMA_8B, tp=1) == 128 * 1024
    assert gp.kv_bytes_per_token_per_gpu(LLAMA_8B, tp=2) == 64 * 1024
    assert gp.kv_bytes_per_token_per_gpu(gp.QWEN25_32B_CONFIG, tp=1) == 256 * 1024
    assert gp.kv_bytes_per_token_per_gpu(gp.QWEN25_32B_CONFIG, tp=4) == 64 * 1024


def test_kv_bytes_more_ranks_than_kv_heads():
    # Two KV heads on four ranks: each rank still stores one full head.
    config = {"num_attention_heads": 16, "hidden_size": 2048, "head_dim": 256, "num_key_value_heads": 2,
              "num_hidden_layers": 10}
    assert gp.kv_bytes_per_token_per_gpu(config, tp=4) == 2 * 10 * 1 * 256 * 2


def test_non_kv_memory_subtracts_batch_kv():
    # One sequence of 2,100 tokens at 128 KiB each is 0.25634765625 GiB.
    assert gp.non_kv_memory_gib(18.78, 1, 2100, 131072) == pytest.approx(18.52365234375)
    assert gp.non_kv_memory_gib(20.58, 8, 2100, 131072) == pytest.approx(20.58 - 2.05078125)


def test_kv_pool_and_concurrency():
    pool = gp.kv_pool_tokens(72.0, 18.5, 131072)
    assert pool == 438272  # 53.5 GiB / 128 KiB
    assert pool // MIX.sequence_tokens == 208
    assert gp.kv_pool_tokens(9.0, 18.5, 131072) == 0


def test_prefill_rate_takes_saturated_batch():
    rate = gp.prefill_rate([(1, 0.0424), (4, 0.16)], input_tokens=2000)
    assert rate == pytest.approx(50000.0)


def test_decode_rate_respects_batch_limit():
    points = SWEEP.decode_points
    assert gp.decode_rate(points, max_batch=208) == 8000.0
    assert gp.decode_rate(points, max_batch=68) == 5000.0
    assert gp.decode_rate(points, max_batch=0) == 0.0


def test_mig_scaling_slices(catalog):
    option = catalog.options[catalog.option_index("h100-mig-3g.40gb")]
    scaling = gp.mig_scaling(option, parent_memory_gb=80, usable_parent_gib=72.0)
    assert scaling.usable_gib == pytest.approx(36.0)
    assert scaling.compute == pytest.approx(3 / 7 * 98 / 108)
    assert scaling.itl == pytest.approx(2.0)
    assert "3g.40gb" in scaling.rule

    smallest = gp.mig_scaling(catalog.options[catalog.option_index("h100-mig-1g.10gb")], 80, 72.0)
    assert smallest.usable_gib == pytest.approx(9.0)
    assert smallest.itl == pytest.approx(8.0)

    full = gp.mig_scaling(catalog.options[catalog.option_index("h100-mig-7g.80gb")], 80, 72.0)
    assert full.compute == pytest.approx(98 / 108)
    assert full.itl == pytest.approx(1.0)


def test_shared_scaling_factors(catalog):
    timeslice = gp.shared_scaling(catalog.options[catalog.option_index("h100-ts-2")], 80, 72.0, aggregate=0.59)
    assert timeslice.usable_gib == pytest.approx(36.0)
    assert timeslice.compute == pytest.approx(0.295)
    assert timeslice.itl == pytest.approx(1.78)

    mps = gp.shared_scaling(catalog.options[catalog.option_index("h100-mps-2")], 80, 72.0, aggregate=0.74)
    assert mps.compute == pytest.approx(0.37)
    assert mps.itl == pytest.approx(1.315)
    assert gp.SHARING_THROUGHPUT_DEFAULT == pytest.approx({"timeslice": 0.59, "mps": 0.74})


def test_derive_whole_gpu_figures():
    figures = gp.derive_figures(SWEEP, gp.Scaling(usable_gib=72.0), 131072)
    assert figures.kv_pool_tokens == 438272
    assert figures.max_concurrency == 208
    assert figures.decode_tokens_per_s == 8000.0
    assert figures.prefill_tokens_per_s == 47000.0
    assert figures.itl_s == 0.00624


def test_derive_mig_slice_from_parent():
    scaling = gp.Scaling(usable_gib=36.0, compute=3 / 7 * 98 / 108, itl=2.0)
    figures = gp.derive_figures(SWEEP, scaling, 131072)
    assert figures.kv_pool_tokens == 143360  # 17.5 GiB / 128 KiB
    assert figures.max_concurrency == 68
    # Decode saturates at the slice's 68 sequences, so the parent's batch-64 rate applies.
    assert figures.decode_tokens_per_s == pytest.approx(5000.0 * 294 / 756)
    assert figures.prefill_tokens_per_s == pytest.approx(47000.0 * 294 / 756)
    assert figures.itl_s == pytest.approx(0.01248)


def test_combine_single_mix_is_identity():
    figures = gp.Figures(40000.0, 8000.0, 0.006, 400000, 190)
    combined = gp.combine_mixes([(MIX, figures)])
    assert combined.prefill_tokens_per_s == pytest.approx(40000.0)
    assert combined.decode_tokens_per_s == pytest.approx(8000.0)
    assert combined.itl_s == pytest.approx(0.006)
    assert combined.max_concurrency == 190


def test_combine_two_weighted_mixes():
    long_prompts = (gp.Mix(2000, 100, 1.0), gp.Figures(40000.0, 8000.0, 0.006, 400000, 190))
    chat = (gp.Mix(1000, 200, 3.0), gp.Figures(50000.0, 6000.0, 0.008, 420000, 350))
    combined = gp.combine_mixes([long_prompts, chat])
    assert combined.prefill_tokens_per_s == pytest.approx(5000 / 0.11)  # 2000/40000 + 3000/50000 s
    assert combined.decode_tokens_per_s == pytest.approx(700 / 0.1125)  # 100/8000 + 600/6000 s
    assert combined.itl_s == pytest.approx((100 * 0.006 + 600 * 0.008) / 700)
    assert combined.kv_pool_tokens == 400000
    assert combined.max_concurrency == 280  # 400000 / 1425 mean tokens


def test_combine_unfit_mix_makes_option_unfit():
    fits = (MIX, gp.Figures(40000.0, 8000.0, 0.006, 400000, 190))
    too_long = (gp.Mix(500000, 100), gp.Figures(40000.0, 8000.0, 0.006, 400000, 0))
    combined = gp.combine_mixes([fits, too_long])
    assert combined.max_concurrency == 0
    assert combined.kv_pool_tokens == 400000


def test_profile_entry_fit_and_unfit():
    entry = gp.profile_entry(gp.Figures(47000.4, 8000.6, 0.0062449, 438272, 208), 60.0, "src", 18.5, 72.0)
    assert entry == {"prefill_tokens_per_s": 47000, "decode_tokens_per_s": 8001, "max_concurrency": 208,
                     "itl_s": 0.00624, "startup_s": 60.0, "source": "src"}

    unfit = gp.profile_entry(gp.Figures(0.0, 0.0, 0.0, 0, 0), 60.0, "src", 18.5, 9.0)
    assert unfit["fits"] is False
    assert "18.5 of 9.0 GiB" in unfit["source"]


def test_parse_mix_accepts_and_rejects():
    assert gp.parse_mix("2000:100") == gp.Mix(2000, 100, 1.0)
    assert gp.parse_mix("1155:211:2") == gp.Mix(1155, 211, 2.0)
    for text in ("2000x100", "0:100", "1:2:3:4", "a:b"):
        with pytest.raises(argparse.ArgumentTypeError, match="ISL:OSL"):
            gp.parse_mix(text)


def test_write_catalog_atomic(tmp_path):
    raw = yaml.safe_load((ROOT / "conf/catalog/handbook.yaml").read_text())
    target = tmp_path / "catalog.yaml"
    gp.write_catalog(raw, target, "python scripts/generate_profiles.py")
    assert parse_catalog(yaml.safe_load(target.read_text())).option_names
    assert target.read_text().startswith("# Generated by scripts/generate_profiles.py")

    before = target.read_text()
    broken = dict(raw, models={"m": {"profiles": {"no-such-option": {"fits": False}}}})
    with pytest.raises(CatalogError):
        gp.write_catalog(broken, target, "python scripts/generate_profiles.py")
    assert target.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["catalog.yaml"]


def test_committed_catalog_loads():
    raw = yaml.safe_load((ROOT / "conf/catalog/default.yaml").read_text())
    catalog = parse_catalog(raw)
    assert set(catalog.models) == set(gp.MODEL_SOURCES)
    for model in catalog.models.values():
        assert model.profiles
        for profile in model.profiles.values():
            assert profile.source.startswith("aiconfigurator 0.12.0")
    assert catalog.model("llama-3.1-8b").profile("h100-1").fits


@pytest.mark.slow
def test_tiny_sweep_runs_aiconfigurator(tmp_path):
    pytest.importorskip("aiconfigurator")
    output = tmp_path / "catalog.yaml"
    gp.main(["--models", "llama-3.1-8b", "--options", "h100-1", "--batch-sizes", "16", "--output", str(output)])
    catalog = parse_catalog(yaml.safe_load(output.read_text()))
    model = catalog.model("llama-3.1-8b")

    whole = model.profile("h100-1")
    assert whole.fits
    assert 0.002 < whole.itl_s < 0.02
    assert whole.decode_tokens_per_s > 1 / whole.itl_s
    assert not model.profile("h100-mig-1g.10gb").fits
    assert not model.profile("a100-1").fits  # not swept, so absent

    slice_3g = model.profile("h100-mig-3g.40gb")
    assert slice_3g.fits
    assert slice_3g.max_concurrency < whole.max_concurrency
    assert math.isclose(slice_3g.itl_s, whole.itl_s * 2, rel_tol=2e-3)
