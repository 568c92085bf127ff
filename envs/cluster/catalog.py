"""Allocation catalog: GPU types, allocation options and per-workload profiles.

The catalog is the one description of GPU shapes that the simulator, the
baselines and the live runtime share. An *allocation option* is what one pod
of an inference Deployment gets: a whole GPU, several GPUs for tensor
parallelism, a MIG slice, or a time-sliced or MPS share of one GPU. A
*slot kind* is the unit a node pool offers and the scheduler hands out
(``H100-80GB/whole``, ``A100-80GB/mig-3g.40gb``, ``L40S/ts``); an option
takes ``devices`` slots of one kind per pod.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

SHARING_KINDS = ("whole", "mig", "timeslice", "mps")


class CatalogError(ValueError):
    """Invalid catalog, cluster or workload configuration."""


@dataclass(frozen=True)
class GpuType:
    """A physical GPU model with its memory and on-demand price."""

    name: str
    memory_gb: float
    price_per_hour: float
    mig_capable: bool = False


@dataclass(frozen=True)
class AllocationOption:
    """What one pod gets: ``devices`` slots of kind ``slot_kind``.

    ``gpu_fraction`` is the share of the parent GPU one slot represents
    (1.0 for a whole GPU, 3/7 compute of an H100 for ``3g.40gb``). Price per
    pod-hour is the parent price times ``gpu_fraction`` times ``devices``.
    """

    name: str
    gpu: str
    sharing: str
    devices: int
    gpu_fraction: float
    memory_gb: float
    price_per_hour: float
    device_class: str
    dra_request: Mapping[str, Any]
    extended_resource: str
    mig_profile: str | None = None
    share_replicas: int = 1

    @property
    def slot_kind(self) -> str:
        """Scheduler resource kind, for example ``H100-80GB/mig-3g.40gb``."""
        if self.sharing == "whole":
            return f"{self.gpu}/whole"
        if self.sharing == "mig":
            return f"{self.gpu}/mig-{self.mig_profile}"
        return f"{self.gpu}/{'ts' if self.sharing == 'timeslice' else 'mps'}"

    @property
    def gpu_equivalents(self) -> float:
        """Whole GPUs one pod holds, used for GPU-hours."""
        return self.devices * self.gpu_fraction


@dataclass(frozen=True)
class OptionProfile:
    """Serving performance of one workload on one allocation option, per replica.

    Attributes:
        fits: whether the model weights plus a minimal KV cache fit the option.
        prefill_tokens_per_s: input tokens per second at saturation.
        decode_tokens_per_s: output tokens per second at saturation (all sequences).
        max_concurrency: sequences the KV cache holds at the workload's mean length.
        itl_s: inter-token latency of one sequence at light load, seconds.
        startup_s: cold start from scheduling to Ready (image pull, load, warm-up).
    """

    fits: bool
    prefill_tokens_per_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    max_concurrency: int = 0
    itl_s: float = 0.0
    startup_s: float = 60.0
    source: str = ""


@dataclass(frozen=True)
class WorkloadModel:
    """A served model with its per-option profiles."""

    name: str
    params_b: float
    weights_gb: float
    profiles: Mapping[str, OptionProfile]

    def profile(self, option: str) -> OptionProfile:
        """Return the profile of ``option``; an unprofiled option does not fit."""
        return self.profiles.get(option, OptionProfile(fits=False))


@dataclass(frozen=True)
class Catalog:
    """GPU types, allocation options in a fixed order, and workload models."""

    gpus: Mapping[str, GpuType]
    options: tuple[AllocationOption, ...]
    models: Mapping[str, WorkloadModel] = field(default_factory=dict)

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    @property
    def slot_kinds(self) -> tuple[str, ...]:
        """Distinct slot kinds in first-seen option order."""
        kinds: list[str] = []
        for option in self.options:
            if option.slot_kind not in kinds:
                kinds.append(option.slot_kind)
        return tuple(kinds)

    def option_index(self, name: str) -> int:
        """Return the index of option ``name`` or raise CatalogError naming the known ones."""
        for index, option in enumerate(self.options):
            if option.name == name:
                return index
        raise CatalogError(
            f"unknown allocation option {name!r}; the catalog has {list(self.option_names)}. "
            "Use one of those names or add the option to the catalog."
        )

    def model(self, name: str) -> WorkloadModel:
        if name not in self.models:
            raise CatalogError(
                f"unknown model {name!r}; the catalog has {sorted(self.models)}. "
                "Use one of those names or add the model with its profiles to the catalog."
            )
        return self.models[name]


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping or mapping[key] is None:
        raise CatalogError(f"{where}: missing required key {key!r}")
    return mapping[key]


def _positive(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise CatalogError(f"{where}: expected a number, got {value!r}") from error
    if not math.isfinite(number) or number <= 0:
        raise CatalogError(f"{where}: must be a finite number above 0, got {value!r}")
    return number


def parse_catalog(raw: Mapping[str, Any]) -> Catalog:
    """Build a Catalog from the plain mapping of ``conf/catalog/*.yaml``.

    Option prices are derived here from the parent GPU's price, so the YAML
    never states a price twice.
    """
    gpus: dict[str, GpuType] = {}
    for name, spec in dict(_require(raw, "gpus", "catalog")).items():
        where = f"catalog.gpus.{name}"
        gpus[name] = GpuType(
            name=name,
            memory_gb=_positive(_require(spec, "memory_gb", where), f"{where}.memory_gb"),
            price_per_hour=_positive(
                _require(spec, "price_per_hour", where), f"{where}.price_per_hour"
            ),
            mig_capable=bool(spec.get("mig_capable", False)),
        )

    options: list[AllocationOption] = []
    for position, spec in enumerate(_require(raw, "options", "catalog")):
        where = f"catalog.options[{position}]"
        name = str(_require(spec, "name", where))
        where = f"catalog.options.{name}"
        gpu_name = str(_require(spec, "gpu", where))
        if gpu_name not in gpus:
            raise CatalogError(f"{where}.gpu: unknown GPU {gpu_name!r}; known: {sorted(gpus)}")
        gpu = gpus[gpu_name]
        sharing = str(spec.get("sharing", "whole"))
        if sharing not in SHARING_KINDS:
            raise CatalogError(f"{where}.sharing: {sharing!r} is not one of {SHARING_KINDS}")
        devices = int(spec.get("devices", 1))
        if devices < 1:
            raise CatalogError(f"{where}.devices: must be at least 1, got {devices}")
        fraction = float(spec.get("gpu_fraction", 1.0))
        if not 0 < fraction <= 1:
            raise CatalogError(f"{where}.gpu_fraction: must be in (0, 1], got {fraction}")
        if sharing == "mig" and not gpu.mig_capable:
            raise CatalogError(f"{where}: {gpu_name} does not support MIG")
        if sharing == "mig" and not spec.get("mig_profile"):
            raise CatalogError(f"{where}: a MIG option needs mig_profile, e.g. '3g.40gb'")
        if any(o.name == name for o in options):
            raise CatalogError(f"{where}: duplicate option name")
        options.append(
            AllocationOption(
                name=name,
                gpu=gpu_name,
                sharing=sharing,
                devices=devices,
                gpu_fraction=fraction,
                memory_gb=float(spec.get("memory_gb", gpu.memory_gb * fraction)),
                price_per_hour=gpu.price_per_hour * fraction * devices,
                device_class=str(_require(spec, "device_class", where)),
                dra_request=dict(spec.get("dra_request", {})),
                extended_resource=str(_require(spec, "extended_resource", where)),
                mig_profile=spec.get("mig_profile"),
                share_replicas=int(spec.get("share_replicas", 1)),
            )
        )
    if not options:
        raise CatalogError("catalog.options: at least one allocation option is required")

    models: dict[str, WorkloadModel] = {}
    for name, spec in dict(raw.get("models", {}) or {}).items():
        where = f"catalog.models.{name}"
        profiles: dict[str, OptionProfile] = {}
        for option_name, prof in dict(spec.get("profiles", {}) or {}).items():
            if option_name not in {o.name for o in options}:
                raise CatalogError(
                    f"{where}.profiles.{option_name}: no such option in catalog.options"
                )
            pwhere = f"{where}.profiles.{option_name}"
            fits = bool(prof.get("fits", True))
            if not fits:
                profiles[option_name] = OptionProfile(fits=False, source=str(prof.get("source", "")))
                continue
            profiles[option_name] = OptionProfile(
                fits=True,
                prefill_tokens_per_s=_positive(
                    _require(prof, "prefill_tokens_per_s", pwhere), f"{pwhere}.prefill_tokens_per_s"
                ),
                decode_tokens_per_s=_positive(
                    _require(prof, "decode_tokens_per_s", pwhere), f"{pwhere}.decode_tokens_per_s"
                ),
                max_concurrency=int(
                    _positive(_require(prof, "max_concurrency", pwhere), f"{pwhere}.max_concurrency")
                ),
                itl_s=_positive(_require(prof, "itl_s", pwhere), f"{pwhere}.itl_s"),
                startup_s=_positive(prof.get("startup_s", 60.0), f"{pwhere}.startup_s"),
                source=str(prof.get("source", "")),
            )
        models[name] = WorkloadModel(
            name=name,
            params_b=float(spec.get("params_b", 0.0)),
            weights_gb=float(spec.get("weights_gb", 0.0)),
            profiles=profiles,
        )
    return Catalog(gpus=gpus, options=tuple(options), models=models)


def option_prices(catalog: Catalog, names: Sequence[str] | None = None) -> list[float]:
    """Return the price per pod-hour of each option, in catalog order or for ``names``."""
    chosen = names if names is not None else catalog.option_names
    return [catalog.options[catalog.option_index(n)].price_per_hour for n in chosen]
