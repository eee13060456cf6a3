"""Where a request is decided hit or miss: object versions and their chunks in RAM, on disk or in flight."""
