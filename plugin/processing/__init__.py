"""The "UniGeo" Processing provider and its algorithms."""
