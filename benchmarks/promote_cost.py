"""What one `gracectl promote` costs on the test bed's registry, and what the signature gate adds.

    python benchmarks/promote_cost.py [--rounds 15] [--baseline-src DIR]

Publishes two small images (signed by a fresh site key), then promotes them alternately, `--rounds` times each
way: (1) no signature gate, (2) with GRACECTL_TRUST_KEY (the gate verifies the signature), and (3) when
`--baseline-src` names another checkout's src/ (e.g. a `git worktree` of an older commit), that code without the
gate. Prints the median wall time of each and their ratios; timings include the interpreter's start, as an
operator meets it. Needs `gracectl testbed up` (its registry at 127.0.0.1:5000).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from conftest import write_oci_layout  # noqa: E402  (the integration tests' small OCI image)

from gracectl.tags import provenance, moves, trust  # noqa: E402
from gracectl.adapters import signing  # noqa: E402
from gracectl.adapters.registry_access import RegistryAccess  # noqa: E402
from gracectl.image_ref import ImageRef  # noqa: E402

REGISTRY = "127.0.0.1:5000"


def promote_times(src: Path, repo: str, digests: list[str], rounds: int, env: dict) -> list[float]:
    times = []
    for i in range(rounds * 2):
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "gracectl", "promote", f"{repo}@{digests[i % 2]}", "--to",
                               "bench"], env={**os.environ, "PYTHONPATH": str(src), **env}, capture_output=True,
                              text=True)
        times.append(time.monotonic() - start)
        if done.returncode != 0:
            raise SystemExit(f"promote failed: {done.stderr.strip().splitlines()[-1]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src/ to compare with")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gracectl-bench-promote-"))
    key_path, pub = signing.generate_key(work / "keys", b"bench")
    (work / "pass").write_bytes(b"bench")
    key = signing.SigningKey(key_path, work / "pass")
    repo = f"{REGISTRY}/bench-promote-{uuid.uuid4().hex[:6]}"
    access = RegistryAccess()
    digests = []
    for name in ("a", "b"):
        image = write_oci_layout(work / name, uuid.uuid4().hex)
        record = {"kind": "smoke", "schema": 1, "passed": True, "level": "imports"}  # as the integration tests'
        published = moves.publish(image, f"{repo}:{name}", access=access, attach=[record])
        ref = ImageRef.parse(repo)
        stmt = provenance.statement(f"{ref.registry}/{ref.repository}", published.digest, {}, {}, builder="bench",
                                    run_id="bench", records=published.records)
        trust.attest(ref, published.digest, stmt, key, access)
        digests.append(published.digest)
    locks = {"GRACECTL_LOCK_DIR": str(work / "locks")}
    rows = {"current, no signature gate": promote_times(REPO / "src", repo, digests, args.rounds, locks),
            "current, signature gate": promote_times(REPO / "src", repo, digests, args.rounds,
                                                     {**locks, "GRACECTL_TRUST_KEY": str(pub)})}
    if args.baseline_src:
        rows["baseline, no gate"] = promote_times(args.baseline_src, repo, digests, args.rounds, locks)
    base = statistics.median(rows["current, no signature gate"])
    print(f"promote on {REGISTRY}, {args.rounds * 2} runs each (median wall seconds, incl. interpreter start):")
    for name, times in rows.items():
        median = statistics.median(times)
        print(f"  {name:<28} {median:6.2f} s   ratio to current without gate: {median / base:5.2f}")


if __name__ == "__main__":
    main()
