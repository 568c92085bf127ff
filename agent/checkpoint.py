"""Policy checkpoints: safetensors weights plus a JSON metadata file.

A checkpoint is two files, ``<name>.safetensors`` and ``<name>.json``. The
metadata records the observation version, the action layout, the catalog's
option names, the training config, the traces, the code version, an
evaluation summary and the SHA-256 of the weights file. Loading never
unpickles anything: safetensors holds only tensors, and the hash, versions
and layout are checked before the weights are used.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from agent.atomic import write_atomic, write_json_atomic
from envs.actions import N_LEVELS, PEAK_UTILIZATION, STABILIZATION_TICKS, TARGET_UTILIZATION
from envs.observation import OBSERVATION_VERSION, observation_size

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or does not match this code or catalog."""


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any]

    @property
    def net_arch(self) -> list[int]:
        return list(self.metadata["policy"]["net_arch"])

    @property
    def option_names(self) -> list[str]:
        return list(self.metadata["action_layout"]["options"])


def action_layout(option_names: list[str]) -> dict[str, Any]:
    return {
        "levels": N_LEVELS,
        "target_utilization": list(TARGET_UTILIZATION),
        "peak_utilization": list(PEAK_UTILIZATION),
        "stabilization_ticks": STABILIZATION_TICKS,
        "keep_option_action": True,
        "options": list(option_names),
    }


def code_version() -> str:
    """Return ``git describe`` of the source tree, or the package version outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    path_stem: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    *,
    option_names: list[str],
    net_arch: list[int],
    training_config: Mapping[str, Any] | None = None,
    traces: list[str] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` atomically; return both paths."""
    stem = Path(path_stem)
    weights_path = stem.with_suffix(".safetensors")
    meta_path = stem.with_suffix(".json")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    write_atomic(weights_path, lambda tmp: save_file(tensors, str(tmp)))
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "observation_version": OBSERVATION_VERSION,
        "observation_size": observation_size(len(option_names)),
        "action_layout": action_layout(option_names),
        "policy": {"class": "MaskableActorCriticPolicy", "net_arch": list(net_arch)},
        "weights_file": weights_path.name,
        "weights_sha256": sha256_file(weights_path),
        "code_version": code_version(),
        "training_config": dict(training_config or {}),
        "traces": list(traces or []),
        "evaluation": dict(evaluation or {}),
    }
    if extra:
        metadata.update(extra)
    write_json_atomic(meta_path, metadata)
    return weights_path, meta_path


def record_evaluation(meta_path: str | Path, evaluation: Mapping[str, Any]) -> Path:
    """Store an evaluation summary in a checkpoint's metadata, atomically.

    The checkpoint is loaded first, so a corrupt or foreign one raises
    CheckpointError and is not rewritten. The weights hash covers the
    weights file only, so the metadata may change without invalidating it.
    """
    meta_path = Path(meta_path)
    load_checkpoint(meta_path)
    metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    metadata["evaluation"] = dict(evaluation)
    return write_json_atomic(meta_path, metadata)


def load_checkpoint(path: str | Path, *, option_names: list[str] | None = None) -> Checkpoint:
    """Load and verify a checkpoint from its ``.json``, ``.safetensors`` or stem path.

    Raises CheckpointError naming what differs: a missing file, invalid JSON,
    a weights hash mismatch, another observation version, another action
    layout, or (when ``option_names`` is given) another allocation catalog.
    """
    stem = Path(path)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    meta_path = stem.with_suffix(".json")
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint metadata {meta_path} not found; pass the path of a .json written by training")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint metadata {meta_path} is not valid JSON ({error}); the file is corrupt") from error
    if not isinstance(metadata, dict):
        raise CheckpointError(f"checkpoint metadata {meta_path} must be a JSON object")
    for key in ("format", "observation_version", "action_layout", "weights_file", "weights_sha256", "policy"):
        if key not in metadata:
            raise CheckpointError(f"checkpoint metadata {meta_path} lacks {key!r}; it was not written by this tool")

    if metadata["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{meta_path}: checkpoint format {metadata['format']} is not supported (expected {CHECKPOINT_FORMAT})")
    if metadata["observation_version"] != OBSERVATION_VERSION:
        raise CheckpointError(
            f"{meta_path}: observation version {metadata['observation_version']} differs from this code's "
            f"{OBSERVATION_VERSION}; retrain the policy or use the release that trained it"
        )
    layout = metadata["action_layout"]
    if not isinstance(layout, dict) or not isinstance(layout.get("options", []), list):
        raise CheckpointError(
            f"{meta_path}: action_layout must be a JSON object with an 'options' list, got {layout!r}; "
            "the metadata is corrupt, so use a checkpoint written by training"
        )
    expected = action_layout(list(layout.get("options", [])))
    layout_keys = ("levels", "target_utilization", "peak_utilization", "stabilization_ticks", "keep_option_action")
    if any(layout.get(key) != expected[key] for key in layout_keys):
        raise CheckpointError(
            f"{meta_path}: action layout (levels {layout.get('levels')}, utilisation targets "
            f"{layout.get('target_utilization')} / {layout.get('peak_utilization')}, stabilisation "
            f"{layout.get('stabilization_ticks')} ticks) differs from this code's (levels {N_LEVELS}, "
            f"{list(TARGET_UTILIZATION)} / {list(PEAK_UTILIZATION)}, {STABILIZATION_TICKS} ticks); retrain the policy"
        )
    if option_names is not None and list(layout.get("options", [])) != list(option_names):
        raise CheckpointError(
            f"{meta_path}: the policy was trained on allocation options {layout.get('options')}, "
            f"but the catalog has {list(option_names)}; use the catalog it was trained with or retrain"
        )

    policy = metadata["policy"]
    net_arch = policy.get("net_arch") if isinstance(policy, dict) else None
    if not isinstance(net_arch, list) or not all(isinstance(width, int) and width > 0 for width in net_arch):
        raise CheckpointError(
            f"{meta_path}: policy.net_arch must be a list of positive layer widths, got {net_arch!r}; "
            "the metadata is corrupt, so use a checkpoint written by training"
        )

    weights_path = _weights_path(meta_path, metadata["weights_file"])
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights {weights_path} not found beside {meta_path.name}")
    digest = sha256_file(weights_path)
    if digest != metadata["weights_sha256"]:
        raise CheckpointError(
            f"{weights_path}: SHA-256 {digest[:16]}... does not match {str(metadata['weights_sha256'])[:16]}... "
            "recorded in the metadata; the weights were changed or truncated"
        )
    try:
        state_dict = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({error})") from error
    return Checkpoint(state_dict=state_dict, metadata=metadata)


def _weights_path(meta_path: Path, weights_file: object) -> Path:
    """Return the weights file named in the metadata, which must be a plain file name beside ``meta_path``.

    A path with folders is rejected rather than cut to its last part, so that
    metadata cannot make the loader read a file outside the checkpoint folder.
    """
    name = weights_file if isinstance(weights_file, str) else ""
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise CheckpointError(
            f"{meta_path}: weights_file {weights_file!r} is not a file name in the checkpoint folder; "
            f"set it to the name of the .safetensors file beside {meta_path.name}"
        )
    return meta_path.parent / name
