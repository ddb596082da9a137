"""Map tools: they only convert canvas clicks into signals (find similar, similar to region)."""
