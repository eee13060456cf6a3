"""The regional peer tier: which node owns a chunk, and reading a chunk from that node instead of the upstream."""
