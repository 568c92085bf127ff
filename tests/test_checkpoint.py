"""Checkpoint round trip and rejection of corrupt, mismatched or pickled checkpoints."""

import json
import pickle

import pytest
import torch

from agent.checkpoint import CheckpointError, load_checkpoint, record_evaluation, save_checkpoint
from agent.policy import build_policy, policy_from_checkpoint

OPTIONS = ["h100-1", "a100-1", "l40s-1"]


@pytest.fixture()
def saved(tmp_path):
    policy = build_policy(len(OPTIONS), [16, 16])
    save_checkpoint(tmp_path / "policy", policy.state_dict(), option_names=OPTIONS, net_arch=[16, 16],
                    training_config={"seed": 3}, traces=["embedded:x.csv"], evaluation={"slo": 0.99})
    return tmp_path / "policy", policy


def test_round_trip_restores_identical_weights(saved):
    stem, policy = saved
    checkpoint = load_checkpoint(stem.with_suffix(".json"), option_names=OPTIONS)
    restored = policy_from_checkpoint(checkpoint)
    for name, tensor in policy.state_dict().items():
        assert torch.equal(tensor, restored.state_dict()[name]), name
    assert checkpoint.metadata["training_config"] == {"seed": 3}
    assert checkpoint.metadata["evaluation"] == {"slo": 0.99}


def test_truncated_weights_are_rejected(saved):
    stem, _ = saved
    weights = stem.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(stem)


def test_truncated_metadata_is_rejected(saved):
    stem, _ = saved
    meta = stem.with_suffix(".json")
    meta.write_text(meta.read_text()[:50])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(stem)


def test_other_observation_version_is_rejected(saved):
    stem, _ = saved
    meta = stem.with_suffix(".json")
    data = json.loads(meta.read_text())
    data["observation_version"] = 999
    meta.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="observation version 999"):
        load_checkpoint(stem)


def test_other_action_layout_is_rejected(saved):
    stem, _ = saved
    meta = stem.with_suffix(".json")
    data = json.loads(meta.read_text())
    data["action_layout"]["levels"] = 3
    meta.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="action layout"):
        load_checkpoint(stem)


def test_other_catalog_is_rejected(saved):
    stem, _ = saved
    with pytest.raises(CheckpointError, match="allocation options"):
        load_checkpoint(stem, option_names=["h100-1"])


class _Payload:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(_Payload.marker),))


def test_pickled_weights_are_rejected_without_running(saved, tmp_path):
    stem, _ = saved
    _Payload.marker = str(tmp_path / "ran")
    weights = stem.with_suffix(".safetensors")
    weights.write_bytes(pickle.dumps(_Payload()))
    # Even with the hash updated to match, the file is parsed as safetensors, never unpickled.
    import hashlib

    meta = stem.with_suffix(".json")
    data = json.loads(meta.read_text())
    data["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(stem)
    assert not (tmp_path / "ran").exists()


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.json")


def test_record_evaluation_keeps_weights_valid(saved):
    stem, _ = saved
    meta = stem.with_suffix(".json")
    record_evaluation(meta, {"metrics": {"azure_code": {"policy": {"gpu_hours": [0.5, 0.01, 5.0]}}}})
    checkpoint = load_checkpoint(meta, option_names=OPTIONS)
    assert checkpoint.metadata["evaluation"]["metrics"]["azure_code"]["policy"]["gpu_hours"] == [0.5, 0.01, 5.0]
    # The rest of the metadata is unchanged.
    assert checkpoint.metadata["training_config"] == {"seed": 3}


def test_record_evaluation_refuses_a_corrupt_checkpoint(saved):
    stem, _ = saved
    weights = stem.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    before = stem.with_suffix(".json").read_text()
    with pytest.raises(CheckpointError):
        record_evaluation(stem.with_suffix(".json"), {"metrics": {}})
    assert stem.with_suffix(".json").read_text() == before
