"""``replikit certs ...``: the kit's CA and certificates (:mod:`replication.tls`): issue a set
into a directory, show what a cluster (or a directory) holds and when it expires, check it as
``cluster up`` does, and rotate a running cluster's certificates with a reload."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from replication.cli.output import DataDirOption, JsonOption, comma_separated, console
from replication.cluster import DEFAULT_DATA_DIR, rotate_certificates
from replication.errors import BadInputError
from replication.tls.authority import DEFAULT_DAYS, issue_all
from replication.tls.check import (
    CertificateError,
    check_layout,
    common_name,
    load_certificate,
    san_hosts,
)
from replication.tls.files import CertificateLayout, ServerIdentity
from replication.tls.provision import cluster_layout, rotate_hint, source_hint
from replication.topology import LOOPBACK, require_state

certs_app = typer.Typer(
    help="Certificates: the kit's CA, a server certificate per node and the replication "
    "role's client certificate (docs/security.md).",
    no_args_is_help=True,
)

DaysOption = Annotated[
    int, typer.Option(min=1, help="How many days the new certificates are valid.")
]


def _layout(nodes: str, hosts: list[str] | None, role: str, directory: Path) -> CertificateLayout:
    names = comma_separated(nodes)
    if not names:
        raise BadInputError("--nodes needs at least one node name, e.g. --nodes pg0,pg1,pg2.")
    servers = tuple(ServerIdentity(name, tuple(hosts or [LOOPBACK])) for name in names)
    return CertificateLayout(directory.absolute(), servers, (role,))


@certs_app.command("issue")
def issue(
    out: Annotated[Path, typer.Option(help="Directory to write the certificates into.")],
    nodes: Annotated[
        str, typer.Option(help="Comma-separated node names: one server certificate each.")
    ] = "pg0,pg1,pg2",
    host: Annotated[
        list[str] | None,
        typer.Option(
            help="A host name or address clients use to reach the nodes, for the servers' "
            "subjectAltName (repeat it; default 127.0.0.1)."
        ),
    ] = None,
    role: Annotated[
        str, typer.Option(help="The replication role, the client certificate's CN.")
    ] = "replicator",
    days: DaysOption = DEFAULT_DAYS,
) -> None:
    """Issue a CA (or reuse the one in --out) and every certificate a cluster needs, for
    'replikit cluster up --tls-dir' or 'replikit certs rotate --from'."""
    layout = _layout(nodes, host, role, out)
    new_ca = issue_all(layout, days=days)
    check_layout(layout, fix=source_hint(out))
    which = "a new CA" if new_ca else f"the CA in {layout.ca_cert}"
    console.print(
        f"Issued {len(layout.servers)} server certificates and a client certificate for "
        f"{role} from {which} into {out}."
    )


def _rows(layout: CertificateLayout, now: datetime) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in [layout.ca_cert, *(cert for cert, _ in layout.pairs())]:
        try:
            cert = load_certificate(path, "see 'replikit certs check'")
        except CertificateError as error:
            rows.append({"file": str(path), "error": str(error)})
            continue
        rows.append(
            {
                "file": str(path),
                "subject": common_name(cert),
                "names": san_hosts(cert),
                "not_after": cert.not_valid_after_utc.isoformat(),
                "days_left": (cert.not_valid_after_utc - now).days,
            }
        )
    return rows


@certs_app.command("show")
def show(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Show the certificates in this directory for the cluster's nodes."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Each certificate of the cluster: subject, the names it serves, and when it expires."""
    layout = cluster_layout(require_state(data_dir.absolute()), directory)
    rows = _rows(layout, datetime.now(UTC))
    if as_json:
        print(json.dumps({"certificates": rows}, indent=2))
        return
    table = Table(title=f"certificates in {layout.directory}")
    for column in ("file", "subject", "names", "not_after", "days_left"):
        table.add_column(column, justify="right" if column == "days_left" else "left")
    for row in rows:
        if "error" in row:
            table.add_row(Path(str(row["file"])).name, str(row["error"]), "", "", "")
            continue
        names = row["names"]
        table.add_row(
            Path(str(row["file"])).name,
            str(row["subject"]),
            ", ".join(names) if isinstance(names, list) else "",
            str(row["not_after"])[:16].replace("T", " "),
            str(row["days_left"]),
        )
    console.print(table)


@certs_app.command("check")
def check(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Check this directory's certificates for the cluster instead."),
    ] = None,
) -> None:
    """Refuse, as 'cluster up' does, a missing, expired or mismatched certificate."""
    data_dir = data_dir.absolute()
    state = require_state(data_dir)
    layout = cluster_layout(state, directory)
    fix = source_hint(directory) if directory is not None else rotate_hint(state, data_dir)
    check_layout(layout, fix=fix)
    console.print(f"The certificates in {layout.directory} are valid for the cluster.")


@certs_app.command("rotate")
def rotate(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Copy new certificates from this directory (your own CA) instead of issuing "
            "them from the kit's CA.",
        ),
    ] = None,
    days: DaysOption = DEFAULT_DAYS,
) -> None:
    """New server and client certificates, picked up by a reload of every running node (no
    restart, no connection dropped)."""
    reloaded = rotate_certificates(data_dir, source=source, days=days)
    console.print(
        f"New certificates in place; reloaded {', '.join(reloaded) or 'no running node'}."
    )
