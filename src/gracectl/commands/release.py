"""`gracectl publish | promote | rollback | history | unlock | records | verify | keygen | sign`: release operations by
digest (tags/moves.py), and the site's image signatures (adapters.signing).

Registry access (credentials, TLS, deadline) comes from the shared registry options (commands/options.py,
`@registry_options`): --username USER --password-stdin, else the docker config (credHelpers, credsStore, auths);
the site CA from /etc/docker/certs.d/HOST[:PORT]/, --cert-dir or GRACECTL_REGISTRY_CA; --insecure-registry HOST
for a registry without a valid certificate.
Image references always name the registry: HOST[:PORT]/REPO[:TAG|@DIGEST] (or set GRACECTL_REGISTRY).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from gracectl import settings
from gracectl.adapters.registry import open_registry
from gracectl.tags.gates import GATE_FIGURES, parse_floor
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.commands.options import JsonOpt, registry_options, with_default_registry
from gracectl.adapters.signing import generate_key, key_id, load_public_key, sign
from gracectl.errors import PromotionRefusedError, UsageError
from gracectl.image_ref import ImageRef, printable
from gracectl.tags.records import get_records
from gracectl.tags.moves import (
    DEFAULT_MAX_REGRESSION,
    Entry,
    check_image,
    history_report,
    promote,
    publish,
    repair_history,
    rollback,
    short,
    unlock,
)
from gracectl.tags.trust import resolve, verify_image

# Plain print, not rich: a digest must stay on one line in a Jenkins log (rich wraps at 80 columns).

ForceOpt = Annotated[bool, typer.Option("--force", help="move despite the gates (needs --reason; recorded FORCED)")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="why (recorded in the history)")]
MaxRegressionOpt = Annotated[float, typer.Option(
    "--max-regression", help="allowed benchmark slowdown, percent (0 to 1000)")]

app = typer.Typer()


def _print_entry(entry: Entry | None, tag: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(entry.to_dict() if entry else None, indent=2))
    elif entry is None:
        print(f"{tag} already points there: nothing to do")
    else:
        forced = " (FORCED)" if entry.forced else ""
        print(f"{entry.action}: {tag} {short(entry.from_)} -> {entry.to}{forced}")


@app.command("publish")
@registry_options(deadline=False)
def publish_cmd(
    image: Annotated[str, typer.Argument(help="local dockerd image (NAME:TAG), or a skopeo ref (oci:DIR:TAG)")],
    to: Annotated[str, typer.Option("--to", help="REGISTRY/REPO:IMMUTABLE_TAG (never overwritten)",
                                        callback=with_default_registry)],
    attach: Annotated[Optional[list[Path]], typer.Option(
        "--attach", help="record JSON to store with the pushed digest (smoke-record.json); repeatable")] = None,
    as_json: JsonOpt = False,
    *,
    access: RegistryAccess,
) -> None:
    """Push a local image under an immutable tag; print its manifest digest."""
    records = []
    for path in attach or []:
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            raise UsageError(f"--attach {path}: not a readable JSON record ({e})") from None
    result = publish(image, to, access=access, attach=records)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        note = " (already there: nothing pushed)" if result.already else ""
        print(f"published {result.ref}@{result.digest}{note}")


@app.command("promote")
@registry_options()
def promote_cmd(
    source: Annotated[str, typer.Argument(help="REGISTRY/REPO@DIGEST or REGISTRY/REPO:BUILD_TAG",
                                          callback=with_default_registry)],
    to: Annotated[str, typer.Option("--to", help="the moving tag to point at it (same repository)")],
    force: ForceOpt = False,
    reason: ReasonOpt = "",
    max_regression: MaxRegressionOpt = DEFAULT_MAX_REGRESSION * 100,
    floor: Annotated[Optional[list[str]], typer.Option(
        "--floor", help=f"FIGURE[@TOKENS]=VALUE: the candidate's MoE bench rows (of TOKENS tokens) must reach it "
        f"({' or '.join(GATE_FIGURES)}; e.g. ratio_vs_hbm_peak@16=0.15 for decode size, ratio_vs_dense@8192=0.3); "
        "repeatable")] = None,
    as_json: JsonOpt = False,
    *,
    access: RegistryAccess,
) -> None:
    """Move TAG to the image's digest: only with a passing smoke record and no benchmark regression."""
    floors = dict(parse_floor(item) for item in floor or [])
    entry = promote(source, to, force=force, reason=reason, max_regression=max_regression / 100,
                    access=access, floors=floors)
    _print_entry(entry, to, as_json)


@app.command("rollback")
@registry_options()
def rollback_cmd(
    target: Annotated[str, typer.Argument(help="REGISTRY/REPO:TAG to move back", callback=with_default_registry)],
    to: Annotated[str, typer.Option("--to", help="a digest or tag of the same repository "
                                    "(default: where the tag was before its last promotion)")] = "",
    reason: ReasonOpt = "",
    force: ForceOpt = False,
    max_regression: MaxRegressionOpt = DEFAULT_MAX_REGRESSION * 100,
    as_json: JsonOpt = False,
    *,
    access: RegistryAccess,
) -> None:
    """Move TAG back to the digest it held before its last promotion (or --to, through the same gates
    as a promotion)."""
    entry = rollback(target, to=to, reason=reason, force=force, max_regression=max_regression / 100,
                     access=access)
    _print_entry(entry, ImageRef.parse(target).tag, as_json)


@app.command("history")
@registry_options()
def history_cmd(
    target: Annotated[str, typer.Argument(help="REGISTRY/REPO:TAG", callback=with_default_registry)],
    as_json: JsonOpt = False,
    repair: Annotated[bool, typer.Option("--repair", help="start a damaged history anew (needs --reason; the "
                                         "damaged one is kept as TAG.gracectl-damaged)")] = False,
    reason: ReasonOpt = "",
    *,
    access: RegistryAccess,
) -> None:
    """Every promotion, rollback and unlock of TAG, oldest first (--repair: a damaged history started anew)."""
    if repair:
        entry = repair_history(target, reason=reason, access=access)
        print(f"repaired the history of {target}: {entry.source}" if entry else
              f"the history of {target} reads fine: nothing to repair")
        return
    entries, disagreement = history_report(target, access=access)
    if as_json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if disagreement:
        print(f"warning: {printable(disagreement)}", file=sys.stderr)
    if not entries:
        print(f"{target}: no promotions recorded")
    for e in entries:  # one plain line per entry: readable in a Jenkins log, greppable
        flags = " FORCED" if e.forced else ""
        why = f"  reason: {e.reason}" if e.reason else ""
        print(printable(f"{e.when}  {e.action:<8} {e.status:<7} {short(e.from_):<19} -> {short(e.to):<19}  "
                        f"by {e.who}{flags}{why}"))


@app.command("unlock")
@registry_options()
def unlock_cmd(
    target: Annotated[str, typer.Argument(help="REGISTRY/REPO:TAG whose lock to release",
                                          callback=with_default_registry)],
    reason: ReasonOpt = "",
    *,
    access: RegistryAccess,
) -> None:
    """Release a tag's lock held by a dead process on another host (shows the holder; recorded)."""
    holder, _ = unlock(target, reason=reason, access=access)
    print(printable(f"unlocked {target}: it was held by {holder}") if holder else
          f"{target} was not locked: nothing to do")


@app.command("records")
@registry_options()
def records_cmd(
    image: Annotated[str, typer.Argument(help="REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST",
                                         callback=with_default_registry)],
    kind: Annotated[str, typer.Option("--kind", help="smoke, bench, build...")] = "smoke",
    *,
    access: RegistryAccess,
) -> None:
    """Print the records stored with an image in the registry (JSON list)."""
    ref = ImageRef.parse(image)
    registry = open_registry(ref, access, ping=False)
    digest = resolve(registry, ref)
    print(json.dumps(get_records(ref, digest, kind, registry=registry), indent=2))


@app.command("verify")
@registry_options()
def verify_cmd(
    image: Annotated[str, typer.Argument(help="REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST",
                                         callback=with_default_registry)],
    key: Annotated[Optional[Path], typer.Option("--key", help="the site's public key, cosign.pub (default: "
                                                "GRACECTL_TRUST_KEY)")] = None,
    as_json: JsonOpt = False,
    *,
    access: RegistryAccess,
) -> None:
    """Is the image signed by the site's key, did it pass smoke, and where does it come from (its signed
    provenance)? Exit 0 only when the signature is valid."""
    if key is not None:
        access = dataclasses.replace(access, trust_key=key)
    found = verify_image(image, access=access)
    if as_json:
        print(json.dumps(found, indent=2))
    else:
        sig, prov = found["signature"], found["provenance"]
        print(f"{found['image']}")
        print(f"  signature:  {'VALID' if sig['valid'] else 'NOT VALID'}: {printable(sig['why'])}")
        print(f"  smoke:      {found['smoke']}")
        if prov is None:
            print("  provenance: none stored")
        else:
            print(f"  provenance: {'VALID' if prov['valid'] else 'NOT VALID'}: {printable(prov['why'])}")
            for line in prov.get("summary", []):
                print(f"              {printable(line)}")
    if not found["signature"]["valid"]:
        raise PromotionRefusedError(f"{found['image']}: {found['signature']['why']}")


@app.command("keygen")
def keygen_cmd(
    out: Annotated[Path, typer.Option("--out", help="new folder for cosign.key (encrypted, 0600) and cosign.pub")],
) -> None:
    """Make the site's signing key pair; the passphrase is read from stdin (never an argument)."""
    passphrase = sys.stdin.buffer.read().rstrip(b"\r\n")
    key_path, pub_path = generate_key(out, passphrase)
    print(f"signing key {key_path} (keep it as a Jenkins secret file, with its passphrase as another); "
          f"public key {pub_path} ({key_id(load_public_key(pub_path))[:19]}): GRACECTL_TRUST_KEY on every node")


@app.command("sign")
@registry_options()
def sign_cmd(
    image: Annotated[str, typer.Argument(help="REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST",
                                         callback=with_default_registry)],
    *,
    access: RegistryAccess,
) -> None:
    """Add the site key's signature to an image (key rotation: re-sign the images in service). The key and its
    passphrase come as files: GRACECTL_SIGNING_KEY and GRACECTL_SIGNING_PASSPHRASE_FILE."""
    key = settings.signing_key(os.environ)
    if key is None:
        raise UsageError("sign needs GRACECTL_SIGNING_KEY and GRACECTL_SIGNING_PASSPHRASE_FILE (the site key's files)")
    ref = ImageRef.parse(image)
    registry = open_registry(ref, access)
    digest = resolve(registry, ref)
    check_image(registry, ref, digest)
    attachment = sign(registry, ref, digest, key)
    print(f"signed {ref.repo}@{digest} ({attachment[:19]} holds its signatures)")
