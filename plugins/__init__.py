"""Extractors and loaders behind one interface, found through entry points."""
