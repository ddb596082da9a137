"""PyQGIS front end of UniGeo: toolbar, map tools, docks, tasks and the Processing provider."""
