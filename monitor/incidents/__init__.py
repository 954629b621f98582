"""Group items into incidents: one event, reported by several outlets in several languages over a day or two.

    group_items(session, item_ids, now=...) -> GroupStats   assign classified items to open incidents or new ones
    explain_incident(session, item_id) -> dict | None       which incident an item is in, and why
    lock_grouping(session)                                  what every change to incidents takes first
    merge_incidents(session, into_id, from_id, by=, why=)   an analyst's merge (see `triage`)
    move_item(session, item_id, by=, why=, into_id=None)    an analyst's move out of an incident
    resolve_incident(session, incident_id) -> int | None    where a (merged-away) incident's reports are now
    settle_verdicts(session, item_ids, now=...)             analysts' verdicts written into the items' categories

The modules, in the order a call uses them: `features` (stems and name keys of a text), `fingerprint` (a report's
features as stored), `index` (which reports to compare), `scoring` (join or open: pure functions), `cache` (the
stored fingerprints per process), `updates` (counts, dates, labels and signatures written back), `explanation`
(why, in data and words), `grouping` (the call that strings them together), `triage` (an analyst's merges and
moves, which grouping then respects).

An item joins an *open* incident (one whose reports lie within `window_hours` of it) that shares a category with
it, when, compared with one of the incident's reports:

- **text**: the stems of title and lead overlap (Jaccard >= TEXT_MIN) - the same story in the same language,
  reworded or reprinted - unless each names people and they name none in common (two detentions written from one
  template are two incidents); a near-copy (>= TEXT_COPY) joins regardless; or
- **names**: they name the same person (two capitalised words, transliteration-blind, so "Zhanbolat Mamai" is
  "Жанболата Мамая"), or share two other names (people, places, organisations), and their countries agree - the
  same story across languages; or
- **places**: they are in different languages, published within CROSS_HOURS of each other, name the same
  specific place or institution (a gazetteer entry other than the country itself: "Mazhilis" is "Мажилис" is
  "Мәжіліс"), their headlines do not name different places, they do not name different people, and the
  language-independent evidence adds up to PLACES_MIN points:

      each shared specific place (at most 2)                  2
      each shared name that is not a place (at most 2)        1
      each shared category after the first (at most 2)        0.5
      each shared term set of a shared category (at most 2)   0.5   (@detain, @ngo: named alike in every language)
      published within CLOSE_HOURS of each other              0.5

  A shared place alone (2) is not enough - the Mazhilis passes several bills a day and a city sees several
  detentions - it needs corroboration: a second place, a name, or two of the weaker signals. Sharing only the
  country ("Kazakhstan", the tenge, the akimat: places.yaml `country_level`) counts nothing.

Among several matching incidents the strongest match wins (a places match ranks below any other), then the
lowest incident id, and items are taken in order of publication, so the same items always give the same
incidents (`scoring.choose_incident`). Each decision is stored on its item (`Item.grouping`), so `monitor
explain --item` can say why, and the features compared in the incident's `signature`, so later reports are
matched without reloading texts. A
report joining an incident updates it from what it stored (counts, dates, labels, where its title came from):
the cost of a join does not grow with the size of the incident.
"""

from __future__ import annotations

from monitor.incidents.explanation import explain_incident
from monitor.incidents.features import CountryLevel
from monitor.incidents.grouping import WINDOW_HOURS, group_items
from monitor.incidents.triage import Merged, Moved, TriageError, merge_incidents, move_item, resolve_incident
from monitor.incidents.updates import GroupStats, incident_severity, lock_grouping
from monitor.incidents.verdicts import settle_verdicts

__all__ = [
    "WINDOW_HOURS",
    "CountryLevel",
    "GroupStats",
    "Merged",
    "Moved",
    "TriageError",
    "explain_incident",
    "group_items",
    "incident_severity",
    "lock_grouping",
    "merge_incidents",
    "move_item",
    "resolve_incident",
    "settle_verdicts",
]
