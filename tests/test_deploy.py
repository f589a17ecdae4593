"""deploy/replicas and deploy/citus: the compose files for both topologies in docs/scaling.md.

No Docker engine runs here, so the compose files are checked as data (services, images, ports,
environment, mounted files), and the shell scripts they mount are run for real against servers
started from the embedded wheel's binaries: the primary's init script and the standby's
entrypoint make a streaming standby, and the register script joins workers to a coordinator.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from clusters import (
    USER,
    CitusCluster,
    citus_bindir,
    citus_cluster,
    new_node,
    stop_all,
    topology,
)
from pgcluster import PASSWORD, _bin_dir

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _compose(name: str) -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / name / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _mounted_files(folder: str, service: dict[str, Any]) -> list[Path]:
    """The host files a service bind-mounts (./x:/y), which must exist beside the compose file."""
    files = []
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("./"):
            files.append(DEPLOY / folder / source)
    return files


def _published(service: dict[str, Any]) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


def _loopback_only(ports: list[str]) -> bool:
    return all(p.startswith("127.0.0.1:") for p in ports)


# --- the files, as data -------------------------------------------------------------------------


def test_replicas_compose_is_a_primary_and_a_streaming_standby() -> None:
    compose = _compose("replicas")
    services = compose["services"]
    assert set(services) == {"primary", "standby"}
    primary, standby = services["primary"], services["standby"]
    for service in (primary, standby):
        assert service["image"] == "pgvector/pgvector:pg18"
        assert "pg_isready -h 127.0.0.1" in " ".join(service["healthcheck"]["test"])
        for path in _mounted_files("replicas", service):
            assert path.is_file(), path
            subprocess.run(["bash", "-n", path], check=True)
        # PostgreSQL 18 images keep data under /var/lib/postgresql/18/docker: mount the parent.
        assert any(v.endswith(":/var/lib/postgresql") for v in service["volumes"])
    assert _published(primary) == ["127.0.0.1:5434:5432"]
    assert _published(standby) == ["127.0.0.1:5435:5432"]
    env_p, env_s = primary["environment"], standby["environment"]
    for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert env_p[key]
    for key in ("REPLICATION_USER", "REPLICATION_PASSWORD", "REPLICATION_SLOT"):
        assert env_p[key] and env_p[key] == env_s[key], key
    assert env_s["PRIMARY_HOST"] == "primary" and env_s["PRIMARY_PORT"] == "5432"
    assert env_s["PGDATA"] == "/var/lib/postgresql/18/docker"
    assert standby["depends_on"]["primary"]["condition"] == "service_healthy"
    assert standby["user"] == "postgres"  # pg_basebackup and postgres refuse root
    # The init script is mounted where the postgres image runs it at the first start.
    assert (
        "./primary-init.sh:/docker-entrypoint-initdb.d/10-replication.sh:ro" in (primary["volumes"])
    )
    entrypoint = standby["entrypoint"]
    assert (
        entrypoint[0] == "bash"
        and f"./standby-entrypoint.sh:{entrypoint[1]}:ro" in (standby["volumes"])
    )
    script = (DEPLOY / "replicas" / "standby-entrypoint.sh").read_text()
    assert "pg_basebackup" in script and "--write-recovery-conf" in script
    assert set(compose["volumes"]) == {"primary-data", "standby-data"}


def test_citus_compose_is_a_coordinator_and_two_workers_with_pgvector() -> None:
    compose = _compose("citus")
    services = compose["services"]
    assert set(services) == {"coordinator", "worker1", "worker2", "register"}
    nodes = [services[n] for n in ("coordinator", "worker1", "worker2")]
    images = {s["image"] for s in services.values()}
    assert len(images) == 1  # one image, built from the Dockerfile beside the compose file
    for node in nodes:
        assert node["build"] == "."
        env = node["environment"]
        assert env["POSTGRES_DB"] == "simsearch" and env["POSTGRES_USER"] == "simsearch"
        # Nodes log in to each other with PGPASSWORD (kept in the server's environment by
        # the Citus image), which must be the nodes' own password; no trust anywhere.
        assert env["PGPASSWORD"] == env["POSTGRES_PASSWORD"]
        assert env["PGUSER"] == env["POSTGRES_USER"]
        assert env["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
        assert "pg_isready -h 127.0.0.1" in " ".join(node["healthcheck"]["test"])
        assert any(v.endswith(":/var/lib/postgresql") for v in node["volumes"])
    # Applications reach the coordinator only; workers stay inside the compose network.
    assert _published(services["coordinator"]) == ["127.0.0.1:5436:5432"]
    assert not _published(services["worker1"]) and not _published(services["worker2"])
    assert len({v for n in nodes for v in n["volumes"]}) == 3  # a volume of its own each
    register = services["register"]
    assert {k: v["condition"] for k, v in register["depends_on"].items()} == {
        "coordinator": "service_healthy",
        "worker1": "service_healthy",
        "worker2": "service_healthy",
    }
    assert register["environment"]["COORDINATOR_HOST"] == "coordinator"
    assert register["environment"]["WORKER_HOSTS"].split() == ["worker1", "worker2"]
    assert register["restart"] == "no"
    for path in _mounted_files("citus", register):
        assert path.is_file(), path
        subprocess.run(["bash", "-n", path], check=True)

    dockerfile = (DEPLOY / "citus" / "Dockerfile").read_text()
    base = re.search(r"ARG CITUS_IMAGE=(\S+)", dockerfile)
    assert base and base.group(1).startswith("citusdata/citus:14.")
    assert 'postgresql-${PG_MAJOR}-pgvector"' in dockerfile
    copied = re.findall(r"^COPY (\S+) /docker-entrypoint-initdb.d/", dockerfile, re.M)
    assert copied == ["002-create-vector-extension.sql"]
    assert "CREATE EXTENSION IF NOT EXISTS vector" in (DEPLOY / "citus" / copied[0]).read_text()


# --- the scripts, run for real -------------------------------------------------------------------


def test_replica_scripts_make_a_streaming_standby() -> None:
    """primary-init.sh on a fresh primary, then standby-entrypoint.sh cloning it, as the
    compose file runs them (only host, ports and paths differ)."""
    bindir = _bin_dir()
    scripts = DEPLOY / "replicas"
    compose_env = _compose("replicas")["services"]["primary"]["environment"]
    replication = {k: v for k, v in compose_env.items() if k.startswith("REPLICATION_")}
    with topology("ss-dep-", bindir) as (root, user):
        primary = new_node("primary", root, bindir, user)
        standby = new_node("standby", root, bindir, user)
        standby_process: subprocess.Popen[str] | None = None
        try:
            primary.initdb()
            primary.configure("listen_addresses = '127.0.0.1'\nfsync = off\n")
            # In compose the standby connects from another container's address, which only
            # the image's "host all all all" line covers, and "all" does not match replication:
            # drop initdb's loopback replication lines so the script's own line must do it.
            hba = primary.data / "pg_hba.conf"
            hba.write_text(
                "".join(
                    line
                    for line in hba.read_text().splitlines(keepends=True)
                    if not line.startswith(("local", "host")) or " replication " not in line
                )
            )
            primary.start()
            # As the postgres image would: POSTGRES_* set, psql reaching the new server.
            subprocess.run(
                ["bash", scripts / "primary-init.sh"],
                check=True,
                capture_output=True,
                text=True,
                env=primary.env(
                    POSTGRES_USER=USER,
                    POSTGRES_DB="postgres",
                    PGDATA=str(primary.data),
                    PGHOST="127.0.0.1",
                    PGPORT=str(primary.port),
                    PGPASSWORD=PASSWORD,
                    **replication,
                ),
                **primary.as_server_user(),  # type: ignore[arg-type]
            )
            primary.run("pg_ctl", "-D", primary.data, "reload")  # the image restarts instead
            env = standby.env(
                PRIMARY_HOST="127.0.0.1",
                PRIMARY_PORT=str(primary.port),
                PGDATA=str(standby.data),
                # postgres takes its port from PGPORT: the one thing the container's
                # fixed 5432 does not give here.
                PGPORT=str(standby.port),
                **replication,
            )
            env.pop("PGPASSFILE")  # the replication password must come from the script alone
            with standby.log.open("w") as log:
                standby_process = subprocess.Popen(
                    ["bash", scripts / "standby-entrypoint.sh"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=env,
                    **standby.as_server_user(),  # type: ignore[arg-type]
                )
            deadline = time.monotonic() + 60
            while True:
                try:
                    conn = psycopg.connect(standby.url, connect_timeout=2, autocommit=True)
                    break
                except psycopg.OperationalError:
                    assert standby_process.poll() is None, standby.log_tail()
                    assert time.monotonic() < deadline, standby.log_tail()
                    time.sleep(0.2)
            with conn:
                assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
                for _ in range(100):
                    row = conn.execute(
                        "SELECT status, slot_name FROM pg_stat_wal_receiver"
                    ).fetchone()
                    if row and row[0] == "streaming":
                        break
                    time.sleep(0.1)
                assert row == ("streaming", replication["REPLICATION_SLOT"]), standby.log_tail()
                with psycopg.connect(primary.url, autocommit=True) as pconn:
                    slot = pconn.execute(
                        "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                        (replication["REPLICATION_SLOT"],),
                    ).fetchone()
                    assert slot == (True,)
                    pconn.execute("CREATE TABLE after_clone AS SELECT 42 AS answer")
                for _ in range(100):
                    if conn.execute("SELECT to_regclass('after_clone')").fetchone() != (None,):
                        break
                    time.sleep(0.1)
                assert conn.execute("SELECT answer FROM after_clone").fetchone() == (42,)
            # The standby's copy carries the recovery settings pg_basebackup -R wrote.
            assert (standby.data / "standby.signal").exists()
        finally:
            stop_all([standby, primary])
            if standby_process is not None:
                standby_process.wait(timeout=30)


@pytest.fixture(scope="module")
def unregistered_citus() -> Any:
    with citus_cluster(citus_bindir(), register=False) as cluster:
        yield cluster


def test_register_script_joins_the_workers(unregistered_citus: CitusCluster) -> None:
    cluster = unregistered_citus
    env = cluster.coordinator.env(
        COORDINATOR_HOST="127.0.0.1",
        COORDINATOR_PORT=str(cluster.coordinator.port),
        WORKER_HOSTS=" ".join(f"127.0.0.1:{w.port}" for w in cluster.workers),
        POSTGRES_USER=USER,
        POSTGRES_DB="postgres",
        PGPASSWORD=PASSWORD,
    )
    script = DEPLOY / "citus" / "register-workers.sh"
    for _ in range(2):  # `docker compose up` again runs it again: idempotent
        done = subprocess.run(["bash", script], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
    with psycopg.connect(cluster.url) as conn:
        nodes = conn.execute(
            "SELECT nodeport, groupid = 0 FROM pg_dist_node WHERE isactive ORDER BY nodeid"
        ).fetchall()
        assert nodes == [
            (cluster.coordinator.port, True),
            *((w.port, False) for w in cluster.workers),
        ]
        conn.execute("CREATE TABLE t (id int, v vector(3))")
        conn.execute("SELECT create_distributed_table('t', 'id', shard_count => 4)")
        ports = conn.execute("SELECT DISTINCT nodeport FROM citus_shards").fetchall()
        assert {p for (p,) in ports} == {w.port for w in cluster.workers}
