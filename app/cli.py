"""The `hopper` command. `keys` (API keys for HOPPER_AUTH=keys) reads HOPPER_DATA_DIR
(and the other settings) like the server does; the client commands (app/commands.py:
upload, status, watch, ls, rm) talk to HOPPER_URL; `serve` runs the server, `worker` a
Celery worker (HOPPER_BACKEND=celery).

The server's modules are imported by the `keys` commands that need them, not here: they
would double the start-up time of every client command (0.2 s of 0.4 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from app import commands

if TYPE_CHECKING:
    from app.apikeys import ApiKey
    from app.layout import DataDir

app = typer.Typer(no_args_is_help=True, help="Hopper: self-hosted background file processing.")
keys = typer.Typer(no_args_is_help=True, help="API keys, for a server run with HOPPER_AUTH=keys.")
app.add_typer(keys, name="keys")
app.command("upload", epilog=commands.EXIT_CODES_HELP)(commands.upload)
app.command("status")(commands.status)
app.command("watch", epilog=commands.EXIT_CODES_HELP)(commands.watch)
app.command("ls")(commands.ls)
app.command("rm")(commands.rm)
app.command("serve", context_settings=commands.SERVE_SETTINGS)(commands.serve)
app.command("worker", context_settings=commands.SERVE_SETTINGS)(commands.worker)


def main() -> None:
    app()


def _keys_file() -> DataDir:
    from app.config import get_settings
    from app.layout import DataDir

    return DataDir(get_settings().data_dir)


@keys.command("create")
def create(
    name: Annotated[str, typer.Option(help="Who or what uses the key, e.g. ci.")],
    scope: Annotated[str, typer.Option(help="Comma-separated: upload, read, admin.")] = (
        "upload,read"
    ),
    bytes_per_day: Annotated[
        str | None, typer.Option(help="Bytes the key may store per UTC day: 10G, 500M, ...")
    ] = None,
    max_jobs: Annotated[
        int | None, typer.Option(min=1, help="Unfinished jobs the key may have at once.")
    ] = None,
) -> None:
    """Make a key. It is printed once, on standard output; only its SHA-256 is kept."""
    from app.apikeys import KeyRefused, Scope, create_key
    from app.quotas import parse_size

    try:
        scopes = [Scope(s.strip()) for s in scope.split(",") if s.strip()]
        limit = None if bytes_per_day is None else parse_size(bytes_per_day)
        record, key = create_key(_keys_file().apikeys, name, scopes, limit, max_jobs)
    except (ValueError, KeyRefused) as exc:
        _fail(str(exc) if isinstance(exc, KeyRefused) else _scope_or_size_problem(exc))
    typer.echo(key)
    typer.echo(
        f"Key {record.name!r} (id {record.id}, scopes {','.join(record.scopes)}). "
        "This is the only time it is shown: store it now. Send it as "
        "`Authorization: Bearer <key>` or `X-API-Key: <key>`.",
        err=True,
    )


@keys.command("list")
def list_keys() -> None:
    """Every key, revoked ones too (never a key or its digest)."""
    from app.apikeys import read_keys

    rows: list[tuple[str, ...]] = [
        ("ID", "NAME", "SCOPES", "BYTES/DAY", "MAX JOBS", "CREATED", "REVOKED")
    ]
    rows += [_row(k) for k in read_keys(_keys_file().apikeys)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@keys.command("revoke")
def revoke(id_or_name: Annotated[str, typer.Argument(help="The key's id or name.")]) -> None:
    """Revoke a key: the server refuses it from its next request on."""
    from app.apikeys import KeyRefused, revoke_key

    try:
        record = revoke_key(_keys_file().apikeys, id_or_name)
    except KeyRefused as exc:
        _fail(str(exc))
    typer.echo(f"Revoked key {record.name!r} (id {record.id}).")


def _row(key: ApiKey) -> tuple[str, ...]:
    return (
        key.id,
        key.name,
        ",".join(key.scopes),
        "unlimited" if key.bytes_per_day is None else f"{key.bytes_per_day:,}",
        "unlimited" if key.max_jobs is None else str(key.max_jobs),
        key.created_at.strftime("%Y-%m-%d %H:%M UTC"),
        "" if key.revoked_at is None else key.revoked_at.strftime("%Y-%m-%d %H:%M UTC"),
    )


def _scope_or_size_problem(exc: ValueError) -> str:
    from app.apikeys import Scope

    if "Scope" in str(exc):
        return f"{exc}. Scopes are: {', '.join(s.value for s in Scope)}."
    return str(exc)


def _fail(message: str) -> NoReturn:
    typer.echo(f"hopper: {message}", err=True)
    raise typer.Exit(code=1)


if __name__ == "__main__":
    main()
