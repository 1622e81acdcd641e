"""Helpers the tests share: fixtures, builders, servers; no tests here."""
