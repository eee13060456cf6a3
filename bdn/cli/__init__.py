"""The `bdn` command: `serve` runs the daemon, `warm` preheats a node and follows its progress."""
