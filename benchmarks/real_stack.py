"""Real-stack benchmark on the test bed (issue 12): the vLLM wheel-mode image built for linux/arm64 under qemu
from the real upstream packages (official vLLM 0.19.0 wheel, Triton 3.6.0, PyPI's CPU torch as the stand-in).

    gracectl testbed up && python benchmarks/real_stack.py [--release v0.19.0-tfa] [--cold-record R.json] [--out F]

1. builds the release in wheel mode from mirror-real.toml (warm when a build ran before: the rehearsal's);
   `--cold-record`: the build record of the first build on an empty BuildKit cache and a cold PyPI proxy (e.g. the
   real-stack rehearsal's build-record.json), reported as the cold build;
2. rebuilds with one input changed: a new commit of the Triton repository's triton_kernels (TRITON_KERNELS_REF);
3. weighs the final image against the stand-in stack's image of the same release and against the sum of the
   wheels it installed (as downloaded, compressed: the PyPI proxy's files of each installed name and version);
4. with the real-stack rehearsal's pushes (`--rehearsal DIR`, default gracectl-out/rehearsal): how much of the
   fallback image (v0.19.0) a node holding the tfa image still pulls (compressed layers, from the registry).
Prints the figures MEASUREMENTS.md quotes; --out writes them as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from gracectl.image import sbom
from gracectl.image.build import build, read_record, rebuilt_stages
from gracectl.adapters.registry import Registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.errors import GraceError, TestbedError
from gracectl.image_ref import ImageRef
from gracectl.image.plan import plan_for
from gracectl.testbed import Testbed
from gracectl.commands.testbed import configure_bed


def wheel_bytes(bom: dict, cache: Path) -> tuple[int, list[str]]:
    """Bytes of the wheels of the BOM's distributions found in the proxy's cache, and the names not found."""
    files: dict[tuple[str, str], int] = {}
    for whl in cache.rglob("*.whl"):
        name, version = whl.name.split("-")[:2]
        files[(sbom.normalize(name), version)] = whl.stat().st_size
    total, missing = 0, []
    for name, p in sbom.packages(bom).items():
        size = files.get((name, p["version"]))
        if size is None:
            missing.append(f"{name} {p['version']}")
        else:
            total += size
    return total, missing


def fallback_pull(rehearsal: Path) -> dict | None:
    """Compressed bytes of the fallback image's layers, and of those the tfa image does not have: what a node
    holding the tfa image pulls to roll back to the fallback. None without the rehearsal's push records."""
    pushed = {}
    for run in ("real-v0.19.0-tfa", "real-v0.19.0"):
        path = rehearsal / run / "push-record.json"
        if not path.exists():
            return None
        ref = ImageRef.parse(json.loads(path.read_text())["ref"])
        manifest = Registry(ref.registry, RegistryAccess()).get_manifest(ref.repository, ref.tag)  # the test bed's
        if manifest is None:
            return None
        pushed[run] = {layer["digest"]: layer["size"] for layer in json.loads(manifest[0])["layers"]}
    tfa, fallback = pushed["real-v0.19.0-tfa"], pushed["real-v0.19.0"]
    return {"fallback_bytes": sum(fallback.values()),
            "fallback_bytes_not_in_tfa": sum(size for digest, size in fallback.items() if digest not in tfa)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="v0.19.0-tfa")
    parser.add_argument("--cold-record", type=Path, default=None, help="build record of a cold build")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--rehearsal", type=Path, default=Path("gracectl-out") / "rehearsal",
                        help="the real-stack rehearsal's work dir (its push records)")
    args = parser.parse_args(argv)
    configure_bed(os.environ)  # this script is an edge, as the CLI is: the test bed's folders from the environment
    bed = Testbed()
    if not bed.real_mirror_path.exists():
        raise TestbedError("no real-stack mirror: run `gracectl testbed up` first")
    real, standin = bed.real_mirror_path, bed.mirror_path
    with tempfile.TemporaryDirectory(prefix="gracectl-bench-") as tmp:
        tmp = Path(tmp)
        plan = plan_for(args.release, real, build_number=1, vllm_build="wheel")
        warm = build(plan, record_path=tmp / "warm.json").record
        # by image id, now: the stand-in build below is tagged with the same build tag
        bom = sbom.bom_from_inspect(sbom.inspect_image(warm["image_id"]), warm["image"])
        commit = bed.standins.add_real_triton_commit(f"real-stack benchmark {time.time()}")
        changed_plan = dataclasses.replace(plan, build_args={**plan.build_args, "TRITON_KERNELS_REF": commit},
                                           build_tag=plan.build_tag + "-changed")
        changed = build(changed_plan, record_path=tmp / "changed.json").record
        standin_image = build(plan_for(args.release, standin, build_number=1, vllm_build="source"), record_path=tmp / "standin.json").record
    wheels, missing = wheel_bytes(bom, bed.root / "pypi-proxy-cache")
    cold = read_record(args.cold_record) if args.cold_record else None
    with_steps = [name for name, s in changed["stages"].items() if s["steps"]]
    rebuilt = rebuilt_stages(changed)
    result = {
        "release": args.release,
        "vllm_build": "wheel",
        "cold_build_seconds": cold["seconds"] if cold else None,
        "warm_build_seconds": warm["seconds"],
        "warm_stages_rebuilt": rebuilt_stages(warm),
        "one_input_change": "TRITON_KERNELS_REF",
        "one_input_rebuild_seconds": changed["seconds"],
        "one_input_stages_rebuilt": rebuilt,
        "stages_with_steps": len(with_steps),
        "final_size": warm["size"],
        "standin_size": standin_image["size"],
        "installed_distributions": len(sbom.packages(bom)),
        "wheels_bytes": wheels,
        "wheels_not_in_proxy_cache": missing,
        "final_vs_wheels": round(warm["size"] / wheels, 2) if wheels else None,
        "final_vs_standin": round(warm["size"] / standin_image["size"], 2) if standin_image["size"] else None,
    }
    if cold:
        print(f"cold build (empty BuildKit cache, cold proxy): {cold['seconds']:.0f}s")
    print(f"warm build: {warm['seconds']:.1f}s, rebuilt: {', '.join(result['warm_stages_rebuilt']) or 'nothing'}")
    print(f"one input changed (TRITON_KERNELS_REF): {len(rebuilt)}/{len(with_steps)} stages rebuilt in "
          f"{changed['seconds']:.0f}s: {', '.join(rebuilt)}")
    print(f"final image {warm['size'] / 1e9:.2f} GB; stand-in image {standin_image['size'] / 1e9:.2f} GB "
          f"(x{result['final_vs_standin']}); {len(sbom.packages(bom))} distributions whose wheels weigh "
          f"{wheels / 1e9:.2f} GB compressed (x{result['final_vs_wheels']}; not in the proxy's cache: "
          f"{', '.join(missing) or 'none'})")
    pull = fallback_pull(args.rehearsal)
    result["fallback_pull"] = pull
    if pull:
        print(f"rolling back to the fallback on a node that holds the tfa image pulls "
              f"{pull['fallback_bytes_not_in_tfa'] / 1e3:.1f} kB of its {pull['fallback_bytes'] / 1e9:.2f} GB "
              f"(x{pull['fallback_bytes_not_in_tfa'] / pull['fallback_bytes']:.1e}; the rest is shared)")
    else:
        print(f"fallback pull: no real-stack rehearsal pushes in {args.rehearsal} (run `gracectl rehearse --stack "
              "real --workdir DIR` first)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
