"""`gracectl rehearse`: the whole pipeline, for real, on the test bed (the main job's embedded default).

Walks the SAME ordered stage list as Jenkins (gracectl.pipeline.stages.STAGES, via run_stage):

  1. ACTION=build, PUSH, PROMOTE: plan -> build (linux/arm64) -> smoke (imports, under qemu) -> push -> promote
  2. the same with one input changed (the vLLM ref: the stand-in repo's second commit)
  3. ACTION=rollback: plan -> rollback (undo the last promotion)
  4. verify in the registry that the moving tag points at the first run's digest again.

Every step's time and digest go into a table; any failure stops the rehearsal with a non-zero exit.

`--stack real` (rehearse_real) builds from the REAL upstream packages instead (mirror-real.toml: PyPI through
the test bed's proxy), a tfa release (--release, default v0.19.0-tfa) and its fallback in vLLM wheel mode:

  0. the stand-in v0.19.0-tfa under the tfa release's tag: build, smoke, push, promote (the previous image)
  1. the real tfa release, 2. its real fallback: build, smoke (imports) with `vllm serve --help` through the
     image's ENTRYPOINT beside it, push, promote; the table shows the triton_kernels real vLLM loaded in each
  3. ACTION=rollback of the tfa tag, verified to point at run 0 again; the two real images' package diff (SBOMs).
For v0.19.0 the torch is PyPI's CPU build (the named STAND-IN: its CUDA build is on the PyTorch index); from
v0.20 on (torch >= 2.11) it is the real CUDA torch and its nvidia-* libraries from PyPI.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gracectl import interrupts
from gracectl.pipeline.stages import run_stage, stages_for
from gracectl.tags import trust
from gracectl.image import sbom
from gracectl.adapters import docker, proc, signing
from gracectl.adapters.signing import SigningKey
from gracectl.adapters.registry import Registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.image_ref import ImageRef
from gracectl.image.build import rebuilt_stages
from gracectl.errors import GraceError, TestbedError, UsageError
from gracectl.releases.manifest import load_release
from gracectl.pipeline.stages import Params
from gracectl.tags.moves import short
from gracectl.testbed import Testbed
from gracectl.testbed.mirror_file import REAL, STANDIN
from gracectl.testbed.standins import STANDINS
from gracectl.testbed.upstream import upstream_cache
from gracectl.pipeline.workdir import SBOM_RECORD_FILE, read_output

DEFAULT_RELEASE = "v0.19.0-tfa"
DEFAULT_WORKDIR = Path("gracectl-out") / "rehearsal"


FIRST, SECOND, ROLLBACK = "build 1", "build 2 (vllm ref changed)", "rollback"
PREVIOUS = "build 0 (stand-in stack)"


def real_releases(release: str) -> dict[str, str]:
    """{run label: release} of the real stack: the tfa release and its fallback (named by its manifest)."""
    fallback = load_release(release).release.fallback.rpartition(":")[2]
    if not fallback:
        raise UsageError(f"--stack real rehearses a tfa release and its fallback; {release} names no fallback")
    return {f"real {release}": release, f"real {fallback}": fallback}


@dataclass
class Row:
    run: str
    stage: str
    seconds: float
    status: str
    detail: str = ""


class RehearsalFailed(GraceError):
    def __init__(self, message: str, rows: list[Row], exit_code: int):
        super().__init__(message)
        self.rows = rows
        self.exit_code = exit_code


def detail(stage: str, record: dict) -> str:
    """What the table shows for a stage: its digest or image, and the build's cache use."""
    if stage == "plan":
        return record.get("build_tag", "")
    if stage == "build":
        rebuilt = rebuilt_stages(record)
        return f"{short(record.get('image_id'))}, rebuilt: {', '.join(rebuilt) or 'nothing (all cached)'}"
    if stage == "smoke":
        counts = record.get("counts", {})
        seen = record.get("versions", {})
        where = (f"; triton_kernels from {seen['triton_kernels']} ({seen.get('triton_kernels_mode')})"
                 if seen.get("triton_kernels") else "")
        deselected = f", {len(record['deselected'])} deselected (STAND-IN)" if record.get("deselected") else ""
        return ", ".join(f"{n} {k}" for k, n in counts.items() if n) + f"{deselected} ({record.get('level')}){where}"
    if stage in ("push", "promote"):
        return short(record.get("digest"))
    if stage == "rollback":
        entry = record.get("history_entry") or {}
        return f"-> {short(entry.get('to'))}" if entry else "(already there)"
    return ""


def runs(release: str, registry: str, mirror: str, vllm_alt_ref: str, build_number: int,
         cache: str = "") -> list[tuple[str, Params]]:
    # The stand-in stack builds vLLM from source (the stand-in index has no vLLM wheel): it walks every step of the
    # source path on stand-in sources (the manifests' default, the official wheel, is the real-stack tier's).
    common = dict(release=release, registry=registry, mirror=mirror, smoke_level="imports", smoke_gpus="none",
                  upstream_cache=cache, vllm_build="source")
    return [
        (FIRST, Params(**common, push=True, promote=True, build_number=build_number,
                           run_id=f"rehearsal-{build_number}")),
        (SECOND, Params(**common, push=True, promote=True, build_number=build_number + 1,
                                              vllm_ref=vllm_alt_ref, run_id=f"rehearsal-{build_number + 1}")),
        (ROLLBACK, Params(**common, action="rollback", build_number=build_number + 2,
                            run_id=f"rehearsal-{build_number + 2}")),
    ]


def real_runs(registry: str, mirrors: dict[str, str], build_number: int, cache: str = "",
              release: str = DEFAULT_RELEASE) -> list[tuple[str, Params]]:
    """The real-stack rehearsal's runs (see the module's docstring). The tag's previous image is the stand-in
    stack's DEFAULT_RELEASE built under the real tfa release's tag (the stand-in index serves 0.19.0's inputs)."""
    common = dict(registry=registry, smoke_level="imports", smoke_gpus="none", push=True, promote=True,
                  upstream_cache=cache)
    pair = real_releases(release)
    out = [(PREVIOUS, Params(release=DEFAULT_RELEASE, image_tag=load_release(release).release.tag,
                             mirror=mirrors[STANDIN], vllm_build="source", build_number=build_number,
                             run_id=f"rehearsal-{build_number}",
                             **common))]
    for i, (label, release) in enumerate(pair.items(), start=1):
        out.append((label, Params(release=release, mirror=mirrors[REAL], vllm_build="wheel",
                                  build_number=build_number + i, run_id=f"rehearsal-{build_number + i}", **common)))
    out.append((ROLLBACK, Params(release=next(iter(pair.values())), action="rollback", registry=registry,
                                 mirror=mirrors[STANDIN], smoke_gpus="none", build_number=build_number + 3,
                                 run_id=f"rehearsal-{build_number + 3}")))
    return out


# STAND-IN (mounted at run time, never in an image): vLLM's CPU platform through vLLM's own platform plugin
# group; without a GPU the official CUDA wheel detects no platform and cannot build its argument parser.
PLATFORM_PLUGIN = STANDINS / "vllm-platform"
PLUGIN_IN_CONTAINER = "/opt/gracectl-testbed/vllm-platform"


def entrypoint_answers(image: str, timeout: float = 1200) -> str:
    """`vllm serve --help` through the image's own ENTRYPOINT (only the argument given): its usage line."""
    result = docker.run(["run", "--rm", "--pull", "never", "--network", "none",
                         "-v", f"{PLATFORM_PLUGIN}:{PLUGIN_IN_CONTAINER}:ro", "-e", f"PYTHONPATH={PLUGIN_IN_CONTAINER}",
                         image, "--help"], check=False, echo=False, timeout=timeout)
    usage = next((line.strip() for line in result.stdout.splitlines() if line.lower().startswith("usage:")), "")
    if result.returncode != 0 or not usage:
        raise TestbedError(f"{image}: `vllm serve --help` through the ENTRYPOINT exited {result.returncode} "
                           f"without a usage line: {proc.last_line(result.stdout)}")
    return f"{usage} (STAND-IN platform plugin: vLLM's CPU platform, no GPU here)"


def in_background(fn, *args):
    """Start fn(*args) in a daemon thread now; returns a callable that waits for it and gives (seconds, result),
    or raises what fn raised. (Daemon: a failed rehearsal exits without waiting for it.)"""
    box: dict = {}

    def work() -> None:
        start = time.monotonic()
        try:
            box["result"] = fn(*args)
        except GraceError as exc:
            box["error"] = exc
        box["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def wait():
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["seconds"], box["result"]

    return wait


def test_bed_site_key(root: Path) -> tuple[SigningKey, Path]:
    folder = root / "test-bed-site-key"
    if not (folder / "cosign.key").exists():
        passphrase = secrets.token_hex(16).encode()
        signing.generate_key(folder, passphrase)
        fd = os.open(folder / "passphrase", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(passphrase)
    return SigningKey(folder / "cosign.key", folder / "passphrase"), folder / "cosign.pub"


def verified(push_record: dict, access) -> str:
    """The pushed digest's signature and provenance, read back as `gracectl verify` reads them."""
    found = trust.verify_image(f"{push_record['ref'].rsplit(':', 1)[0]}@{push_record['digest']}", access=access)
    prov = found["provenance"] or {"valid": False, "why": "none stored"}
    if not found["signature"]["valid"] or not prov["valid"]:
        raise TestbedError(f"{found['image']}: signature {found['signature']['why']}; provenance {prov['why']}")
    return f"signed ({found['signature']['why'][:40]}), provenance: {prov['summary'][1]}"


def rehearse(release: str = DEFAULT_RELEASE, *, access: RegistryAccess, workdir: Path = DEFAULT_WORKDIR,
             build_number: int = 0, on_row=None, stack: str = STANDIN) -> list[Row]:
    """Run the rehearsal with the command's registry `access` (the test bed's site key added as the trust key);
    returns the rows, or raises RehearsalFailed (carrying the rows so far)."""
    bed = Testbed()
    status = bed.status()
    if not status["mirror_file"] or not status["components"]["registry"]["running"]:
        raise TestbedError("the test bed is not up (no mirror file or registry): run `gracectl testbed up` first")
    if stack == REAL and not (status["real_mirror_file"] and status["components"]["proxy"]["running"]):
        raise TestbedError("the test bed has no real-stack mirror or PyPI proxy running: run `gracectl testbed up`")
    registry = bed.state.registry
    # Build tags are immutable: a fresh build number per rehearsal (seconds since the epoch) never collides.
    build_number = build_number or int(time.time())
    rows: list[Row] = []
    digests: dict[str, str] = {}
    records: dict[str, dict] = {}
    entrypoint: dict[str, object] = {}  # run label -> waiting for its `vllm serve --help`

    def add(row: Row) -> None:
        rows.append(row)
        if on_row:
            on_row(row)

    def check(label: str, what: str, fn) -> None:
        start = time.monotonic()
        try:
            with interrupts.operation():
                found = fn()
        except GraceError as exc:
            add(Row(label, what, time.monotonic() - start, "FAILED", str(exc)))
            raise RehearsalFailed(f"rehearsal failed at {label} / {what}: {exc}", rows, exc.exit_code) from None
        add(Row(label, what, time.monotonic() - start, "passed", found))

    pair = real_releases(release) if stack == REAL else {}
    if stack == REAL:
        plan = real_runs(registry, {STANDIN: str(bed.mirror_path), REAL: str(bed.real_mirror_path)}, build_number,
                         str(upstream_cache(bed.root)), release)
        first, second = PREVIOUS, next(iter(pair))
    else:
        plan = runs(release, registry, str(bed.mirror_path), bed.state.vllm_alt_ref, build_number,
                    str(upstream_cache(bed.root)))
        first, second = FIRST, SECOND
    # The test bed's site key (made once, kept in the state dir: a TEST-BED key, never a site's): every push
    # signs and attests, every promotion and rollback verifies, as on a site that admits only signed images.
    site_key, trust_key = test_bed_site_key(bed.root)
    access = dataclasses.replace(access, trust_key=trust_key)
    for label, params in plan:
        wd = workdir / label.split(" (")[0].replace(" ", "-")
        for stage in stages_for(params):
            start = time.monotonic()
            try:
                # a signal noted while the stage before reported its promotion stops the run here
                with interrupts.operation():
                    record = run_stage(stage.name, params, wd, access, site_key)
            except GraceError as exc:
                add(Row(label, stage.name, time.monotonic() - start, "FAILED", str(exc)))
                raise RehearsalFailed(f"rehearsal failed at {label} / {stage.name}: {exc}", rows,
                                      exc.exit_code) from None
            add(Row(label, stage.name, time.monotonic() - start, "passed", detail(stage.name, record)))
            records[f"{label}/{stage.name}"] = record
            if stage.name == "push":
                digests[label] = record["digest"]
                check(label, "signature + provenance", lambda: verified(record, access))
            if stage.name == "build" and label in pair:
                # Beside the smoke stage: each is one emulated Python importing vLLM (~1-2 min under qemu),
                # single-threaded, so on two cores the pair takes the time of one.
                entrypoint[label] = in_background(entrypoint_answers, record["image"])
            if stage.name == "smoke" and label in pair:
                try:
                    seconds, usage = entrypoint.pop(label)()
                except GraceError as exc:
                    add(Row(label, "vllm serve --help", 0.0, "FAILED", str(exc)))
                    raise RehearsalFailed(f"rehearsal failed at {label} / vllm serve --help: {exc}", rows,
                                          exc.exit_code) from None
                add(Row(label, "vllm serve --help", seconds, "passed", f"{usage} (ran beside the smoke stage)"))
    if stack == REAL:
        def package_diff() -> str:
            a, b = (sbom.read_record(workdir / label.replace(" ", "-") / SBOM_RECORD_FILE)["bom"]
                    for label in pair)
            d = sbom.diff(a, b)
            removed = ", ".join(f"{k} {v}" for k, v in d["removed"].items()) or "nothing"
            return (f"{' -> '.join(pair)}: removed {removed}; added {', '.join(d['added']) or 'nothing'}; "
                    f"{len(d['changed'])} changed, {d['same']} the same")
        check("verify", "package diff (SBOMs)", package_diff)
    first, second = digests[first], digests[second]
    moving = ImageRef.parse(read_output(workdir / ROLLBACK, "plan")["moving_tag"])
    start = time.monotonic()
    found = Registry(moving.registry, access).head_manifest(moving.repository, moving.tag)
    now = found.digest if found else "(no tag)"
    ok = now == first and first != second
    first_label = PREVIOUS.split(" (")[0] if stack == REAL else FIRST
    add(Row("verify", f"{moving.tag} = {first_label}", time.monotonic() - start, "passed" if ok else "FAILED",
            short(now)))
    if not ok:
        why = "both builds gave the same digest" if first == second else f"it points at {now}, not {first}"
        raise RehearsalFailed(f"rehearsal: after the rollback {moving} should point at {first_label}: {why}", rows, 1)
    return rows
