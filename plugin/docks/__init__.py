"""Dock widgets of the plugin: the search dock (text, photo, examples, area, device badge)."""
