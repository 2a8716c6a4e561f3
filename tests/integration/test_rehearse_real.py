"""`gracectl rehearse --stack real`: a tfa release and its fallback built in vLLM wheel mode from the REAL
upstream packages, smoked, pushed, promoted and rolled back; checked in the registry itself. Its own CI tier
(scripts/test.sh --real-stack) rehearses v0.19.0-tfa (the official vLLM 0.19.0 wheel, Triton 3.6.0, PyPI's CPU
torch as the named stand-in); GRACECTL_REAL_STACK_RELEASE=v0.25.0-tfa rehearses 0.25.0 on the REAL CUDA torch
2.11.0 and its nvidia-* libraries from PyPI (no torch stand-in; MEASUREMENTS.md says what it costs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gracectl.adapters import proc
from gracectl.adapters.registry import Registry
from gracectl.adapters.registry_access import RegistryAccess  # the test bed's loopback registry: no site settings
from gracectl.image_ref import ImageRef
from gracectl.releases.manifest import load_release
from gracectl.checkout import REPO_ROOT
from gracectl.tags.records import get_records

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.real_stack]


def output(workdir, run: str, name: str) -> dict:
    return json.loads((workdir / run / name).read_text())


RELEASE = os.environ.get("GRACECTL_REAL_STACK_RELEASE", "v0.19.0-tfa")


def test_real_stack_rehearsal(bed, tmp_path):
    workdir = tmp_path / "rehearsal"
    tfa = load_release(RELEASE)
    fallback = load_release(tfa.release.fallback.rpartition(":")[2])
    done = subprocess.run([sys.executable, "-m", "gracectl", "rehearse", "--stack", "real", "--release", RELEASE,
                           "--workdir", str(workdir)], capture_output=True, text=True, timeout=5400, cwd=REPO_ROOT)
    print(done.stdout[-8000:])  # the rehearsal's table, in the CI log (scripts/test.sh runs this tier with -s)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "(ranbesidethesmokestage)" in "".join(done.stdout.split())  # a wrapped table cell
    assert "rehearsal of the real stack" in done.stdout and "passed" in done.stdout

    modes = {f"real-{tfa.release.name}": ("site-packages", "/site-packages/triton_kernels"),
             f"real-{fallback.release.name}": ("vendored", "/site-packages/vllm/third_party/triton_kernels")}
    vllm, triton, torch = (tfa.sources.vllm.ref[1:], tfa.sources.triton.ref[1:], tfa.torch.version.split("+")[0])
    cpu_torch_standin = not tfa.torch.cuda_build_on_index  # the mirror maps the +cuNNN pins to PyPI's CPU build
    for run, (mode, path) in modes.items():
        smoke = output(workdir, run, "smoke-record.json")
        # real vLLM's import_triton_kernels() chose this copy, and the table shows its path
        assert smoke["versions"]["triton_kernels_mode"] == mode
        assert smoke["versions"]["triton_kernels"].endswith(path)
        assert smoke["versions"]["triton_kernels"] in "".join((done.stdout + done.stderr).split())  # wrapped table
        assert smoke["versions"]["vllm"] == vllm and smoke["versions"]["triton"] == triton
        names = {t["name"].rsplit("::", 1)[-1]: t["outcome"] for t in smoke["tests"]}
        must_pass = ["test_vllm_triton_kernels_moe_imports_without_error",
                     "test_triton_kernels_has_every_name_vllm_imports",
                     "test_triton_compiles_a_c_extension_with_the_images_compiler"]
        if cpu_torch_standin:
            # only the test the CPU-torch stand-in breaks is deselected, with the plan's reason
            assert list(smoke["deselected"]) == ["test_imports.py::test_torch_is_a_cuda_build_with_sm90"]
        else:
            # the real CUDA torch: built for the image's CUDA, with sm_90 kernels (no GPU needed to read that)
            assert not smoke.get("deselected")  # the record has the key only when something was
            must_pass += ["test_torch_is_a_cuda_build_with_sm90", "test_torch_is_the_manifests_cuda"]
        for test in must_pass:
            assert names[test] == "passed", (run, test, names)
        pushed = output(workdir, run, "push-record.json")
        assert pushed["signed"] is True  # signed and attested by the test bed's site key, both releases
        ref = ImageRef.parse(pushed["ref"])
        labels = json.loads(proc.run(["skopeo", "inspect", "--tls-verify=false",
                                      f"docker://{pushed['ref']}"]).stdout)["Labels"]
        assert labels["io.gracectl.vllm-build"] == "wheel"
        boms = get_records(ref, pushed["digest"], "sbom", registry=Registry(ref.registry, RegistryAccess()))
        assert boms and boms[-1]["bom"]["bomFormat"] == "CycloneDX"
        versions = {c["name"].lower(): c["version"] for c in boms[-1]["bom"]["components"]}
        assert versions["vllm"] == vllm and versions["torch"] == torch
        if not cpu_torch_standin:  # the CUDA libraries the torch wheel requires, from PyPI
            assert any(name.startswith("nvidia-") and name.endswith("-cu13") for name in versions), sorted(versions)
        assert ("triton_kernels" in versions or "triton-kernels" in versions) == (mode == "site-packages")
    assert "vllm serve --help" in done.stdout and "usage:" in done.stdout.lower()

    # after the rollback the tfa tag points at build 0 again
    previous = output(workdir, "build-0", "push-record.json")["digest"]
    moving = output(workdir, "rollback", "plan.json")["moving_tag"]
    now = proc.run(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                    f"docker://{moving}"]).stdout.strip()
    assert now == previous


def test_a_release_the_watch_writes_is_built_and_smoked_by_the_job_it_starts(bed, tmp_path):
    """Issue 32: no person between a release on the site's index and a smoked image of it. The index lists 0.19.0
    and 0.25.0, the project's main branch has 0.25.0's pair only: `release watch --since 0.19.0` writes 0.19.0's
    pair to release-watch/v0.19.0 and (jenkins/release-watch.Jenkinsfile, held by tests/unit/test_jenkinsfile.py)
    starts the main job on that branch with PUSH off. Here that job's stages - plan, build, smoke - run from a clone
    of the branch on the real stack (wheel mode: the official vLLM wheel through the test bed's PyPI proxy; the
    rehearsal above warmed BuildKit's cache with the same inputs)."""
    import re
    import tomllib

    from gracectl.testbed.upstream import upstream_cache
    from test_release_watch import git, site_index, site_repo, watch, watch_cache

    index = site_index(bed, tmp_path, ["0.19.0", "0.25.0"])
    site = site_repo(tmp_path, ("v0.25.0-tfa", "v0.25.0"))
    real = bed.real_mirror_path.read_text()
    proxy = tomllib.loads(real)["indexes"]["https://pypi.org/simple"]
    with index.serve() as url:
        # The watch's mirror: the test bed's real-stack one (Triton's git mirror, the +cu129 pins' public versions),
        # resolving through PyPI itself as test_release_upstream's does (uv reads metadata by range requests there)
        # and the site's index mapped to it.
        watched = tmp_path / "watch-mirror.toml"
        watched.write_text(re.sub(r'= "http://127\.0\.0\.1:\d+/index"', '= "https://pypi.org/simple"', real)
                           .replace("\n[indexes]\n", f'\n[indexes]\n"{url}" = "https://pypi.org/simple"\n', 1))
        _, report = watch(bed, tmp_path, "watch", site, url, watched, watch_cache(bed, tmp_path), "--since", "0.19.0")
    [written] = report["releases"]
    assert (written["version"], written["outcome"], written["check"]) == ("0.19.0", "written", "passed"), written
    checkout = tmp_path / "job"
    git("clone", "-q", "--branch", written["branch"], f"file://{site}", str(checkout))
    assert f'index_url = "{url}"' in (checkout / "releases" / "v0.19.0-tfa.toml").read_text()  # the site's index
    # The job's mirror: the site's index (which the written manifests name) is served by the test bed's PyPI proxy.
    mirror = tmp_path / "job-mirror.toml"
    mirror.write_text(real.replace("\n[indexes]\n", f'\n[indexes]\n"{url}" = "{proxy}"\n', 1))
    assert tomllib.loads(mirror.read_text())["indexes"][url] == proxy
    workdir = tmp_path / "gracectl-out"
    env = {**os.environ, "RELEASE": "v0.19.0-tfa", "GRACECTL_RELEASES_DIR": str(checkout / "releases"),
           "GRACECTL_MIRROR": str(mirror), "GRACECTL_UPSTREAM_CACHE": str(upstream_cache(bed.root)),
           "SMOKE_LEVEL": "imports", "GRACECTL_SMOKE_GPUS": "none", "BUILD_NUMBER": "1",
           "GRACECTL_RUN_ID": "release-watch-job", "GRACECTL_MIN_FREE_GB": "0"}
    try:
        for stage in ("plan", "build", "smoke"):
            done = subprocess.run([sys.executable, "-m", "gracectl", "ci", stage, "--workdir", str(workdir)],
                                  capture_output=True, text=True, timeout=3600, cwd=REPO_ROOT, env=env)
            print(f"ci {stage}: exit {done.returncode}\n{done.stderr[-1500:]}")
            assert done.returncode == 0, done.stderr[-4000:]
        built = json.loads((workdir / "build-record.json").read_text())
        assert built["labels"]["io.gracectl.vllm-build"] == "wheel" and built["release"] == "v0.19.0-tfa"
        smoke = json.loads((workdir / "smoke-record.json").read_text())
        assert smoke["passed"] is True and smoke["versions"]["vllm"] == "0.19.0"
        assert smoke["versions"]["triton_kernels_mode"] == "site-packages"
    finally:
        built_tag = json.loads((workdir / "plan.json").read_text())["build_tag"] if (workdir / "plan.json").exists() else ""
        if built_tag:
            subprocess.run(["/usr/bin/docker", "image", "rm", "--force", built_tag], capture_output=True)
