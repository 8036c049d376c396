"""Multi-node Ray: a local multi-node cluster on one machine, and the cluster-launcher / KubeRay configs."""
