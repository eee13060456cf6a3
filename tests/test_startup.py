"""Start-up failures the environment causes: one line naming the setting and the cause, exit status 3."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from bdn.server import StartupError, listener
from tests.test_config import clean_env, run_cli


def test_a_port_in_use_is_one_line_and_status_3(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = tmp_path / "bdn.yaml"
        config.write_text(yaml.safe_dump({"listen": f"127.0.0.1:{port}", "cache": {"dir": str(tmp_path / "c")}}))
        done = run_cli("serve", "--config", str(config), env=clean_env())
    assert done.returncode == 3, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("bdn: ")]
    assert lines == [f"bdn: listen: cannot listen on 127.0.0.1:{port}: Address already in use"], done.stderr
    assert "Traceback" not in done.stderr


def test_an_unusable_cache_dir_is_one_line_and_status_3(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = tmp_path / "bdn.yaml"
    config.write_text(yaml.safe_dump({"listen": "127.0.0.1:0", "cache": {"dir": str(blocker / "cache")}}))
    done = run_cli("serve", "--config", str(config), env=clean_env())
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("bdn: ")]
    assert len(lines) == 1 and lines[0].startswith(f"bdn: cache.dir: cannot use {blocker / 'cache'}: "), done.stderr


def test_a_dual_stack_listener_takes_ipv4_clients(tmp_path: Path) -> None:
    try:
        sock = listener("::", 0)
    except StartupError as exc:
        pytest.skip(f"no IPv6 here: {exc}")
    with sock:
        port = sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            sock.setblocking(True)
            accepted, address = sock.accept()
            accepted.close()
    assert address[0] == "::ffff:127.0.0.1"
