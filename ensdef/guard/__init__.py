"""Controls against query-based attackers of a served classifier: API keys, per-client quotas, bounded
per-client counts, and stateful detection of black-box attack query streams. Plain Python and torch: the
serving layer (``deployments/``) wires them into its ingress."""
