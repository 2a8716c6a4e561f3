"""`gracectl release watch`: the release train run by itself. The site's index is compared with releases/, and each
vLLM release newer than the newest there (or from --since on) goes through `release new` and then `release check`
of what it wrote; the outcome of each (written / fallback only, with the names vLLM misses / refused, with the
reason / pending: already on its branch) is one line and one entry of a JSON report.

With a git remote, each release's manifests are committed on a branch of their own (`release-watch/v<V>`: the
checkout's HEAD + that release's files + the Jenkinsfile's RELEASE choices for them) and pushed: one reviewable
unit per release, and a release whose branch exists is not made again (the job runs every few hours from a clean
checkout of main). A refused release is tried again next time (the index may gain what it lacked). Only an
operational failure (the index answers nothing, a push that fails) is an error: a refused release is an outcome.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from gracectl.adapters import proc
from gracectl.adapters.package_index import PackageIndex, without_userinfo
from gracectl.errors import (CommandFailedError, GraceError, IndexUnreachableError, ReleaseCheckError, UpstreamError,
                             UsageError)
from gracectl.releases.manifest import release_names
from gracectl.releases.mirrors import NO_MIRROR, Mirror
from gracectl.releases.derive import Choices
from gracectl.releases.train import check_releases, new_release, with_release_choices

BRANCH_PREFIX = "release-watch/"
# Who the watch's commits are by (a site's git server may ask for a known committer: --author).
AUTHOR = ("gracectl release watch", "release-watch@gracectl.invalid")


@dataclass
class Outcome:
    version: str
    outcome: str  # written | fallback-only | refused | pending | error
    manifests: list[str] = field(default_factory=list)  # release names written
    reason: str = ""  # refused / fallback-only / error: why; pending: where
    missing: list[str] = field(default_factory=list)  # fallback-only: the names vLLM imports that are not there
    triton_kernels: str = ""  # fallback-only: the tree that lacks them, by its Triton release
    check: str = ""  # `release check` of what was written: "passed" or its first failure
    branch: str = ""
    commit: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        """One line per release, for a person or a log."""
        took = f" ({self.seconds:.1f} s)"
        if self.outcome in ("written", "fallback-only"):
            what = ", ".join(self.manifests)
            where = f" on {self.branch} ({self.commit[:12]})" if self.branch else ""
            head = (f"{self.version}: written {what}" if self.outcome == "written" else
                    f"{self.version}: tfa impossible, fallback only: {what}")
            tail = (f"; missing {', '.join(self.missing)} in {self.triton_kernels}" if self.missing else "")
            return f"{head}{where}; release check {self.check}{tail}{took}"
        return f"{self.version}: {self.outcome}: {self.reason}{took}"


def known_versions(directory: Path) -> set[str]:
    """The vLLM versions releases/ has a manifest of (v<V> or v<V>-tfa; other names are no vLLM release)."""
    return {m.group(1) for n in release_names(directory) if (m := re.match(r"^v(\d+\.\d+\.\d+)(-tfa)?$", n))}


def newest_known(directory: Path) -> Version | None:
    return max(map(Version, known_versions(directory)), default=None)


def new_versions(index: PackageIndex, directory: Path, since: str = "") -> list[str]:
    """The index's vLLM releases (no pre-releases) that releases/ lacks: newer than its newest, or from `since`
    on; oldest first. The index's page is read fresh (never the cached one): an unreachable index is an error."""
    known = known_versions(directory)
    try:
        floor = Version(since) if since else newest_known(directory)
    except InvalidVersion:
        raise UsageError(f"--since {since!r} is not a version (e.g. 0.27.0)") from None
    if floor is None:
        raise UsageError(f"{directory} holds no release to compare the index with: give --since VERSION")
    listed = [v for v in index.versions("vllm", fresh=True) if not Version(v).is_prerelease]
    return [v for v in listed if v not in known and (Version(v) >= floor if since else Version(v) > floor)]


def _git(repo: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None) -> str:
    return proc.run(["git", "-C", str(repo), *args], env=env, input=input, echo=False, timeout=300).stdout.strip()


def branch_exists(repo: Path, remote: str, branch: str) -> bool:
    return bool(_git(repo, "ls-remote", "--heads", remote, f"refs/heads/{branch}"))


def commit_release(repo: Path, directory: Path, names: list[str], branch: str, remote: str, message: str,
                   author: tuple[str, str] = AUTHOR) -> str:
    """HEAD of `repo` + releases/<name>.toml for `names` (from `directory`) + the Jenkinsfile's RELEASE choices for
    them, committed without touching the work tree or its index (a temporary index), pushed as `branch`."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_AUTHOR_NAME": author[0],
               "GIT_AUTHOR_EMAIL": author[1], "GIT_COMMITTER_NAME": author[0], "GIT_COMMITTER_EMAIL": author[1]}
        _git(repo, "read-tree", "HEAD", env=env)
        for name in names:
            blob = _git(repo, "hash-object", "-w", str(directory / f"{name}.toml"), env=env)
            _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},releases/{name}.toml", env=env)
        if _git(repo, "ls-tree", "--name-only", "HEAD", "Jenkinsfile", env=env):
            on_head = [Path(p).stem for p in _git(repo, "ls-tree", "--name-only", "HEAD", "releases/", env=env)
                       .splitlines() if p.endswith(".toml")]
            text = with_release_choices(_git(repo, "show", "HEAD:Jenkinsfile") + "\n", sorted({*on_head, *names}))
            blob = _git(repo, "hash-object", "-w", "--stdin", env=env, input=text)
            _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},Jenkinsfile", env=env)
        tree = _git(repo, "write-tree", env=env)
        commit = _git(repo, "commit-tree", tree, "-p", "HEAD", "-m", message, env=env)
    _git(repo, "push", "--quiet", remote, f"{commit}:refs/heads/{branch}")
    return commit


def watch_release(version: str, index: PackageIndex, choices: Choices, directory: Path, *, mirror: Mirror,
                  trees: dict[str, Path], resolved: dict, repo: Path | None, remote: str,
                  branch_prefix: str) -> Outcome:
    """`release new VERSION`, then `release check` of what it wrote (and its commit and push, with a remote)."""
    start = time.monotonic()
    branch = f"{branch_prefix}v{version}"
    if remote and branch_exists(repo, remote, branch):
        return Outcome(version, "pending", reason=f"already on {branch} of {without_userinfo(remote)}, awaiting "
                       "review (merge it, or delete the branch to make it again)", branch=branch,
                       seconds=time.monotonic() - start)
    try:
        written = new_release(version, index, choices, directory, mirror=mirror, trees=trees, resolved=resolved,
                              on_line=lambda line: None)
    except IndexUnreachableError:
        raise
    except (ReleaseCheckError, UpstreamError, UsageError) as exc:
        return Outcome(version, "refused", reason=str(exc), seconds=time.monotonic() - start)
    names = [p.stem for p in written.paths]
    reports = check_releases(names, index.cache, index_url=index.url, offline=index.offline, mirror=mirror,
                             trees=trees, directory=directory, resolved=resolved)
    failed = [f"{r.release}: {line.path}: {line.text}" for r in reports for line in r.failed]
    if failed:  # what release new wrote, release check disowns: never left for the next run to take as known
        for path in written.paths:
            path.unlink(missing_ok=True)
        return Outcome(version, "refused", reason=f"release check of what release new wrote failed: {failed[0]}",
                       seconds=time.monotonic() - start)
    out = Outcome(version, "fallback-only" if written.no_tfa else "written", names, reason=written.no_tfa,
                  missing=list(written.missing), triton_kernels=written.triton_kernels, check="passed")
    if remote:
        kind = "fallback only: no tfa image" if written.no_tfa else "tfa + fallback"
        out.branch = branch
        out.commit = commit_release(repo, directory, names, branch, remote,
                                    f"releases: vLLM {version} ({kind})\n\nWritten by `gracectl release watch` "
                                    f"from {without_userinfo(index.url)}; `gracectl release check` passed."
                                    + (f"\n\n{written.no_tfa}" if written.no_tfa else ""))
    out.seconds = time.monotonic() - start
    return out


def watch(index: PackageIndex, choices: Choices, directory: Path, *, mirror: Mirror = NO_MIRROR,
          trees: dict[str, Path] | None = None, since: str = "", repo: Path | None = None, remote: str = "",
          branch_prefix: str = BRANCH_PREFIX, on_outcome=print) -> tuple[dict, GraceError | None]:
    """Every new release through `release new` + `release check`: the report (JSON-ready), and the operational
    error that stopped the watch, if one did (the report says so too, after the releases done before it)."""
    start = time.monotonic()
    report = {"index": without_userinfo(index.url), "releases_dir": str(directory),
              "newest_known": str(newest_known(directory) or ""), "since": since, "releases": [], "error": ""}
    resolved: dict = {}  # one resolution per requirement set in the whole run
    error = None
    try:
        for version in new_versions(index, directory, since):
            outcome = watch_release(version, index, choices, directory, mirror=mirror, trees=trees or {},
                                    resolved=resolved, repo=repo, remote=remote, branch_prefix=branch_prefix)
            report["releases"].append(asdict(outcome))
            on_outcome(outcome.line())
    except (IndexUnreachableError, CommandFailedError) as exc:  # the index, or git's push: not a release's fault
        error, report["error"] = exc, str(exc)
    report["seconds"] = round(time.monotonic() - start, 1)
    return report, error


def write_report(report: dict, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(path)
