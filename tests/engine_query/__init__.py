"""Tests of engine queries, similarity heatmaps, top-k hits, classification and OOD masks."""
