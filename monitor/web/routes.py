"""The workspace's request handlers: read the request, run the store work in a thread, render a template.

Every write (verdict, note, merge, move) needs a login and a valid CSRF token, runs in one transaction with its
audit row, and answers with a redirect (303, so a reload does not post again) or, for the page's own script
(Accept: application/json), with JSON.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import jinja2
from sqlmodel import Session
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from monitor.deliver.render import CATEGORY_TITLES, environment
from monitor.incidents import TriageError, merge_incidents, move_item, settle_verdicts
from monitor.store.engine import write_scope
from monitor.store.types import utcnow
from monitor.store.verdicts import VerdictError, add_note, audit, record_verdict
from monitor.web import csrf, views
from monitor.web.app import PREFIX, WorkspaceSource
from monitor.web.auth import user_exists, verify_login

log = logging.getLogger("monitor.web")

MAX_FORM = 64 * 1024
GENERIC_LOGIN_ERROR = "Wrong name or password."
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

T = TypeVar("T")


# --- plumbing -------------------------------------------------------------------------------------------------


async def in_thread(fn: Callable[[], T]) -> T:
    # The database and argon2 block; the event loop also runs the scheduler, which must not wait on a page.
    return await asyncio.to_thread(fn)


async def session_user(src: WorkspaceSource, session: Mapping[str, Any]) -> str | None:
    name = session.get("user")
    if not isinstance(name, str) or not name:
        return None
    engine = src.engine()
    return name if await in_thread(lambda: user_exists(engine, name)) else None


async def current_user(src: WorkspaceSource, request: Request) -> str | None:
    if not hasattr(request.state, "user"):
        request.state.user = await session_user(src, request.session)
    return request.state.user


@lru_cache(maxsize=4)
def _environment(templates: Path | None) -> jinja2.Environment:
    return environment(templates)


def category_titles(src: WorkspaceSource) -> dict[str, str]:
    return src.config().category_titles or dict(CATEGORY_TITLES)


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


async def render(
    src: WorkspaceSource, request: Request, template: str, status: int = 200, **context: Any
) -> Response:
    user = await current_user(src, request)
    env = _environment(src.config().templates_dir)
    titles = category_titles(src)
    html = env.get_template(f"web/{template}").render(
        base=PREFIX,
        user=user,
        csrf_token=csrf.token(request.session),
        flash=request.session.pop("flash", None),
        categories=titles,
        category_title=lambda cid: titles.get(cid, cid),
        path=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=page_headers())


def page_headers() -> dict[str, str]:
    # Pages show verdicts and who is logged in: never from a cache, never framed, no script but ours.
    return {"Cache-Control": "no-store", "Content-Security-Policy": CSP}


async def error_page(src: WorkspaceSource, request: Request, status: int, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"ok": False, "error": message}, status_code=status, headers=page_headers())
    return await render(src, request, "error.html", status=status, status_code=status, message=message)


async def read_form(request: Request) -> dict[str, str]:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM):
        raise HTTPException(413, "the form is too large")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise HTTPException(415, "expected a form (application/x-www-form-urlencoded)")
    form = await request.form(max_files=0, max_fields=50, max_part_size=MAX_FORM)
    return {k: v for k, v in form.items() if not isinstance(v, UploadFile)}


_LOCAL = re.compile(r"^/workspace(/[^\\\s]*)?$")


def safe_next(value: str | None, default: str) -> str:
    """A redirect target: only a path inside the workspace, never another site (//evil.example, /\\evil)."""
    if value and _LOCAL.match(value) and not value.startswith("//"):
        return value
    return default


class Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


async def writer(src: WorkspaceSource, request: Request) -> tuple[str, dict[str, str]]:
    """The form of a write and who makes it; refuses (403) a missing or wrong CSRF token before anything else,
    then an anonymous visitor (to the login page, or 401 for the script)."""
    try:
        form = await read_form(request)
    except HTTPException as exc:
        raise Refused(await error_page(src, request, exc.status_code, str(exc.detail))) from None
    if not csrf.valid(request.session, form, request.headers):
        log.warning(
            "refused a POST to %s without a valid CSRF token", request.url.path, extra={"event": "csrf"}
        )
        raise Refused(
            await error_page(
                src,
                request,
                403,
                "This form did not come from this workspace, or it has expired. Reload the page and try again.",
            )
        )
    user = await current_user(src, request)
    if user is None:
        if wants_json(request):
            raise Refused(JSONResponse({"ok": False, "error": "log in first"}, status_code=401))
        back = request.headers.get("referer", "")
        back_path = back.split("://", 1)[-1].split("/", 1)[-1] if back else ""
        target = safe_next("/" + back_path if back_path else None, PREFIX + "/")
        raise Refused(RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303))
    return user, form


def count_write(src: WorkspaceSource, action: str) -> None:
    if src.metrics is not None:
        src.metrics.workspace_writes.inc(action=action)


# --- error handlers ---------------------------------------------------------------------------------------------


async def not_found(request: Request, exc: Exception) -> Response:
    src = _src_of(request)
    if src is None:
        return Response("not found\n", status_code=404, media_type="text/plain")
    return await error_page(src, request, 404, "There is nothing here.")


async def not_allowed(request: Request, exc: Exception) -> Response:
    return Response("method not allowed\n", status_code=405, media_type="text/plain")


def _src_of(request: Request) -> WorkspaceSource | None:
    src = getattr(request.app.state, "source", None)
    return src if isinstance(src, WorkspaceSource) else None


# --- reading ----------------------------------------------------------------------------------------------------


async def item_list(src: WorkspaceSource, request: Request) -> Response:
    titles = category_titles(src)
    try:
        filters = views.parse_filters(request.query_params, titles)
    except views.BadInput as exc:
        return await error_page(src, request, 400, str(exc))
    engine = src.engine()

    def load() -> tuple[views.ListPage, list[str], list[str]]:
        with Session(engine) as s:
            return views.list_items(s, filters), views.feed_ids(s), views.countries(s)

    page, feeds, countries = await in_thread(load)
    return await render(
        src,
        request,
        "list.html",
        status=400 if page.error and page.searched else 200,
        page=page,
        f=filters,
        feeds=feeds,
        countries=countries,
        scopes=views.SCOPES,
        verdict_filters=views.VERDICT_FILTERS,
    )


async def item_page(src: WorkspaceSource, request: Request) -> Response:
    item_id = int(request.path_params["item_id"])
    engine = src.engine()

    def load() -> dict[str, Any] | None:
        with Session(engine) as s:
            return views.item_context(s, item_id)

    ctx = await in_thread(load)
    if ctx is None:
        return await error_page(src, request, 404, f"There is no item {item_id}.")
    return await render(src, request, "item.html", **ctx)


async def incident_page(src: WorkspaceSource, request: Request) -> Response:
    incident_id = int(request.path_params["incident_id"])
    engine = src.engine()

    def load() -> dict[str, Any] | None:
        with Session(engine) as s:
            return views.incident_context(s, incident_id)

    ctx = await in_thread(load)
    if ctx is None:
        return await error_page(src, request, 404, f"There is no incident {incident_id}.")
    return await render(src, request, "incident.html", **ctx)


async def audit_page(src: WorkspaceSource, request: Request) -> Response:
    engine = src.engine()

    def load() -> list[Any]:
        with Session(engine) as s:
            return views.audit_entries(s)

    return await render(src, request, "audit.html", entries=await in_thread(load))


async def precision_page(src: WorkspaceSource, request: Request) -> Response:
    from monitor.rules.feedback import category_precision

    engine, days = src.engine(), 30

    def load() -> dict[str, Any]:
        with Session(engine) as s:
            return category_precision(s, days=days, now=utcnow())

    table = await in_thread(load)
    titles = category_titles(src)
    rows = [(cid, titles[cid]) for cid in titles] + [(c, c) for c in sorted(set(table) - set(titles))]
    return await render(src, request, "precision.html", table=table, rows=rows, days=days)


# --- verdicts and notes -----------------------------------------------------------------------------------------


async def post_verdict(src: WorkspaceSource, request: Request) -> Response:
    item_id = int(request.path_params["item_id"])
    try:
        user, form = await writer(src, request)
    except Refused as r:
        return r.response
    category, verdict, note = form.get("category", ""), form.get("verdict", ""), form.get("note") or None
    known = set(category_titles(src))
    engine = src.engine()
    grouping = _grouping_options(src)
    window_hours = src.config().settings.grouping.window / 3600

    def write() -> dict[str, Any]:
        with write_scope(engine) as s:
            row = record_verdict(
                s, item_id, category, verdict, author=user, note=note, known_categories=known
            )
            # In the same transaction: the item's categories (what digests, site and exports read) and its
            # incident follow the verdict at once.
            settle_verdicts(s, [item_id], now=utcnow(), window_hours=window_hours, **grouping)
            return {"id": row.id, "category": row.category, "verdict": row.verdict}

    try:
        done = await in_thread(write)
    except VerdictError as exc:
        return await error_page(src, request, 404 if str(exc).startswith("no item") else 400, str(exc))
    count_write(src, "verdict")
    log.info(
        "%s: %s %s on item %d", user, verdict, category, item_id, extra={"event": "verdict", "user": user}
    )
    if wants_json(request):
        return await verdict_json(src, request, item_id, done)
    request.session["flash"] = f"{verdict.capitalize()}ed {category_titles(src).get(category, category)}."
    return RedirectResponse(safe_next(form.get("next"), f"{PREFIX}/items/{item_id}"), status_code=303)


async def verdict_json(
    src: WorkspaceSource, request: Request, item_id: int, done: dict[str, Any]
) -> Response:
    """The item's categories after the verdict, as the list row shows them (escaped HTML fragment)."""
    engine = src.engine()

    def load() -> views.Row | None:
        with Session(engine) as s:
            ctx = views.item_context(s, item_id)
            if ctx is None:
                return None
            return views.Row(ctx["item"], ctx["url"], ctx["chips"], ctx["top"])

    row = await in_thread(load)
    env = _environment(src.config().templates_dir)
    titles = category_titles(src)
    chips_html = env.get_template("web/_chips.html").render(
        row=row, category_title=lambda cid: titles.get(cid, cid)
    )
    return JSONResponse(
        {"ok": True, **done, "top": row.top if row else None, "chips_html": chips_html},
        headers=page_headers(),
    )


async def post_note(src: WorkspaceSource, request: Request) -> Response:
    item_id = int(request.path_params["item_id"])
    try:
        user, form = await writer(src, request)
    except Refused as r:
        return r.response
    engine = src.engine()
    note = form.get("text", "")

    def write() -> None:
        with write_scope(engine) as s:
            add_note(s, item_id, note, author=user)

    try:
        await in_thread(write)
    except VerdictError as exc:
        return await error_page(src, request, 404 if str(exc).startswith("no item") else 400, str(exc))
    count_write(src, "note")
    request.session["flash"] = "Note saved."
    return RedirectResponse(f"{PREFIX}/items/{item_id}#notes", status_code=303)


# --- incidents ----------------------------------------------------------------------------------------------------


def _grouping_options(src: WorkspaceSource) -> dict[str, Any]:
    """What grouping is configured with (category severities, country-level words), as triage takes them."""
    cfg = src.config()
    options: dict[str, Any] = {"severity": {cid: info.severity for cid, info in cfg.categories.items()}}
    gazetteer = getattr(cfg.rules, "gazetteer", None)
    words = gazetteer.country_level_words() if gazetteer is not None else None
    if words is not None:
        from monitor.incidents import CountryLevel

        options["country_level"] = CountryLevel.of(words)
    return options


def _form_int(form: Mapping[str, str], name: str) -> int | None:
    raw = (form.get(name) or "").strip().lstrip("#")
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 12:
        raise ValueError(f"{name}: {raw[:20]!r} is not an incident number")
    return int(raw)


async def post_merge(src: WorkspaceSource, request: Request) -> Response:
    incident_id = int(request.path_params["incident_id"])
    try:
        user, form = await writer(src, request)
    except Refused as r:
        return r.response
    try:
        other = _form_int(form, "other") or _form_int(form, "other_id")
    except ValueError as exc:
        return await error_page(src, request, 400, str(exc))
    if other is None:
        return await error_page(src, request, 400, "Pick the incident to merge into this one.")
    why = form.get("why", "")
    engine = src.engine()
    options = _grouping_options(src)

    def write() -> list[int]:
        with write_scope(engine) as s:
            merged = merge_incidents(s, incident_id, other, by=user, why=why, **options)
            audit(s, user, "merge", f"incident:{incident_id}", merged_from=other, why=why, items=merged.items)
            return list(merged.items)

    try:
        moved = await in_thread(write)
    except TriageError as exc:
        return await error_page(src, request, 400, f"Could not merge: {exc}")
    count_write(src, "merge")
    log.info(
        "%s merged incident %d into %d", user, other, incident_id, extra={"event": "merge", "user": user}
    )
    request.session["flash"] = (
        f"Merged incident {other} into this one ({len(moved)} report{'' if len(moved) == 1 else 's'} moved)."
    )
    return RedirectResponse(f"{PREFIX}/incidents/{incident_id}", status_code=303)


async def post_move(src: WorkspaceSource, request: Request) -> Response:
    incident_id = int(request.path_params["incident_id"])
    try:
        user, form = await writer(src, request)
    except Refused as r:
        return r.response
    try:
        item_id = _form_int(form, "item")
        into = _form_int(form, "into")
    except ValueError as exc:
        return await error_page(src, request, 400, str(exc))
    if item_id is None:
        return await error_page(src, request, 400, "Say which report to move.")
    why = form.get("why", "")
    engine = src.engine()
    options = _grouping_options(src)

    def write() -> int:
        with write_scope(engine) as s:
            from monitor.store.models import Item

            item = s.get(Item, item_id)
            if item is None or item.incident_id != incident_id:
                raise TriageError(f"item {item_id} is not in incident {incident_id}")
            moved = move_item(s, item_id, by=user, why=why, into_id=into, **options)
            audit(
                s,
                user,
                "move",
                f"item:{item_id}",
                from_incident=incident_id,
                into_incident=moved.into_id,
                why=why,
            )
            return int(moved.into_id)

    try:
        target = await in_thread(write)
    except TriageError as exc:
        return await error_page(src, request, 400, f"Could not move: {exc}")
    count_write(src, "move")
    log.info("%s moved item %d out of incident %d", user, item_id, incident_id, extra={"event": "move"})
    request.session["flash"] = f"Moved report {item_id} into incident {target}."
    return RedirectResponse(f"{PREFIX}/incidents/{incident_id}", status_code=303)


# --- login ------------------------------------------------------------------------------------------------------


async def login_page(src: WorkspaceSource, request: Request) -> Response:
    nxt = safe_next(request.query_params.get("next"), PREFIX + "/")
    return await render(src, request, "login.html", next=nxt, error=None, name="")


async def post_login(src: WorkspaceSource, request: Request) -> Response:
    try:
        form = await read_form(request)
    except HTTPException as exc:
        return await error_page(src, request, exc.status_code, str(exc.detail))
    if not csrf.valid(request.session, form, request.headers):
        return await error_page(
            src, request, 403, "The login form has expired or did not come from this workspace. Reload it."
        )
    name, password = form.get("name", "").strip(), form.get("password", "")
    nxt = safe_next(form.get("next"), PREFIX + "/")
    engine = src.engine()
    ok = await in_thread(lambda: verify_login(engine, name, password))
    if src.metrics is not None:
        src.metrics.logins.inc(outcome="ok" if ok else "failed")
    if not ok:
        # The same answer, after the same pause, for an unknown name and a wrong password.
        await asyncio.sleep(src.login_delay)
        log.warning("failed login for %r from %s", name[:64], request.client.host if request.client else "?")
        return await render(
            src, request, "login.html", status=401, next=nxt, error=GENERIC_LOGIN_ERROR, name=""
        )
    request.session.clear()  # a session from before the login carries nothing over
    request.session["user"] = name
    csrf.renew(request.session)
    request.state.user = name
    log.info("%s logged in", name, extra={"event": "login", "user": name})
    return RedirectResponse(nxt, status_code=303)


async def post_logout(src: WorkspaceSource, request: Request) -> Response:
    try:
        form = await read_form(request)
    except HTTPException as exc:
        return await error_page(src, request, exc.status_code, str(exc.detail))
    if not csrf.valid(request.session, form, request.headers):
        return await error_page(src, request, 403, "The form has expired. Reload the page and try again.")
    request.session.clear()
    return RedirectResponse(PREFIX + "/", status_code=303)
