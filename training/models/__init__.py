"""The networks: UniGeoCLIP, its towers and their building blocks (EfficientNet, spectral, GPS)."""
