"""Handing over: check, successor, keygen, export, and the successor's bundle verify/open."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .context import emit_json, json_option, new_secret, printable, profile_warnings, secret_env, state


@click.command()
@click.argument("slug")
@json_option
def check(slug: str) -> None:
    """Handover readiness: what a successor would miss. Exit 1 while blocking gaps remain."""
    from ..readiness import check as run_check

    v = state().open()
    r = run_check(v, slug)
    if state().as_json:
        emit_json(r.to_json())
    else:
        for g in r.blocking:
            click.echo(f"BLOCKING  {printable(g.message)}")
        for g in r.warnings:
            click.echo(f"warning   {printable(g.message)}")
        if r.due_to_forget:
            click.echo(f"reminder  {printable(str(r.due_to_forget))}")
        click.echo("Ready to hand over." if r.ready else f"Not ready: {len(r.blocking)} blocking gap(s).")
    if not r.ready:
        click.get_current_context().exit(1)


@click.group()
def successor() -> None:
    """The successor who receives the handover bundle."""


@successor.command("set")
@click.argument("slug")
@click.option("--name", required=True)
@click.option("--org", help="Organisation.")
@click.option("--email")
@click.option("--phone")
@click.option(
    "--recipient",
    "recipients",
    multiple=True,
    required=True,
    help="age1… or ssh-ed25519/ssh-rsa public key (repeatable).",
)
def successor_set(
    slug: str, name: str, org: str | None, email: str | None, phone: str | None, recipients: tuple[str, ...]
) -> None:
    """Record the successor and the public key(s) the bundle is sealed to."""
    from ..bundle.export import set_successor

    v = state().open()
    s = set_successor(v, slug, name, list(recipients), org=org, email=email, phone=phone)
    click.echo(printable(f"Successor for {slug}: {s['name']} ({len(s['recipients'])} key(s))."))
    for fp in s["fingerprints"]:
        click.echo(f"  key {fp}")


@successor.command("show")
@click.argument("slug")
@json_option
def successor_show(slug: str) -> None:
    """Show the successor of a client."""
    v = state().open()
    s = v.clients.get(slug).data.get("successor")
    if state().as_json:
        emit_json({**s, "vault": _vault_keys(v)} if s else s)
        return
    if not s:
        click.echo(f"No successor recorded for {slug}.")
    else:
        click.echo(
            printable(
                f"{s['name']}{' (' + s['org'] + ')' if s.get('org') else ''} {s.get('email') or ''}".rstrip()
            )
        )
        for key, fp in zip(s["recipients"], s["fingerprints"], strict=False):
            click.echo(printable(f"  {fp}  {key[:60]}"))
    click.echo("Give the successor this vault key outside the bundle (letter, phone); it signs the bundle:")
    _echo_vault_keys(v)


def _vault_keys(v: Any) -> dict[str, str]:
    return {
        "fingerprint": v.fingerprint,
        "ssh_fingerprint": v.ssh_fingerprint,
        "ssh_public_key": v.ssh_public_key,
    }


def _echo_vault_keys(v: Any) -> None:
    """The vault's signing key as the successor checks it: hv: and SHA256: fingerprints, OpenSSH line."""
    click.echo(f"  Vault fingerprint: {v.fingerprint}  {v.ssh_fingerprint}")
    click.echo(f"  Vault signing key: {v.ssh_public_key}")


@click.command()
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    metavar="KEYFILE",
    help="Write the identity to KEYFILE (0600).",
)
def keygen(out: str | None) -> None:
    """Make an age identity for a successor who has none; prints the public key."""
    from ..bundle.export import keygen as make

    text, public = make(Path(out) if out else None)
    if out:
        click.echo(f"Wrote {out} (keep it secret). Public key: {public}")
    else:
        click.echo(text, nl=False)
        click.echo(f"Public key: {public}", err=True)


def _bundle_passphrase(confirm: bool) -> str:
    value = secret_env("HANDOVER_BUNDLE_PASSPHRASE")
    if value:
        return value
    if confirm:
        return new_secret("HANDOVER_BUNDLE_PASSPHRASE", "Bundle passphrase")
    from ..errors import InvalidInput
    from .context import _tty

    if not _tty():
        raise InvalidInput(
            "no terminal to prompt for the bundle passphrase", "set HANDOVER_BUNDLE_PASSPHRASE"
        )
    return str(click.prompt("Bundle passphrase", hide_input=True, err=True))


@click.command()
@click.argument("slug")
@click.option(
    "--recipient",
    "recipients",
    multiple=True,
    help="Seal to this age/SSH public key (repeatable; default: the successor's keys).",
)
@click.option(
    "--passphrase",
    "use_passphrase",
    is_flag=True,
    help="Seal with a passphrase (HANDOVER_BUNDLE_PASSPHRASE or a prompt).",
)
@click.option(
    "--out", "out", type=click.Path(dir_okay=False), help="Bundle file (default SLUG-handover-DATE.tar.age)."
)
@click.option("--force", is_flag=True, help="Export despite blocking readiness gaps.")
def export(
    slug: str, recipients: tuple[str, ...], use_passphrase: bool, out: str | None, force: bool
) -> None:
    """Export the sealed handover bundle (age format; tar of docs, credentials, issues, report)."""
    from ..bundle.export import export as run_export

    v = state().open()
    passphrase = _bundle_passphrase(confirm=True) if use_passphrase else None
    with _progress() as advance:
        r = run_export(v, slug, list(recipients), passphrase, Path(out) if out else None, force, advance)
    if r.readiness.blocking:
        click.echo(
            f"warning: exported despite {len(r.readiness.blocking)} blocking gap(s) (--force)", err=True
        )
    from ..readiness import PROFILE_CODES

    profile_warnings(v, [g for g in r.readiness.warnings if g.code in PROFILE_CODES])
    click.echo(f"Wrote {r.path} ({r.size} bytes, {r.files} files).")
    click.echo(f"Bundle SHA-256:    {r.sha256}")
    click.echo(f"Vault fingerprint: {r.fingerprint}  {v.ssh_fingerprint}")
    click.echo(f"Vault signing key: {v.ssh_public_key}")
    click.echo("Give the successor these values by phone, in the letter or another channel, never only")
    click.echo("inside the bundle. They check it with age, tar, ssh-keygen (VERIFY.txt in the bundle) or:")
    click.echo(f"  handover bundle verify {r.path.name} --identity KEYFILE --signer {r.fingerprint}")


class _progress:
    """A rich progress bar on a terminal once the export has run for a moment; silent otherwise."""

    def __enter__(self) -> Any:
        self.bar: Any = None
        if not sys.stderr.isatty():
            return None
        import time

        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        self.start = time.monotonic()

        def advance(total: int, n: int) -> None:
            if self.bar is None:
                if time.monotonic() - self.start < 0.5:
                    return
                self.bar = Progress(
                    "sealing", BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True
                )
                self.bar.start()
                self.task = self.bar.add_task("export", total=total)
            self.bar.advance(self.task, n)

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


@click.group()
def bundle() -> None:
    """The successor's side: verify and open a handover bundle."""


def _identities(identity: tuple[str, ...]) -> list[Any]:
    from ..bundle.agefile import load_identity_file

    out: list[Any] = []
    for path in identity:
        out += load_identity_file(Path(path))
    return out


def _decrypt_args(identity: tuple[str, ...], use_passphrase: bool, bundle: str) -> dict[str, Any]:
    from ..errors import InvalidInput
    from .docs import _ram_dir

    if not identity and not use_passphrase:
        raise InvalidInput("give --identity KEYFILE or --passphrase to decrypt the bundle")
    try:
        size = Path(bundle).stat().st_size
    except OSError:
        size = 0
    ram = _ram_dir(room=2 * size + (64 << 20))
    return {
        "identities": _identities(identity),
        "passphrase": _bundle_passphrase(False) if use_passphrase else None,
        # The decrypted tar is plaintext: spool it in RAM when there is room, not on a disk.
        "spool_dir": Path(ram) if ram else None,
    }


_identity_opt = click.option(
    "--identity",
    "-i",
    "identity",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="age identity file or OpenSSH private key (repeatable).",
)
_passphrase_opt = click.option(
    "--passphrase",
    "use_passphrase",
    is_flag=True,
    help="The bundle is passphrase-sealed (HANDOVER_BUNDLE_PASSPHRASE or a prompt).",
)
_signer_opt = click.option("--signer", metavar="FINGERPRINT", help="Require this vault fingerprint (hv:…).")


@bundle.command("verify")
@click.argument("file", type=click.Path(dir_okay=False))
@_identity_opt
@_passphrase_opt
@_signer_opt
@json_option
def bundle_verify(file: str, identity: tuple[str, ...], use_passphrase: bool, signer: str | None) -> None:
    """Decrypt, check the signature and every file's size and SHA-256. Exit 4 naming what is wrong."""
    from ..bundle.format import verify_sealed_bundle

    vb = verify_sealed_bundle(
        Path(file), expected_signer_fingerprint=signer, **_decrypt_args(identity, use_passphrase, file)
    )
    if state().as_json:
        emit_json(
            {
                "ok": True,
                "root": vb.root,
                "client": vb.client,
                "exported_at": vb.exported_at,
                "signer": vb.signer_fingerprint,
                "signer_ssh_fingerprint": vb.signer_ssh_fingerprint,
                "files": vb.file_count,
                "manifest_sha256": vb.manifest_sha256,
            }
        )
        return
    # The manifest's client and date come from the bundle, whoever signed it: shown, never obeyed.
    click.echo(
        f"Bundle OK: {printable(str(vb.client))}, exported {printable(str(vb.exported_at))}, "
        f"{vb.file_count} files verified."
    )
    click.echo(
        f"Signed by vault {printable(str(vb.signer_fingerprint))}  {printable(str(vb.signer_ssh_fingerprint))}"
        + (
            ""
            if signer
            else " (compare it with the fingerprint the outgoing technician told you, or pass --signer)"
        )
    )


@bundle.command("open")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--to", "to", required=True, type=click.Path(file_okay=False), help="Folder to extract into.")
@_identity_opt
@_passphrase_opt
@_signer_opt
def bundle_open(
    file: str, to: str, identity: tuple[str, ...], use_passphrase: bool, signer: str | None
) -> None:
    """Verify, then extract only regular files into DIR/<bundle folder>/ (0600)."""
    from ..bundle.format import open_sealed_bundle

    target = Path(to)
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    vb = open_sealed_bundle(
        Path(file),
        target,
        expected_signer_fingerprint=signer,
        **_decrypt_args(identity, use_passphrase, file),
    )
    where = printable(str(target / vb.root))
    click.echo(f"Verified and extracted {vb.file_count} files to {where}")
    click.echo(
        f"Signed by vault {printable(str(vb.signer_fingerprint))}  {printable(str(vb.signer_ssh_fingerprint))}. "
        f"Open {where}/index.html in a browser."
    )
    click.echo("These files hold every secret in clear: rotate the credentials, then delete the folder.")
