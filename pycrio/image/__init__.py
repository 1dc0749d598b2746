"""Images: names, registries.conf, manifests and the registry (distribution API v2) client."""
