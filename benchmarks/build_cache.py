"""Build-cache benchmark on the test bed (issue 7 item 3): what a one-input change costs, and what the final
image keeps of the build.

    gracectl testbed up && python benchmarks/build_cache.py [--release v0.19.0-tfa] [--out bench-build.json]

1. builds the release as pinned (warm after the first run), 2. makes a new commit in the stand-in vLLM repo and
rebuilds with only the vLLM ref changed, 3. builds the base and build stages (devel base, vLLM wheel) as images to weigh them.
Prints: stages rebuilt / stages with steps, rebuild time / build time, final image size / build stage size.
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

from gracectl.image.build import build, rebuilt_stages
from gracectl.image.plan import plan_for
from gracectl.errors import GraceError, TestbedError
from gracectl.testbed import Testbed
from gracectl.commands.testbed import configure_bed

WEIGHED_STAGES = ("base", "build")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="v0.19.0-tfa")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    configure_bed(os.environ)  # this script is an edge, as the CLI is: the test bed's folders from the environment
    bed = Testbed()
    if not bed.mirror_path.exists():
        raise TestbedError("no test bed: run `gracectl testbed up` first")
    mirror = bed.mirror_path
    with tempfile.TemporaryDirectory(prefix="gracectl-bench-") as tmp:
        tmp = Path(tmp)
        first = build(plan_for(args.release, mirror, build_number=1, vllm_build="source"), record_path=tmp / "first.json").record
        commit = bed.add_vllm_commit(f"build-cache benchmark {time.time()}")
        second = build(plan_for(args.release, mirror, vllm_ref=commit, build_number=2, vllm_build="source"),
                       record_path=tmp / "second.json").record
        stage_sizes = {}
        for stage in WEIGHED_STAGES:
            plan = dataclasses.replace(plan_for(args.release, mirror, vllm_build="source"), target=stage, labels={},
                                       build_tag=f"gracectl-bench/{stage}:latest")
            stage_sizes[stage] = build(plan, record_path=tmp / f"{stage}.json").record["size"]
    with_steps = [name for name, s in second["stages"].items() if s["steps"]]
    rebuilt = rebuilt_stages(second)
    result = {
        "release": args.release,
        "stages_with_steps": len(with_steps),
        "stages_rebuilt": rebuilt,
        "rebuilt_ratio": round(len(rebuilt) / len(with_steps), 3),
        "build_seconds": first["seconds"],
        "rebuild_seconds": second["seconds"],
        "rebuild_time_ratio": round(second["seconds"] / first["seconds"], 3) if first["seconds"] else None,
        "final_size": second["size"],
        "stage_sizes": stage_sizes,
        "final_vs_stage": {s: round(second["size"] / size, 3) for s, size in stage_sizes.items()},
    }
    print(f"one input changed (vLLM ref): {len(rebuilt)}/{len(with_steps)} stages rebuilt "
          f"({result['rebuilt_ratio']:.0%}): {', '.join(rebuilt)}")
    print(f"build {first['seconds']:.1f}s (cache as found), rebuild {second['seconds']:.1f}s"
          + (f" (ratio {result['rebuild_time_ratio']:.2f})" if result["rebuild_time_ratio"] else ""))
    for stage, size in stage_sizes.items():
        print(f"final image {second['size'] / 1e6:.1f} MB vs {stage} {size / 1e6:.1f} MB: "
              f"ratio {result['final_vs_stage'][stage]:.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
