"""PgBouncer follows its node's role: found in the lab's primary-failure drill at 120 ms, where the
promoted replica's PgBouncer kept telling every client `in_hot_standby=on` (the parameters of its
pool's first server connection) and libpq's target_session_attrs=read-write refused it, so no
application could write after the failover until PgBouncer restarted."""

from __future__ import annotations

import subprocess

import yaml

from unde_infra.files import source
from unde_infra.model import load_topology
from unde_infra.render import patroni
from unde_infra.render.node_setup import shard_node_steps
from unde_infra.render.postgres import layout_for


def test_patroni_calls_the_role_change_script_which_the_path_unit_watches(tmp_path) -> None:
    inventory = load_topology()
    shard = inventory.shards[0]
    layout = layout_for(shard.primary.os)
    files = patroni.shard_node_config_files(shard, "primary", inventory, layout=layout)
    config = yaml.safe_load(files[layout.patroni_config].content)
    script = f"{layout.patroni_dir}/{patroni.ROLE_CHANGE_SCRIPT}"
    assert config["postgresql"]["callbacks"] == {"on_role_change": script}
    assert files[script].mode == "0750" and files[script].owner == "postgres"
    unit = files[f"{layout.systemd_dir}/patroni.service"].content
    assert f"Environment=UNDE_ROLE_CHANGE_FILE={patroni.ROLE_CHANGE_FILE}" in unit
    path_unit = files[f"{layout.systemd_dir}/{patroni.ROLE_CHANGE_UNIT}.path"].content
    assert f"PathChanged={patroni.ROLE_CHANGE_FILE}" in path_unit
    service = files[f"{layout.systemd_dir}/{patroni.ROLE_CHANGE_UNIT}.service"].content
    assert "ExecStart=/usr/bin/systemctl try-restart pgbouncer.service" in service
    # The setup enables and starts the path unit with the node's other units.
    (step,) = [s for s in shard_node_steps(shard.primary.os) if s.path.endswith("shard-node-setup")]
    assert f"WATCHERS={patroni.ROLE_CHANGE_UNIT}.path" in "\n".join(step.files().values())


def test_the_callback_writes_the_role_change_where_the_unit_looks(tmp_path) -> None:
    script = tmp_path / "role-change"
    script.write_text(source(patroni.ROLE_CHANGE_SCRIPT))
    target = tmp_path / "unde-role-change"
    result = subprocess.run(["sh", str(script), "on_role_change", "primary", "shard0"], capture_output=True, text=True,
                            env={"UNDE_ROLE_CHANGE_FILE": str(target), "PATH": "/usr/bin:/bin"}, timeout=10)
    assert result.returncode == 0, result.stderr
    assert target.read_text().split()[1:] == ["on_role_change", "primary", "shard0"]
