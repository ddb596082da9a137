"""Dialogs of the plugin: settings and land-use classification."""
