"""The public Python API: `monitor.open(...)` returns a `Monitor` with the operations the CLI offers.

Everything here is a thin layer over the stages (ingest, rules, incidents, deliver); the CLI calls these methods
too, so what a script gets is what `monitor ... --json` prints.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import tempfile
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, select

from monitor._types import (
    Classification,
    DigestResult,
    Explanation,
    FeedPoll,
    Hit,
    Incident,
    Item,
    ItemChange,
    Match,
    Place,
    PollResult,
    ReclassifyResult,
    SiteResult,
)
from monitor.config.load import Config, load_config, resolve_config_dir
from monitor.errors import NotFoundError, StoreError
from monitor.search import SearchResults

T = TypeVar("T")


def open(config: str | Path | None = None, db: str | None = None) -> Monitor:
    """Load and validate the configuration folder and open the database (its schema brought up to date).

    `config`: a config folder; default, as for the CLI: $MONITOR_CONFIG, else ./config when present, else the
    packaged defaults. `db`: an SQLAlchemy URL; default $MONITOR_DB, else settings.yaml's database.url, else
    sqlite:///./monitor.db. Raises ConfigErrors (every problem of every file, with file and line) or StoreError.
    """
    cfg = load_config(resolve_config_dir(config))
    return Monitor(cfg, db)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end, also from inside a running event loop (a Jupyter cell has one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _aware(d: datetime | None) -> datetime | None:
    return d.replace(tzinfo=UTC) if d is not None and d.tzinfo is None else d


class Monitor:
    """One configuration and one database. Use as a context manager, or call close()."""

    def __init__(self, config: Config, db: str | None = None) -> None:
        from monitor.store import ensure_schema, make_engine
        from monitor.store.engine import resolve_db_url

        self.config = config
        self.db_url = resolve_db_url(db, config.settings.database.url)
        try:
            self._engine: Engine = make_engine(self.db_url)
            ensure_schema(self._engine)
        except Exception as exc:
            raise StoreError(f"database {self.safe_db_url}: {exc}") from exc

    @property
    def safe_db_url(self) -> str:
        try:
            return make_url(self.db_url).render_as_string(hide_password=True)
        except Exception:
            return "<invalid URL>"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for your own queries (the schema is internal and may change)."""
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Monitor config={str(self.config.dir)!r} db={self.safe_db_url!r}>"

    # --- ingest -----------------------------------------------------------------------------------------------

    def poll(
        self,
        *,
        all: bool = False,
        feeds: Iterable[str] | None = None,
        on_start: Callable[[int], None] | None = None,
        on_feed: Callable[[FeedPoll], None] | None = None,
    ) -> PollResult:
        """One polling cycle: fetch the feeds that are due (all: every enabled feed; feeds: only these ids, even
        muted ones), classify and store new items, group them into incidents. A feed that fails is reported in
        the result (`failed`), never raised: the others carry on."""
        from monitor.ingest.poll import FeedResult, poll_once

        def each(r: FeedResult) -> None:
            if on_feed is not None:
                on_feed(_feed_poll(r))

        kwargs: dict[str, Any] = {"on_result": each}
        if on_start is not None:
            kwargs["on_start"] = on_start
        report = _run(
            poll_once(
                self._engine,
                self.config,
                self.config.rules,
                feed_ids=list(feeds) if feeds is not None else None,
                ignore_schedule=all,
                **kwargs,
            )
        )
        return PollResult(report.started, report.finished, tuple(_feed_poll(r) for r in report.results))

    # --- rules ------------------------------------------------------------------------------------------------

    def classify(self, text: str, *, title: str = "", language: str | None = None) -> Classification:
        """Categories and countries of a text, by the configured rules (nothing is stored)."""
        r = self.config.rules.classify(title, text, language)
        return Classification(tuple(r.categories), tuple(r.countries), self.config.rules.version)

    def explain(
        self,
        text: str | None = None,
        *,
        title: str = "",
        language: str | None = None,
        item: int | None = None,
    ) -> Explanation:
        """Why a text (or the stored item with id `item`) gets its categories: the rule, the words and where;
        for a stored item also the incident it is in and why. NotFoundError for an unknown item id."""
        if (text is None) == (item is None):
            raise ValueError("give a text or an item id, not both")
        incident = source = None
        if item is not None:
            from monitor.incidents import explain_incident
            from monitor.store.evidence import source_of
            from monitor.store.models import Item as ItemRow

            with Session(self._engine) as s:
                row = s.get(ItemRow, item)
                if row is None:
                    raise NotFoundError(f"no stored item with id {item}")
                title, text, language = row.title, row.text, row.language
                incident = explain_incident(s, item)
                source = source_of(s, row)
        assert text is not None
        rules = self.config.rules
        languages = None
        if item is not None:  # as the poll and reclassify classify it
            from monitor.ingest.classify import rule_languages

            languages = rule_languages(title, text, language)
        r = rules.classify(title, text, language, languages=languages)
        infos = rules.categories
        matches = tuple(
            Match(
                category=cid,
                title=infos[cid].title,
                severity=infos[cid].severity,
                rule=r.matches[cid].rule,
                score=r.matches[cid].score,
                hits=tuple(
                    Hit(h.term, h.field, h.start, h.end, h.form, h.snippet, h.set, h.language)
                    for h in r.matches[cid].hits
                ),
            )
            for cid in r.categories
        )
        places = tuple(Place(p.country, p.name, p.field, p.start, p.end, p.entry) for p in r.places)
        return Explanation(
            tuple(r.categories),
            tuple(r.countries),
            matches,
            places,
            rules.version,
            item,
            incident,
            title,
            source,
        )

    def reclassify(self, *, dry_run: bool = False, batch: int = 500) -> ReclassifyResult:
        """Re-run the current rules over every stored item; items whose categories changed are regrouped (an
        item that lost them leaves its incident). dry_run: report only, store nothing."""
        from monitor.incidents import CountryLevel, group_items
        from monitor.ingest.classify import apply_classification, rule_languages
        from monitor.store.engine import session_scope
        from monitor.store.models import Item as ItemRow
        from monitor.store.types import utcnow
        from monitor.store.verdicts import apply_verdicts, categories_after, latest_verdicts

        rules = self.config.rules
        severity = {cid: info.severity for cid, info in rules.categories.items()}
        words = rules.gazetteer.country_level_words()
        country_level = CountryLevel.of(words) if words is not None else None
        window_hours = self.config.settings.grouping.window / 3600
        gained: Counter[str] = Counter()
        lost: Counter[str] = Counter()
        changes: list[ItemChange] = []
        total = countries_changed = last_id = 0
        while True:
            # Batches by id, each in its own transaction: a large database is neither held in memory nor locked.
            with Session(self._engine) if dry_run else session_scope(self._engine) as session:
                rows = list(
                    session.exec(
                        select(ItemRow)
                        .where(col(ItemRow.id) > last_id, col(ItemRow.pruned).is_(False))
                        .order_by(col(ItemRow.id))
                        .limit(batch)
                    )
                )
                if not rows:
                    break
                regroup: list[int] = []
                # Analysts' verdicts win over the rules: applied again to what the rules find now.
                verdicts = latest_verdicts(session, [r.id for r in rows if r.id is not None])
                for row in rows:
                    assert row.id is not None
                    last_id = row.id
                    total += 1
                    before, before_countries = set(row.categories or []), list(row.countries or [])
                    if dry_run:
                        result = rules.classify(
                            row.title,
                            row.text,
                            row.language,
                            languages=rule_languages(row.title, row.text, row.language),
                        )
                        after = apply_verdicts(result.categories, verdicts.get(row.id))
                        after_countries = result.countries
                    else:
                        apply_classification(row, rules)
                        row.categories = categories_after(row.categories, verdicts.get(row.id))
                        session.add(row)
                        after, after_countries = set(row.categories), row.countries
                    plus, minus = sorted(after - before), sorted(before - after)
                    gained.update(plus)
                    lost.update(minus)
                    countries_changed += after_countries != before_countries
                    if plus or minus:
                        changes.append(ItemChange(row.id, row.title, tuple(plus), tuple(minus)))
                        regroup.append(row.id)
                if regroup and not dry_run:
                    session.flush()
                    group_items(
                        session,
                        regroup,
                        now=utcnow(),
                        severity=severity,
                        window_hours=window_hours,
                        country_level=country_level,
                    )
        cats = sorted(set(rules.categories) | set(gained) | set(lost))
        return ReclassifyResult(
            dry_run=dry_run,
            rules_version=rules.version,
            items=total,
            countries_changed=countries_changed,
            changes=tuple(changes),
            gained={c: gained.get(c, 0) for c in cats},
            lost={c: lost.get(c, 0) for c in cats},
        )

    # --- stored data ------------------------------------------------------------------------------------------

    def items(
        self,
        *,
        category: str | None = None,
        country: str | None = None,
        feed: str | None = None,
        since: datetime | None = None,
        matched: bool = False,
        limit: int | None = 100,
    ) -> list[Item]:
        """Stored items, newest first. since: fetched at or after (naive means UTC); matched: only items with a
        category; category/country/feed: only items that have it (feed: any feed that carried it)."""
        from monitor.store.queries import iter_items

        out: list[Item] = []
        with Session(self._engine) as s:
            filtered = category is not None or country is not None or feed is not None
            rows = iter_items(
                s,
                since=_aware(since),
                limit=None if filtered else limit,
                matched_only=matched or bool(category),
            )
            for row, feeds in rows:
                if category is not None and category not in row.categories:
                    continue
                if country is not None and country not in row.countries:
                    continue
                if feed is not None and feed not in feeds:
                    continue
                out.append(_item(row, feeds))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def incidents(
        self,
        *,
        category: str | None = None,
        country: str | None = None,
        severity: str | None = None,
        since: datetime | None = None,
        limit: int | None = 100,
    ) -> list[Incident]:
        """Incidents with reports, most recently reported first. since: last reported at or after."""
        from monitor.store.models import Incident as IncidentRow
        from monitor.store.models import Item as ItemRow

        q = select(IncidentRow).where(col(IncidentRow.item_count) > 0)
        if since is not None:
            q = q.where(col(IncidentRow.last_seen) >= _aware(since))
        if severity is not None:
            q = q.where(col(IncidentRow.severity) == severity)
        q = q.order_by(col(IncidentRow.last_seen).desc(), col(IncidentRow.id).desc())
        out: list[Incident] = []
        with Session(self._engine) as s:
            picked = []
            for inc in s.exec(q.execution_options(yield_per=500)):
                if category is not None and category not in inc.categories:
                    continue
                if country is not None and country not in inc.countries:
                    continue
                picked.append(inc)
                if limit is not None and len(picked) >= limit:
                    break
            members: dict[int, list[int]] = {i.id: [] for i in picked if i.id is not None}
            ids = list(members)
            for start in range(0, len(ids), 500):
                rows = s.exec(
                    select(ItemRow.id, ItemRow.incident_id)
                    .where(col(ItemRow.incident_id).in_(ids[start : start + 500]))
                    .order_by(col(ItemRow.published), col(ItemRow.id))
                )
                for item_id, inc_id in rows:
                    if inc_id is not None and item_id is not None:
                        members[inc_id].append(item_id)
            for inc in picked:
                assert inc.id is not None
                out.append(_incident(inc, members[inc.id]))
        return out

    def search(
        self,
        query: str,
        *,
        category: str | None = None,
        country: str | None = None,
        feed: str | None = None,
        language: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        incident: int | None = None,
        verdict: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> SearchResults:
        """Full-text search over every stored item, best first: words, "phrases", -word, OR, prefix*; inflected
        Russian and Kazakh words find their other forms. since inclusive, until exclusive (naive means UTC);
        verdict: confirm | reject | add | any | none. Raises SearchQueryError for a malformed query (with the
        position) and SearchFilterError for a filter that cannot be applied. Hits carry escaped, highlighted
        HTML (`title_html`, `snippet_html`)."""
        from monitor.search import SearchFilters, search

        filters = SearchFilters(
            category=category,
            country=country,
            feed=feed,
            language=language,
            since=_aware(since),
            until=_aware(until),
            incident=incident,
            verdict=verdict,
        )
        return search(self._engine, query, filters=filters, limit=limit, offset=offset)

    # --- deliver ----------------------------------------------------------------------------------------------

    def digest(
        self, name: str, *, dry_run: bool = False, out: str | Path | None = None, retry: bool = True
    ) -> DigestResult:
        """Build digest `name` (from digests.yaml) from what is new and deliver it now.

        dry_run: send nothing; write NAME.eml and NAME.html into `out`, or, without `out`, return them as the
        result's `message` (bytes) and `page` (HTML). A message that cannot be sent stays pending and is retried
        later (retry=True: an older pending one is retried first, now); the result says so (`ok`,
        `raise_for_status()`), it does not raise. ConfigError for a digest that is not configured."""
        from monitor.deliver.digest import deliver_digest

        if out is not None and not dry_run:
            raise ValueError("out is for dry runs")
        if not dry_run:
            return _digest(deliver_digest(self._engine, self.config, name, force_retry=retry))
        if out is not None:
            return _digest(deliver_digest(self._engine, self.config, name, dry_run_out=Path(out)))
        with tempfile.TemporaryDirectory(prefix="monitor-digest-") as tmp:
            run = deliver_digest(self._engine, self.config, name, dry_run_out=Path(tmp))
            result = _digest(run)
            # The files go with the folder: keep their content on the result.
            return _with_content(result, run)

    def site(
        self,
        out: str | Path,
        *,
        templates: str | Path | None = None,
        base_url: str | None = None,
        recent_days: int = 30,
    ) -> SiteResult:
        """Write the static site into `out`: index.html, a page per incident and category, feed.atom, and
        JSON/CSV exports. templates: your own folder, overriding the packaged templates by name (default:
        the config folder's templates/ when it has one); base_url: where it will be served."""
        from monitor.deliver.site import build_site

        report = build_site(
            self._engine,
            Path(out),
            templates=Path(templates) if templates is not None else self.config.templates_dir,
            category_titles=self.config.category_titles,
            base_url=base_url,
            recent_days=recent_days,
        )
        return SiteResult(
            report.out,
            report.incidents,
            report.items,
            report.pages,
            report.digests,
            report.to_json(),
            unchanged=report.unchanged,
        )


def _feed_poll(r: Any) -> FeedPoll:
    return FeedPoll(
        feed=r.feed,
        url=r.url,
        outcome=r.outcome,
        status=r.status,
        error_kind=r.error_kind,
        error=r.error,
        warning=r.warning,
        new=r.new,
        updated=r.updated,
        linked=r.linked,
        entries=r.entries,
        elapsed=r.elapsed,
        fetch_seconds=r.fetch_seconds,
        next_check_at=r.next_check_at,
    )


def _item(row: Any, feeds: list[str]) -> Item:
    return Item(
        id=row.id,
        feed=row.feed_id,
        feeds=tuple(feeds),
        url=row.url,
        title=row.title,
        text=row.text,
        language=row.language,
        author=row.author,
        published=row.published,
        published_estimated=row.published_estimated,
        fetched=row.fetched,
        updated=row.updated,
        categories=tuple(row.categories or ()),
        countries=tuple(row.countries or ()),
        incident=row.incident_id,
        matches=dict(row.matches or {}),
        grouping=row.grouping,
        rules_version=row.rules_version,
    )


def _incident(row: Any, items: list[int]) -> Incident:
    return Incident(
        id=row.id,
        title=row.title,
        severity=row.severity,
        categories=tuple(row.categories or ()),
        countries=tuple(row.countries or ()),
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        updated_at=row.updated_at,
        item_count=row.item_count,
        items=tuple(items),
        explanation=row.explanation,
    )


def _digest(run: Any) -> DigestResult:
    return DigestResult(
        digest=run.digest,
        status=run.status,
        message_id=run.message_id,
        subject=run.subject,
        incidents=run.incidents,
        updates=run.updates,
        recipients=tuple(run.recipients),
        attempts=run.attempts,
        error=run.error,
        next_attempt_at=run.next_attempt_at,
        maybe_sent=run.maybe_sent,
        refused=dict(run.refused),
        eml_path=run.eml_path,
        html_path=run.html_path,
        previous=_digest(run.previous) if run.previous is not None else None,
        record=run.to_json(),
    )


def _with_content(result: DigestResult, run: Any) -> DigestResult:
    import dataclasses

    message = run.eml_path.read_bytes() if run.eml_path else None
    page = run.html_path.read_text(encoding="utf-8") if run.html_path else None
    return dataclasses.replace(result, eml_path=None, html_path=None, message=message, page=page)
