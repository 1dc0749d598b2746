"""Test support: a real registry, an OCI image builder, a pusher and a fault-injecting registry proxy."""
