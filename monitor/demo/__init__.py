"""`monitor demo`: bundled sample feeds (EN/RU/KK) served on loopback, polled, classified, digested and published,
so a first run shows the whole pipeline without network access or any setup."""

from pathlib import Path

FEEDS_DIR = Path(__file__).resolve().parent / "feeds"
