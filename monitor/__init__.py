"""Civic-space monitor: polls news feeds, classifies items with explainable rules, delivers digests."""

__version__ = "0.1.0"
