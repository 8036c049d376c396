"""Ray Serve layer: member deployments, defense routers, HTTP and gRPC ingress (see docs/architecture.md)."""
