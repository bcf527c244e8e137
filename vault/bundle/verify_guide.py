"""VERIFY.txt: how the successor checks a bundle with stock tools (age, tar, OpenSSH, coreutils).

The recipe is published twice, here (inside every bundle) and in docs/bundle-format.md, and the test
suite runs both exactly as printed against good, tampered and wrongly-signed bundles
(tests/test_recipes.py). It fails closed as written: it runs in a subshell with
``set -euo pipefail``, so a failing step stops it before "bundle verified" is printed, and it never
pipes ``age -d`` into ``tar``: age releases the chunks that verified before it reaches a tampered
one, so a pipe would extract part of a modified bundle.

The key that checks the signature must reach the successor outside the bundle (the termination
letter, ``handover export``'s output read out on the phone): a bundle can carry any instructions
and any key, so VERIFY.txt only tells the reader what to compare, never what to trust.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["RECIPE", "technician_line", "verify_txt"]

# No `a && b` lines: set -e ignores a failure on the left of && (POSIX), so each check is its own line.
RECIPE = """\
( set -euo pipefail
  umask 077
  : "${BUNDLE:?set BUNDLE to the .tar.age file}" "${KEY:?set KEY to your age identity file}"
  : "${VAULT_KEY:?set VAULT_KEY to the ssh-ed25519 line from the letter, not from the bundle}"
  mkdir handover-check          # a new folder: stops if it already exists
  age -d -i "$KEY" -o handover-check/bundle.tar "$BUNDLE"     # the whole file, before tar sees it
  cd handover-check
  test -z "$(tar -tvf bundle.tar | cut -c1 | tr -d 'd-')"     # only files and folders, no links
  ROOT="$(tar -tf bundle.tar | cut -d/ -f1 | LC_ALL=C sort -u)"
  test -n "$ROOT"
  test "$(printf '%s\\n' "$ROOT" | wc -l)" -eq 1     # exactly one top folder
  tar --no-same-owner -xf bundle.tar
  printf '%s\\n' "$VAULT_KEY" | ssh-keygen -lf -     # compare this SHA256: with the one you were told
  printf 'handover %s\\n' "$VAULT_KEY" > allowed_signers
  cd "$ROOT"
  ssh-keygen -Y verify -f ../allowed_signers -I handover -n handover-bundle -s SHA256SUMS.sig < SHA256SUMS
  sha256sum -c --strict SHA256SUMS
  find . -type f | sed 's|^\\./||' | LC_ALL=C sort > ../present
  { cut -c67- SHA256SUMS; printf '%s\\n' SHA256SUMS SHA256SUMS.sig manifest.json manifest.sig signer.pub; } \\
    | LC_ALL=C sort > ../expected
  diff ../expected ../present   # an extra or missing file is printed here, and stops the check
  echo "bundle verified: $ROOT"
)
"""


def verify_txt(
    root: str,
    fingerprint: str,
    ssh_fingerprint: str,
    ssh_public_key: str,
    technician: Mapping[str, str] | None = None,
) -> str:
    """The text of VERIFY.txt for the bundle folder ``root`` signed by the vault with these keys.

    ``technician`` (keys ``name``, ``phone``, ``email``, all optional) names the outgoing technician
    to call; without it the reader is told to call them on a number they already know.
    """
    who = technician_line(technician)
    indented = "".join(f"    {line}\n" for line in RECIPE.splitlines())
    return f"""\
HOW TO CHECK THIS HANDOVER BUNDLE ({root})
{"=" * (35 + len(root))}

This folder holds every credential of the client in clear text. Before you trust any of it, check
that it is exactly what the outgoing technician's vault signed. You need only standard tools: age,
GNU tar, OpenSSH's ssh-keygen (8.1 or later) and coreutils (sha256sum).

WHERE THE KEY MUST COME FROM
Anyone who could change this bundle could also change this file, and the key printed below. So
this file proves nothing by itself: take the vault's key line (ssh-ed25519 AAAA... handover-vault)
from the termination letter, or have it read out to you on the phone, and compare the fingerprints
below with the ones you were told. {who}

    Vault fingerprint:  {fingerprint}
    SSH fingerprint:    {ssh_fingerprint}   (what ssh-keygen -lf prints for the key)
    Vault signing key:  {ssh_public_key}

THE CHECK
Decrypt with "age -d -o FILE" first and extract afterwards: never "age -d ... | tar x", which would
already have extracted the part of a damaged or modified bundle that came before the damage.
In bash, in the folder that holds {root}.tar.age, set the three values
(VAULT_KEY from the letter or the phone call, not copied from this file):

    BUNDLE={root}.tar.age
    KEY=~/.age/key.txt            # your age identity (or unencrypted SSH private key)
    VAULT_KEY='ssh-ed25519 AAAA... handover-vault'

then paste this; it stops at the first failed step, and prints "bundle verified" only at the end
(if it stops, delete the handover-check folder: it may hold part of the decrypted archive):

{indented}
A passphrase-sealed bundle: replace -i "$KEY" by nothing (age asks for the passphrase), and set KEY
to anything.

What each step proves:
- age -d authenticates every byte of the archive before tar sees it.
- The tar listing refuses links, devices and more than one top folder.
- ssh-keygen -Y verify proves SHA256SUMS was signed by the key you were given, for this purpose
  (namespace handover-bundle): "Good "handover-bundle" signature for handover with ED25519 key ...".
- sha256sum -c --strict proves every listed file is unchanged ("<file>: OK" for each).
- The diff proves there is no extra file: everything present is listed in SHA256SUMS, apart from
  the five format files (SHA256SUMS, SHA256SUMS.sig, manifest.json, manifest.sig, signer.pub).

With Handover Vault installed, one command does all of this (and checks manifest.sig as well):

    handover bundle verify {root}.tar.age --identity ~/.age/key.txt --signer {fingerprint}

Afterwards: open index.html in a browser (it loads nothing and runs no script), change every
credential listed under "Rotate on receipt", then delete the decrypted copies you no longer need.
"""


def technician_line(technician: Mapping[str, str] | None) -> str:
    """Who to call. The number must be one the reader already has: the letter, a contract, a
    website; a phone number printed only inside an unverified bundle could be the forger's."""
    t = {k: v for k, v in (technician or {}).items() if v}
    if not t.get("name"):
        return "Call the outgoing technician on a number you already know, not one from this bundle."
    reach = ", ".join(x for x in (t.get("phone"), t.get("email")) if x)
    who = f"{t['name']}, {t['company']}" if t.get("company") else t["name"]
    return (
        f"The outgoing technician is {who}{f' ({reach})' if reach else ''}; call them on a "
        "number you already know, not only one from this bundle."
    )
