"""Tiny Tier 3 corpora for the federation tests (the same generator the demo uses)."""

from mshale_fl.demo.corpora import AGREEMENTS, write_corpus

__all__ = ["AGREEMENTS", "write_corpus"]
