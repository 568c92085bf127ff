"""Generate the allocation catalog's performance profiles from NVIDIA's aiconfigurator.

    python scripts/generate_profiles.py                            # writes conf/catalog/default.yaml
    python scripts/generate_profiles.py --mix 2048:28 --mix 1155:211:2 --models llama-3.1-8b

aiconfigurator (the optional extra ``profiles``, version 0.12.0) runs offline from its bundled
performance database. Only this command needs it: training, evaluation and the runtime read the
YAML it writes. How each figure is derived is described in docs/profiles.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envs.cluster.catalog import AllocationOption, Catalog, CatalogError, parse_catalog  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOG = logging.getLogger("generate_profiles")
GIB = float(1 << 30)
KV_BYTES_PER_ELEMENT = 2  # bf16 KV cache, which aiconfigurator resolves for bf16 checkpoints

# Catalog GPU type -> aiconfigurator system name.
SYSTEMS = {"H100-80GB": "h100_sxm", "A100-80GB": "a100_sxm", "L40S-48GB": "l40s"}

# Qwen2.5-32B is not bundled with aiconfigurator 0.12.0, so its Hugging Face config.json
# (Qwen/Qwen2.5-32B, Qwen2ForCausalLM, 32.5 B parameters) is given here and written to a
# temporary model directory, which aiconfigurator accepts as a local model path.
QWEN25_32B_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 5120, "intermediate_size": 27648,
    "num_attention_heads": 40, "num_hidden_layers": 64, "num_key_value_heads": 8, "vocab_size": 152064,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "hidden_act": "silu",
    "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
# Catalog model name -> bundled aiconfigurator model id, or a config.json mapping.
MODEL_SOURCES: dict[str, str | Mapping[str, Any]] = {
    "llama-3.1-8b": "meta-llama/Meta-Llama-3.1-8B",
    "qwen2.5-32b": QWEN25_32B_CONFIG,
    "llama-3.1-70b": "meta-llama/Meta-Llama-3.1-70B",
}

# The 7g MIG instance of an A100 has 98 of its 108 SMs, so each slice gets s/7 of that share.
# NOTE: the A100 ratio is applied to H100 slices too, because no H100 SM count per slice was sourced.
MIG_COMPUTE_EFFICIENCY = 98 / 108
# NVIDIA Dynamo GPU-sharing results (two Qwen3-4B tenants on an A100-40GB) measured the pair's
# aggregate throughput at 0.45-0.73 of a dedicated GPU when time-sliced and 0.60-0.88 with MPS at
# 50 % SM caps. Median ITL was 1.36-2.2 and 1.10-1.53 times dedicated. The midpoints are used.
SHARING_ITL_FACTOR = {"timeslice": (1.36 + 2.2) / 2, "mps": (1.10 + 1.53) / 2}
SHARING_THROUGHPUT_DEFAULT = {"timeslice": (0.45 + 0.73) / 2, "mps": (0.60 + 0.88) / 2}


@dataclass(frozen=True)
class Mix:
    """One request shape of the workload: prompt and output tokens, and its share of requests."""

    input_tokens: int
    output_tokens: int
    weight: float = 1.0

    @property
    def sequence_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Sweep:
    """aiconfigurator estimates for one whole-GPU option and one mix, per replica."""

    mix: Mix
    itl_s: float  # time per output token at batch 1
    non_kv_gib: float  # per GPU: weights, activations and runtime reserve
    prefill_tokens_per_s: float
    decode_points: tuple[tuple[int, float], ...]  # (batch, output tokens/s) in decode alone


@dataclass(frozen=True)
class Scaling:
    """Scaling rule from whole-GPU estimates to one option."""

    usable_gib: float  # per GPU memory the engine may fill
    compute: float = 1.0  # factor on prefill and saturated decode throughput
    itl: float = 1.0  # factor on the batch-1 inter-token latency
    rule: str = ""


@dataclass(frozen=True)
class Figures:
    """Profile figures of one option for one mix, or for several combined."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    itl_s: float
    kv_pool_tokens: int
    max_concurrency: int


def parse_mix(text: str) -> Mix:
    """Parse ``ISL:OSL`` or ``ISL:OSL:WEIGHT``."""
    parts = text.split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (2, 3) or min(numbers) <= 0:
        raise argparse.ArgumentTypeError(
            f"invalid mix {text!r}: expected ISL:OSL or ISL:OSL:WEIGHT with positive numbers, e.g. 2000:100"
        )
    return Mix(int(numbers[0]), int(numbers[1]), numbers[2] if len(numbers) == 3 else 1.0)


def kv_bytes_per_token_per_gpu(config: Mapping[str, Any], tp: int) -> int:
    """Return the KV-cache bytes of one token on each GPU of a TP group (KV heads split across ranks)."""
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    kv_heads_per_gpu = math.ceil(int(config.get("num_key_value_heads", heads)) / tp)
    return 2 * int(config["num_hidden_layers"]) * kv_heads_per_gpu * head_dim * KV_BYTES_PER_ELEMENT


def non_kv_memory_gib(memory_gib: float, batch: int, sequence_tokens: int, kv_bytes_per_gpu: int) -> float:
    """Subtract the KV cache of ``batch`` full sequences from a per-GPU memory estimate."""
    return memory_gib - batch * sequence_tokens * kv_bytes_per_gpu / GIB


def kv_pool_tokens(usable_gib: float, non_kv_gib: float, kv_bytes_per_gpu: int) -> int:
    """Return the tokens that fit in the KV cache once weights and runtime memory are placed."""
    return max(0, math.floor((usable_gib - non_kv_gib) * GIB / kv_bytes_per_gpu))


def prefill_rate(points: Sequence[tuple[int, float]], input_tokens: int) -> float:
    """Return prompt tokens/s at saturation from (batch, TTFT seconds) of prefill-only runs."""
    return max(batch * input_tokens / ttft_s for batch, ttft_s in points)


def decode_rate(points: Sequence[tuple[int, float]], max_batch: int) -> float:
    """Return the highest output tokens/s among batches up to ``max_batch``, or 0 if there are none."""
    return max((rate for batch, rate in points if batch <= max_batch), default=0.0)


def mig_scaling(option: AllocationOption, parent_memory_gb: float, usable_parent_gib: float) -> Scaling:
    """Scale a MIG slice of s/7 compute and m/8 memory from its whole GPU.

    Compute-bound throughput (prefill, saturated decode) scales by s/7; bandwidth-bound batch-1 ITL by 8/m.
    """
    if not option.mig_profile or "g." not in option.mig_profile:
        raise CatalogError(f"option {option.name}: invalid mig_profile {option.mig_profile!r}, expected e.g. '3g.40gb'")
    compute_slices = int(option.mig_profile.split("g.")[0])
    memory_slices = max(1, round(8 * option.memory_gb / parent_memory_gb))
    return Scaling(
        usable_gib=usable_parent_gib * memory_slices / 8,
        compute=compute_slices / 7 * MIG_COMPUTE_EFFICIENCY,
        itl=8 / memory_slices,
        rule=f"MIG {option.mig_profile}: throughput x {compute_slices}/7 x 98/108, ITL x 8/{memory_slices}",
    )


def shared_scaling(option: AllocationOption, parent_memory_gb: float, usable_parent_gib: float,
                   aggregate: float) -> Scaling:
    """Scale one tenant of a time-sliced or MPS GPU, which keeps its own weights in its memory share."""
    tenants = max(1, option.share_replicas)
    return Scaling(
        usable_gib=usable_parent_gib * option.memory_gb / parent_memory_gb,
        compute=aggregate / tenants,
        itl=SHARING_ITL_FACTOR[option.sharing],
        rule=(f"{option.sharing}, {tenants} tenants: throughput x {aggregate:.2f}/{tenants}, ITL x "
              f"{SHARING_ITL_FACTOR[option.sharing]:.2f} (NVIDIA Dynamo GPU-sharing results)"),
    )


def derive_figures(sweep: Sweep, scaling: Scaling, kv_bytes_per_gpu: int) -> Figures:
    """Turn a whole-GPU sweep into one option's figures for the sweep's mix."""
    pool = kv_pool_tokens(scaling.usable_gib, sweep.non_kv_gib, kv_bytes_per_gpu)
    concurrency = pool // sweep.mix.sequence_tokens
    decode = decode_rate(sweep.decode_points, concurrency) * scaling.compute
    return Figures(sweep.prefill_tokens_per_s * scaling.compute, decode, sweep.itl_s * scaling.itl, pool, concurrency)


def combine_mixes(parts: Sequence[tuple[Mix, Figures]]) -> Figures:
    """Combine per-mix figures: request-weighted time per token, smallest KV pool over mean length."""
    pool = min(f.kv_pool_tokens for _, f in parts)
    if any(f.max_concurrency < 1 for _, f in parts):
        return Figures(0.0, 0.0, 0.0, pool, 0)
    input_tokens = sum(m.weight * m.input_tokens for m, _ in parts)
    output_tokens = sum(m.weight * m.output_tokens for m, _ in parts)
    mean_sequence = sum(m.weight * m.sequence_tokens for m, _ in parts) / sum(m.weight for m, _ in parts)
    return Figures(
        prefill_tokens_per_s=input_tokens / sum(m.weight * m.input_tokens / f.prefill_tokens_per_s for m, f in parts),
        decode_tokens_per_s=output_tokens / sum(m.weight * m.output_tokens / f.decode_tokens_per_s for m, f in parts),
        itl_s=sum(m.weight * m.output_tokens * f.itl_s for m, f in parts) / output_tokens,
        kv_pool_tokens=pool,
        max_concurrency=math.floor(pool / mean_sequence),
    )


def profile_entry(figures: Figures, startup_s: float, source: str, non_kv_gib: float,
                  usable_gib: float) -> dict[str, Any]:
    """Return the catalog YAML mapping of one profile, with ``fits: false`` when no sequence fits."""
    if figures.max_concurrency < 1:
        return {"fits": False, "source": (f"{source}; weights and runtime take {non_kv_gib:.1f} of {usable_gib:.1f} "
                                          f"GiB per GPU, leaving KV for {figures.kv_pool_tokens} tokens")}
    return {"prefill_tokens_per_s": max(1, round(figures.prefill_tokens_per_s)),
            "decode_tokens_per_s": max(1, round(figures.decode_tokens_per_s)),
            "max_concurrency": figures.max_concurrency, "itl_s": round(figures.itl_s, 5),
            "startup_s": startup_s, "source": source}


class Estimator:
    """Runner of aiconfigurator's ``cli_estimate``, and the only code that imports aiconfigurator."""

    def __init__(self, backend: str) -> None:
        try:
            from aiconfigurator.cli.api import cli_estimate
        except ImportError as error:
            message = "aiconfigurator is not installed. Install the optional extra: pip install -e '.[profiles]'"
            raise SystemExit(message) from error
        self._estimate, self.backend, self.version = cli_estimate, backend, metadata.version("aiconfigurator")
        self.backend_versions: dict[str, str] = {}
        for name in ("aiconfigurator", "aiconfigurator_core"):
            logging.getLogger(name).setLevel(logging.ERROR)  # its notices about database fallbacks flood the log

    def run(self, model: str, system: str, tp: int, mix: Mix, batch: int, mode: str) -> tuple[float, float, float]:
        """Return (TTFT s, TPOT s, memory GiB per GPU) for ``mode`` static_ctx or static_gen."""
        result = self._estimate(model, system, mode=mode, backend_name=self.backend, isl=mix.input_tokens,
                                osl=mix.output_tokens, batch_size=batch, tp_size=tp)
        self.backend_versions[system] = str(result.backend_version)
        return float(result.ttft) / 1000, float(result.tpot) / 1000, float(result.raw["memory"])


def system_memory_gib(system: str) -> float:
    """Return the GPU memory that aiconfigurator's system file states, in GiB."""
    path = resources.files("aiconfigurator_core") / "systems" / f"{system}.yaml"
    return float(yaml.safe_load(path.read_text())["gpu"]["mem_capacity"]) / GIB


def sweep_option(estimator: Estimator, model: str, system: str, tp: int, mix: Mix, kv_bytes: int,
                 usable_gibs: Sequence[float], batch_sizes: Sequence[int], prefill_batch: int) -> Sweep:
    """Estimate prefill and decode of one whole-GPU option at the batches its KV pool allows.

    ``usable_gibs`` starts with the option's own usable memory, then that of its derived options,
    so that the decode sweep includes each of their KV-limited batches.
    """
    _, itl_s, memory = estimator.run(model, system, tp, mix, 1, "static_gen")
    non_kv = non_kv_memory_gib(memory, 1, mix.sequence_tokens, kv_bytes)
    limits = [kv_pool_tokens(u, non_kv, kv_bytes) // mix.sequence_tokens for u in usable_gibs]
    if limits[0] < 1:
        return Sweep(mix, itl_s, non_kv, 0.0, ((1, 1 / itl_s),))

    prefill_points = [(b, estimator.run(model, system, tp, mix, b, "static_ctx")[0])
                      for b in sorted({1, min(prefill_batch, limits[0])})]
    decode_points = [(1, 1 / itl_s)]
    for batch in sorted({b for b in batch_sizes if 1 < b <= limits[0]} | {c for c in limits if c > 1}):
        _, tpot_s, batch_memory = estimator.run(model, system, tp, mix, batch, "static_gen")
        decode_points.append((batch, batch / tpot_s))
        slope = (batch_memory - memory) * GIB / ((batch - 1) * mix.sequence_tokens)
        if abs(slope / kv_bytes - 1) > 0.05:
            LOG.warning("%s on %s TP%d: aiconfigurator's KV growth %.0f B/token differs from the config's %d",
                        model, system, tp, slope, kv_bytes)
    return Sweep(mix, itl_s, non_kv, prefill_rate(prefill_points, mix.input_tokens), tuple(decode_points))


def load_model_config(source: str | Mapping[str, Any], workdir: Path) -> tuple[str, dict[str, Any]]:
    """Return the model path to pass to aiconfigurator and the config.json it reads."""
    if isinstance(source, str):
        path = resources.files("aiconfigurator_core") / "model_configs" / f"{source.replace('/', '--')}_config.json"
        return source, json.loads(path.read_text())
    directory = workdir / str(source["model_type"])
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(dict(source)))
    return str(directory), dict(source)


def generate_model(estimator: Estimator, catalog: Catalog, name: str, mixes: Sequence[Mix],
                   args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Return the ``profiles`` mapping of one model, in catalog option order."""
    model_path, config = load_model_config(MODEL_SOURCES[name], workdir)
    startup_s = max((p.startup_s for p in catalog.model(name).profiles.values() if p.fits), default=60.0)
    mix_text = ", ".join(f"{m.input_tokens}:{m.output_tokens}" + (f":{m.weight:g}" if len(mixes) > 1 else "")
                         for m in mixes)
    entries: dict[str, dict[str, Any]] = {}
    for option in catalog.options:
        if option.sharing != "whole" or (args.options and option.name not in args.options):
            continue
        system = SYSTEMS[option.gpu]
        gpu_memory_gb = catalog.gpus[option.gpu].memory_gb
        usable = args.gpu_memory_utilization * system_memory_gib(system)
        # MIG slices and shared GPUs are scaled from the single whole GPU of the same type.
        derived = [o for o in catalog.options
                   if o.sharing != "whole" and o.gpu == option.gpu and o.devices == 1 and option.devices == 1]
        scalings = [Scaling(usable_gib=usable)]
        for other in derived:
            if other.sharing == "mig":
                scalings.append(mig_scaling(other, gpu_memory_gb, usable))
            else:
                aggregate = args.mps_factor if other.sharing == "mps" else args.timeslice_factor
                scalings.append(shared_scaling(other, gpu_memory_gb, usable, aggregate))

        kv_bytes = kv_bytes_per_token_per_gpu(config, option.devices)
        LOG.info("%s on %s (%s TP%d)", name, option.name, system, option.devices)
        sweeps = [sweep_option(estimator, model_path, system, option.devices, mix, kv_bytes,
                               [s.usable_gib for s in scalings], args.batch_sizes, args.prefill_batch)
                  for mix in mixes]
        base_source = (f"aiconfigurator {estimator.version} {system} {estimator.backend} "
                       f"{estimator.backend_versions.get(system, '?')} TP{option.devices}, ISL:OSL {mix_text}")
        for target, scaling in zip([option, *derived], scalings):
            figures = combine_mixes([(s.mix, derive_figures(s, scaling, kv_bytes)) for s in sweeps])
            source = base_source if not scaling.rule else f"{base_source}; {scaling.rule}"
            entries[target.name] = profile_entry(figures, startup_s, source,
                                                 max(s.non_kv_gib for s in sweeps), scaling.usable_gib)
    return {o.name: entries[o.name] for o in catalog.options if o.name in entries}


def write_catalog(raw: Mapping[str, Any], path: Path, command: str) -> None:
    """Validate the catalog, then write it atomically: a temporary file renamed over ``path``."""
    parse_catalog(raw)
    header = (f"# Generated by scripts/generate_profiles.py from NVIDIA aiconfigurator; do not edit by hand.\n"
              f"# Command: {command}\n# How each figure is derived: docs/profiles.md, section Generated profiles.\n")
    text = header + yaml.safe_dump(dict(raw), sort_keys=False, default_flow_style=None, width=120)
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False)
    try:
        with handle:
            handle.write(text)
        os.chmod(handle.name, 0o644)  # the temporary file is created private
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-catalog", type=Path, default=ROOT / "conf/catalog/handbook.yaml",
                        help="catalog whose gpus, options, model sizes and startup_s are copied")
    parser.add_argument("--output", type=Path, default=ROOT / "conf/catalog/default.yaml")
    parser.add_argument("--mix", type=parse_mix, action="append", dest="mixes",
                        help="request shape ISL:OSL[:WEIGHT] in tokens, repeatable (default 2000:100)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODEL_SOURCES), default=list(MODEL_SOURCES))
    parser.add_argument("--options", nargs="+", default=[],
                        help="whole-GPU options to estimate (default all). MIG and shared options follow their parent")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256],
                        help="decode batch sizes besides 1. Each option also runs its KV-limited batch")
    parser.add_argument("--prefill-batch", type=int, default=4, help="prompts per prefill-only run besides batch 1")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                        help="share of GPU memory the engine fills, as vLLM's --gpu-memory-utilization")
    parser.add_argument("--timeslice-factor", type=float, default=SHARING_THROUGHPUT_DEFAULT["timeslice"],
                        help="aggregate throughput of two time-sliced tenants relative to a dedicated GPU")
    parser.add_argument("--mps-factor", type=float, default=SHARING_THROUGHPUT_DEFAULT["mps"],
                        help="aggregate throughput of two MPS tenants relative to a dedicated GPU")
    parser.add_argument("--backend", default="vllm", help="aiconfigurator backend database")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.mixes = args.mixes or [Mix(2000, 100)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    raw = yaml.safe_load(args.base_catalog.read_text())
    catalog = parse_catalog(raw)
    unknown = [o for o in args.options if o not in catalog.option_names]
    if unknown:
        raise SystemExit(f"--options: unknown option(s) {unknown}. The catalog has {list(catalog.option_names)}")
    absent = [m for m in args.models if m not in catalog.models]
    if absent:
        raise SystemExit(f"model(s) {absent} missing from {args.base_catalog}, which has {sorted(catalog.models)}")
    missing = sorted({o.gpu for o in catalog.options} - set(SYSTEMS))
    if missing:
        raise SystemExit(f"no aiconfigurator system for GPU type(s) {missing}. Add them to SYSTEMS")

    estimator = Estimator(args.backend)
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="model-configs-") as workdir:
        for name in args.models:
            base = raw["models"][name]
            profiles = generate_model(estimator, catalog, name, args.mixes, args, Path(workdir))
            models[name] = {"params_b": base["params_b"], "weights_gb": base["weights_gb"], "profiles": profiles}

    command = "python scripts/generate_profiles.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_catalog({"gpus": raw["gpus"], "options": raw["options"], "models": models}, args.output, command.strip())
    LOG.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
