"""Running a node: metrics, the access log, drain on SIGTERM, and preheat jobs."""
