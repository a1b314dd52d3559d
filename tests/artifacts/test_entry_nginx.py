"""The entry host's nginx upstream, as rendered, is accepted by nginx itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.conftest import require_tool
from unde_infra.model import DEFAULT_TOPOLOGY, load_topology
from unde_infra.render.entry import nginx_upstream


def test_nginx_accepts_the_upstream(tmp_path: Path) -> None:
    nginx = require_tool("nginx")
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    data["servers"]["local-app"]["instances"] = 3
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(data))
    upstream = tmp_path / "unde-api-upstream.conf"
    upstream.write_text(nginx_upstream(load_topology(topology)))
    # A minimal main config standing for the entry host's: the rendered file in its http block.
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  include {upstream};\n  server {{ listen 127.0.0.1:18080; location / {{ proxy_pass http://unde_api; }} }}\n}}\n"
    )
    result = subprocess.run([nginx, "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr
    broken = upstream.read_text().replace("least_conn;", "least_conn")
    upstream.write_text(broken)
    result = subprocess.run([nginx, "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0
