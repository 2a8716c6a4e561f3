"""THE ordered list of CI stages: the Jenkinsfile and `gracectl rehearse` both walk exactly this list.

    plan -> build -> smoke -> push -> promote -> rollback -> archive

ACTION=build runs plan, build, smoke, then push (PUSH) and promote (PUSH and PROMOTE), then archive;
ACTION=rollback runs plan, rollback, archive. Each stage is `gracectl ci <stage>` (commands/ci.py) and
keeps its output in a work directory (gracectl.pipeline.workdir: default ./gracectl-out), one JSON file per stage,
marked "stage_status": "passed" | "failed". A stage refuses to start unless the outputs it needs exist and passed, so a
failed or missing smoke can never be followed by a push or a promotion, whoever calls the stages.

tests/unit/test_jenkinsfile.py runs the Jenkinsfile in a Groovy harness and checks that its stages, their
`when` conditions and commands are exactly STAGES / Stage.applies here.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from gracectl import ci
from gracectl.tags import provenance
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.adapters.signing import SigningKey
from gracectl.errors import GraceError, PromotionRefusedError, UsageError
from gracectl.image_ref import ImageRef
from gracectl.image.plan import lint_dockerfile, plan_for
from gracectl.record_files import write_json
from gracectl.releases.train import check_before_build
from gracectl.image.smoke import LEVEL_CHOICES as SMOKE_LEVELS
from gracectl.pipeline.workdir import (BUILD_LOG_FILE, EXTRA_FILES, FAILED, MOVING_TAG_FILE,
                                       OUTPUTS, PASSED, PLAN_FILE, SBOM_RECORD_FILE, SMOKE_JUNIT_FILE, read_json,
                                       read_output, status_of, without_envelope)

ACTIONS = ("build", "rollback")

def _truthy(value: str | bool | None) -> bool:
    if isinstance(value, bool):
        return value
    text = (value or "").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise UsageError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class Params:
    """The job's parameters (the CI passes them as environment variables, see gracectl.ci; CLI options override)."""

    release: str = ""
    action: str = "build"
    vllm_ref: str = ""
    vllm_build: str = ""  # source | wheel; empty: the manifest's
    image_tag: str = ""
    build_number: int = 0
    registry: str = ""
    smoke_level: str = "kernels"
    push: bool = False
    promote: bool = False
    rollback_to: str = ""  # IMAGE@sha256:..., a build tag, or empty for the previous entry of the history
    run_id: str = ""  # labels the containers this run starts (default: the CI's, see gracectl.ci)
    mirror: str = ""  # mirror file (gracectl.releases.mirrors), empty for upstream
    smoke_gpus: str = "all"  # "none" on a machine without GPUs (the CPU test bed)
    # The plan stage of a build checks the manifest against its release's sources first (pins and the
    # triton_kernels pairing: gracectl.releases.train); off only for a node that can reach no index.
    release_check: bool = True
    upstream_cache: str = ""  # where sdists and triton_kernels trees are kept (default ~/.cache/gracectl/upstream)
    builder: str = ""  # the buildx builder the build stage runs on (gracectl.image.builders); empty: the node's dockerd
    # The CI's facts about this run (gracectl.ci): the signed provenance's builder and invocation.
    job_url: str = ""
    build_url: str = ""

    def __post_init__(self):
        if not self.release:
            raise UsageError("no release given: set RELEASE or pass --release (see `gracectl releases`)")
        if self.action not in ACTIONS:
            raise UsageError(f"ACTION must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        if self.smoke_level not in SMOKE_LEVELS:
            raise UsageError(f"SMOKE_LEVEL must be one of {', '.join(SMOKE_LEVELS)}, got {self.smoke_level!r}")
        if self.promote and not self.push and self.action == "build":
            raise UsageError("PROMOTE needs PUSH: only a pushed image (by digest) can be promoted")
        if (self.push or self.action == "rollback") and not self.registry:
            raise UsageError("pushing, promoting and rolling back need a registry: set REGISTRY or --registry")

    ENV = ci.PARAMETERS  # environment variable -> field (the job's parameters; gracectl.ci reads them)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides) -> Params:
        """Fields from `env` (the edge's os.environ) through the CI seam, then `overrides` that are not None win."""
        values: dict = ci.job_values(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for flag in ("push", "promote", "release_check"):
            if flag in values:
                values[flag] = _truthy(values[flag])
        if "build_number" in values:
            try:
                values["build_number"] = int(values["build_number"])
            except ValueError:
                raise UsageError(f"BUILD_NUMBER must be a number, got {values['build_number']!r}") from None
        return cls(**values)


@dataclass
class Context:
    """What a stage function gets: the parameters, the work directory of this run and its registry access."""

    params: Params
    workdir: Path
    access: RegistryAccess
    signing: SigningKey | None  # the site key when the site signs (push signs and attests)

    def path(self, name: str) -> Path:
        return self.workdir / name

    def output(self, stage_name: str) -> dict:
        """The recorded output of an earlier stage (which must exist and have passed)."""
        return read_output(self.workdir, stage(stage_name).name)

    def plan(self, *, check: bool = True):
        """The build plan for these parameters; `check`: it must be the one the plan stage recorded."""
        p = self.params
        plan = plan_for(p.release, Path(p.mirror) if p.mirror else None, p.vllm_ref, p.image_tag,
                        p.build_number, p.registry, p.vllm_build, builder=p.builder)
        if check:
            planned = self.output("plan")
            if (planned["build_tag"], planned["moving_tag"]) != (plan.build_tag, plan.moving_tag):
                raise UsageError(f"these parameters give {plan.build_tag}, the plan stage planned "
                                 f"{planned['build_tag']}: run every stage with the same parameters")
        return plan

    def run_id(self) -> str:
        return self.params.run_id or self.output("plan")["run_id"]


# --- the run id: labels the containers a run starts (smoke.RUN_LABEL) ------------------------------------


def new_run_id(params: Params) -> str:
    """The run id the plan stage records: the job's (parameter or CI), else a fresh local one."""
    return params.run_id or f"local-{uuid.uuid4().hex[:12]}"


def find_run_id(run_id: str, workdir: Path) -> str:
    """The run id to clean up after: given (the option, else the job's environment), else the one the plan stage
    recorded."""
    return run_id or read_json(workdir / PLAN_FILE).get("run_id", "")


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    run: Callable[[Context], dict]  # does the work, returns the JSON written to `output`
    applies: Callable[[Params], bool]  # the Jenkinsfile's `when` for this stage says the same
    needs: tuple[str, ...] = ()  # earlier stages whose outputs must exist and have passed
    moves_tag: bool = False  # Jenkins holds the tag's lock around it
    node_needs: tuple[str, ...] = ()  # what the node must have: `gracectl doctor` checks (pipeline.doctor.CHECKS)

    @property
    def output(self) -> str:
        return OUTPUTS[self.name]

    @property
    def command(self) -> str:
        return f"gracectl ci {self.name}"


# --- the stage functions: thin calls into the modules that own the work ---------------------------------


def stage_plan(ctx: Context) -> dict:
    """Resolve the release into the build plan; lint the Dockerfile for a build."""
    p = ctx.params
    plan = ctx.plan(check=False)
    if p.action == "build":
        lint_dockerfile()
        if p.release_check:
            check_before_build(p.release, vllm_ref=p.vllm_ref, mirror_file=p.mirror, upstream_cache=p.upstream_cache)
    ctx.path(MOVING_TAG_FILE).write_text(plan.moving_tag + "\n")
    return {"params": asdict(p), "run_id": new_run_id(p), "plan": plan.to_dict(),
            "moving_tag": plan.moving_tag, "build_tag": plan.build_tag}


def by_digest(params: Params) -> bool:
    """The split layout: a buildx builder (any arm64 build agent) pushes the image by digest, untagged, and the GPU
    node's smoke stage pulls exactly that digest. Without a builder the node's dockerd builds it where it is smoked."""
    return bool(params.builder and params.registry)


def stage_build(ctx: Context) -> dict:
    """Build the plan: into this node's dockerd, or (a builder) into the registry by digest; build.py writes the
    build record (and its log) into the work dir."""
    from gracectl.image import build

    split = by_digest(ctx.params)
    result = build.build(ctx.plan(), record_path=ctx.path(stage("build").output), log_path=ctx.path(BUILD_LOG_FILE),
                         registry_cache=bool(ctx.params.registry), mirror_file=ctx.params.mirror, push=split,
                         by_digest=split)
    record = result.record
    if split:  # nothing local here: the smoke stage reads the pulled image (its inputs, its SBOM)
        return record
    return {**record, "sbom": _sbom(ctx, record["image"], record["image_id"])}


def _sbom(ctx: Context, image: str, image_id: str) -> dict:
    """The SBOM of the local image, written beside the records; its summary for the stage's output."""
    from gracectl.image import sbom

    bom = sbom.sbom_record(image, image_id)
    write_json(ctx.path(SBOM_RECORD_FILE), bom)
    return {"file": SBOM_RECORD_FILE, "format": bom["format"], "packages": bom["packages"]}


def stage_smoke(ctx: Context) -> dict:
    """Smoke the image the build stage made (pulled by digest first when a builder pushed it); smoke.py writes the
    record and the JUnit XML itself."""
    from gracectl.adapters import docker
    from gracectl.image import build_inputs, smoke

    built = ctx.output("build")
    image, inspected = built["image"], {}
    if built.get("pushed"):  # exactly the digest the builder pushed; what it holds is read here, where it is local
        image = built["pushed"]
        image_id = docker.pull(image, built["platform"])
        resolved = build_inputs.resolved(built["build_args"], image, ctx.path(BUILD_LOG_FILE).read_text())
        inspected = {"digest": built["digest"], "resolved": resolved, "sbom": _sbom(ctx, image, image_id)}
    # Tests that cannot pass against a stand-in the plan names (the real-stack test bed's CPU torch) are
    # deselected by name, each with the plan's reason in the record.
    deselect = smoke.deselections(ctx.output("plan")["plan"].get("standins", []))
    record = smoke.run_smoke(image, level=ctx.params.smoke_level, junit_path=ctx.path(SMOKE_JUNIT_FILE),
                             record_path=ctx.path(stage("smoke").output), gpus=ctx.params.smoke_gpus,
                             run_id=ctx.run_id(), deselect=deselect)
    return {**record, **inspected}


def stage_push(ctx: Context) -> dict:
    """Push the smoked image under its immutable build tag, its smoke record attached to the pushed digest."""
    from gracectl.tags import moves, trust
    from gracectl.image import sbom

    built, smoked = ctx.output("build"), ctx.output("smoke")
    if smoked.get("passed") is not True:
        raise PromotionRefusedError("ci push: the smoke record does not say passed: refusing to push")
    source = built.get("pushed") or built["image"]
    if built.get("pushed"):  # a builder pushed it by digest: the smoke stage pulled and read that very digest
        if smoked.get("image") != source:
            raise PromotionRefusedError(f"ci push: the smoke record is of {smoked.get('image')}, the build pushed "
                                        f"{source}: run `gracectl ci smoke` again")
        built = {**built, "image_id": smoked["image_id"], "resolved": smoked.get("resolved")}
    elif smoked.get("image_id") != built.get("image_id"):
        raise PromotionRefusedError(f"ci push: the smoke record is of image {smoked.get('image_id')}, the build "
                                    f"made {built.get('image_id')}: run `gracectl ci smoke` again")
    dest = ctx.output("plan")["build_tag"]
    # The SBOM (what is in the image) is stored beside the smoke record; builds recorded before SBOMs have none.
    sbom_path = ctx.path(SBOM_RECORD_FILE)
    made = built.get("sbom") or smoked.get("sbom")
    sboms = [json.loads(sbom_path.read_text())] if made and sbom_path.exists() else []
    smoke_record = {k: v for k, v in without_envelope(smoked).items() if k not in ("resolved", "sbom")}
    published = moves.publish(source, dest, access=ctx.access, attach=[smoke_record, *sboms])
    result = {"image": published.ref, **published.to_dict(), "smoke_passed": True, "signed": False}
    signing_key = ctx.signing
    if signing_key:  # the site signs: the digest, and its provenance (naming the smoke record) with it
        ref = ImageRef.parse(published.ref)
        plan = ctx.output("plan")
        statement = provenance.statement(f"{ref.registry}/{ref.repository}", published.digest, plan["plan"], built,
                                         builder=ctx.params.job_url or f"urn:gracectl:builder:{socket.gethostname()}",
                                         invocation=ctx.params.build_url or plan["run_id"], records=published.records)
        # the SBOM too, signed where cosign looks for it (`cosign verify-attestation --type cyclonedx`)
        also = tuple(sbom.statement(f"{ref.registry}/{ref.repository}", published.digest, r) for r in sboms)
        result["attestation"] = trust.attest(ref, published.digest, statement, signing_key, ctx.access,
                                                     also=also)
        result["signed"] = True
    return result


def stage_promote(ctx: Context) -> dict:
    """Move the release's tag to the pushed digest; tags.moves checks the registry's smoke record again."""
    from gracectl.tags import moves

    pushed, moving = ctx.output("push"), ctx.output("plan")["moving_tag"]
    source = str(ImageRef.parse(pushed["ref"]).with_digest(pushed["digest"]))
    entry = moves.promote(source, ImageRef.parse(moving).tag, reason=_reason(ctx), access=ctx.access)
    return {"tag": moving, "digest": pushed["digest"], "moved": entry is not None,
            "history_entry": entry.to_dict() if entry else None}


def stage_rollback(ctx: Context) -> dict:
    from gracectl.tags import moves

    moving = ctx.output("plan")["moving_tag"]
    entry = moves.rollback(moving, to=ctx.params.rollback_to, reason=_reason(ctx), access=ctx.access)
    return {"tag": moving, "to": ctx.params.rollback_to or "(undo the last promotion)", "moved": entry is not None,
            "history_entry": entry.to_dict() if entry else None}


def _reason(ctx: Context) -> str:
    return f"gracectl ci, run {ctx.run_id()}"


def stage_archive(ctx: Context) -> dict:
    """Summarise this run's outputs (Jenkins then archives the work dir with fingerprints)."""
    outputs = {}
    for s in stages_for(ctx.params):
        if s.name == "archive":
            continue
        path = ctx.path(s.output)
        if not path.exists():
            raise UsageError(f"ci archive: {path} is missing: stage {s.name} did not run")
        outputs[s.name] = {"file": s.output, "status": status_of(json.loads(path.read_text()))}
    return {"stages": outputs}


def _build(p: Params) -> bool:
    return p.action == "build"


STAGES: tuple[Stage, ...] = (
    Stage("plan", "resolve the release manifest into the build plan (tags, pins, build command); lint the "
          "Dockerfile", stage_plan, lambda p: True, node_needs=("git", "hadolint", "docker")),
    Stage("build", "build the linux/arm64 image locally (BuildKit, cache shared through the registry); write "
          "the build record and log",
          stage_build, _build, needs=("plan",), node_needs=("docker", "buildkit", "disk", "registry")),
    Stage("smoke", "run the smoke suite in the built image on the GPU at SMOKE_LEVEL; smoke record + JUnit XML",
          stage_smoke, _build, needs=("plan", "build"),
          node_needs=("docker", "nvidia-runtime", "gpu", "driver", "registry")),  # registry: a builder's push is pulled
    Stage("push", "push under the immutable build tag; store the smoke record with the pushed digest",
          stage_push, lambda p: _build(p) and p.push, needs=("plan", "build", "smoke"),
          node_needs=("docker", "skopeo", "registry")),
    Stage("promote", "move the release's tag to the pushed digest (needs a passing smoke record for it)",
          stage_promote, lambda p: _build(p) and p.push and p.promote, needs=("plan", "smoke", "push"),
          moves_tag=True, node_needs=("registry",)),
    Stage("rollback", "move the release's tag back to ROLLBACK_TO (or the previous digest in its history)",
          stage_rollback, lambda p: p.action == "rollback", needs=("plan",), moves_tag=True,
          node_needs=("registry",)),
    Stage("archive", "summarise the run's records for archiving", stage_archive, lambda p: True),
)


def stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise UsageError(f"no stage {name!r}: the stages are {', '.join(s.name for s in STAGES)}")


def stages_for(params: Params) -> list[Stage]:
    """The stages a run with these parameters goes through, in order."""
    return [s for s in STAGES if s.applies(params)]


def run_stage(name: str, params: Params, workdir: Path, access: RegistryAccess, signing: SigningKey | None) -> dict:
    """Run one stage: check its inputs, clear its own and later outputs, run it, write its output.

    Every output gets "stage_status": "passed" | "failed" (and "stage_error"); on failure whatever the stage
    wrote itself (a failed smoke or build record) is kept and marked failed, then the error propagates.
    """
    this = stage(name)
    workdir.mkdir(parents=True, exist_ok=True)
    for needed in this.needs:
        read_output(workdir, stage(needed).name, for_stage=name)
    for stale in files_from(this):  # results of an earlier run must not pass for (or be archived with) this one
        (workdir / stale).unlink(missing_ok=True)
    out = workdir / this.output
    try:
        record = this.run(Context(params, workdir, access, signing))
    except GraceError as exc:
        # Keep what the stage itself recorded (a failed smoke or build record), marked failed for later stages.
        written = read_json(out) if out.exists() else {}
        write_json(out, {"stage": name, **written, "stage_status": FAILED, "stage_error": str(exc)})
        raise
    record = {"stage": name, **record, "stage_status": PASSED}
    write_json(out, record)
    return record


def files_from(this: Stage) -> list[str]:
    """The work-dir files that `this` stage and the stages after it write (plan: every file of a run)."""
    return [name for s in STAGES[STAGES.index(this):] for name in (s.output, *EXTRA_FILES.get(s.name, []))]
