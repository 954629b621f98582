"""`users add|list|remove`: the accounts of the workspace (writes, and reading on a non-loopback bind)."""

from __future__ import annotations

import sys

import typer

from monitor.cli.app import EXIT_OK, EXIT_PROBLEMS, JsonOpt, app, err, fail, out, print_json, state

users_app = typer.Typer(help="Accounts of the analyst workspace.", no_args_is_help=True)
app.add_typer(users_app, name="users")


def _read_password(from_stdin: bool) -> str:
    """Prompted twice on a terminal; else (or with --password-stdin) the first line of stdin."""
    if from_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    import getpass

    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        fail("the two passwords differ")
    return first


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Account name (letters, digits, . _ @ -)."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin (no prompt)."
    ),
) -> None:
    """Create an account. The password is prompted for (or read from stdin) and stored as an argon2id hash."""
    from monitor.web.auth import AccountError, check_name, check_password, create_user

    st = state(ctx)
    try:
        check_name(name)
        password = check_password(_read_password(password_stdin))
    except AccountError as exc:
        fail(str(exc))
    try:
        create_user(st.engine(), name, password)
    except AccountError as exc:
        fail(str(exc), EXIT_PROBLEMS)
    err.print(f"user {name} added")
    raise typer.Exit(EXIT_OK)


@users_app.command("list")
def users_list(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """List the accounts (never their hashes)."""
    from monitor.web.auth import list_users

    users = list_users(state(ctx).engine())
    rows = [
        {
            "name": u.name,
            "created": u.created_at.isoformat(),
            "last_login": u.last_login_at.isoformat() if u.last_login_at else None,
        }
        for u in users
    ]
    if as_json:
        print_json(rows)
    elif not rows:
        out.print("no users (add one with: monitor users add NAME)")
    else:
        for r in rows:
            last = str(r["last_login"] or "never")[:16]
            out.print(f"{r['name']}\tcreated {str(r['created'])[:16]}\tlast login {last}")
    raise typer.Exit(EXIT_OK)


@users_app.command("remove")
def users_remove(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Remove an account: its sessions end at once; its verdicts and the audit log stay."""
    from monitor.web.auth import AccountError, remove_user

    try:
        remove_user(state(ctx).engine(), name)
    except AccountError as exc:
        fail(str(exc), EXIT_PROBLEMS)
    err.print(f"user {name} removed")
    raise typer.Exit(EXIT_OK)
