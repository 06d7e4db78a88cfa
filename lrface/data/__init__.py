"""Face datasets in the one-folder-per-identity layout, LFW pairs and identity-disjoint splits."""
