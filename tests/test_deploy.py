"""deploy/: what can be checked without systemd running or Docker: the files parse, and every command they run
is one our CLI accepts with those exact options."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import monitor.cli  # noqa: F401 - registers every command on `app`
from monitor.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def cli_accepts(argv: list[str]) -> None:
    """`argv` (after the program name) parses: options and subcommands exist. --help stops before any work."""
    result = CliRunner().invoke(app, [*argv, "--help"])
    assert result.exit_code == 0, f"monitor {shlex.join(argv)}: {result.output}"


def monitor_args(command: list[str]) -> list[str]:
    program = command[0]
    assert Path(program).name == "monitor", f"not the monitor command: {program}"
    return command[1:]


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(DEPLOY / "monitor.service", encoding="utf-8")
    return parser


def test_systemd_unit_restarts_on_failure_is_sandboxed_and_reads_secrets_from_a_file() -> None:
    svc = unit()["Service"]
    assert svc["Restart"] == "on-failure"
    assert svc["RestartPreventExitStatus"] == "2"  # invalid config: restarting does not help
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }.items():
        assert svc[key] == value, key
    assert svc["ReadWritePaths"] == "/var/lib/monitor" == svc["WorkingDirectory"]
    assert svc["EnvironmentFile"] == "/etc/monitor/monitor.env"
    assert svc["User"] == "monitor" and svc["KillSignal"] == "SIGTERM"
    assert "--site-dir /var/lib/monitor/site" in svc["ExecStart"]  # written inside ReadWritePaths
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"


def test_systemd_unit_commands_exist_in_the_cli() -> None:
    svc = unit()["Service"]
    for key in ("ExecStart", "ExecStartPre"):
        argv = monitor_args(shlex.split(svc[key]))
        cli_accepts(argv)
    assert monitor_args(shlex.split(svc["ExecStart"]))[2] == "run"
    assert monitor_args(shlex.split(svc["ExecStartPre"]))[2:] == ["db", "upgrade"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # Same unit, with the program a stand-in that runs this interpreter's `python -m monitor` (verify wants an
    # executable file; `monitor` need not be on PATH) and a stand-in environment file.
    text = (DEPLOY / "monitor.service").read_text(encoding="utf-8")
    exe = tmp_path / "bin" / "monitor"
    exe.parent.mkdir()
    exe.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m monitor "$@"\n', encoding="utf-8")
    exe.chmod(0o755)
    env = tmp_path / "monitor.env"
    env.write_text("MONITOR_DB=sqlite:////var/lib/monitor/monitor.db\n", encoding="utf-8")
    text = text.replace("/opt/monitor/venv/bin/monitor", str(exe)).replace(
        "/etc/monitor/monitor.env", str(env)
    )
    path = tmp_path / "monitor.service"
    path.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on unknown keys and bad values too, but names the unit file in each complaint.
    complaints = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "monitor.service" in ln]
    assert proc.returncode == 0 and not complaints, proc.stdout + proc.stderr


def test_compose_runs_the_monitor_and_postgresql_with_real_commands() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = doc["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    mon = services["monitor"]
    cli_accepts(monitor_args(mon["command"]))
    assert mon["command"][1] == "run"
    cli_accepts(monitor_args(services["migrate"]["command"]))
    assert services["migrate"]["command"][1:] == ["db", "upgrade"]
    assert mon["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = mon["environment"]
    assert env["MONITOR_DB"].startswith("postgresql://") and "${POSTGRES_PASSWORD" in env["MONITOR_DB"]
    assert all(p.startswith("127.0.0.1:") for p in mon["ports"])  # not exposed beyond the host
    build = services["migrate"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert (DEPLOY / "../config").resolve() == ROOT / "config"


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, with continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    last_from = max(i for i, (w, _) in enumerate(out) if w == "FROM")
    return out[last_from:]


def test_dockerfile_runs_as_non_root_with_a_healthcheck_on_healthz_and_a_real_command() -> None:
    final = dockerfile()
    users = [arg for w, arg in final if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = next(arg for w, arg in final if w == "HEALTHCHECK")
    assert "/healthz" in health and "MONITOR_HTTP_PORT" in health
    exec_form = json.loads(health.split("CMD", 1)[1].strip())
    assert exec_form[:2] == ["python", "-c"]
    compile(exec_form[2], "<healthcheck>", "exec")  # the probe is valid Python
    cmd = json.loads(next(arg for w, arg in final if w == "CMD"))
    cli_accepts(monitor_args(cmd))
    assert cmd[1] == "run" and "--host" in cmd  # reachable through -p inside the container
    # Everything the build stage copies exists in the repository.
    whole = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    for src in re.findall(r"^COPY (?!--from)(.+?) \S+$", whole, re.M):
        for name in src.split():
            assert (ROOT / name).exists(), name


def test_env_example_names_the_variables_the_code_reads() -> None:
    text = (DEPLOY / "monitor.env.example").read_text(encoding="utf-8")
    names = set(re.findall(r"^#?\s*(MONITOR_[A-Z_]+)=", text, re.M))
    assert {"MONITOR_DB", "MONITOR_SMTP_URL", "MONITOR_HTTP_PORT"} <= names
    code = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "monitor").rglob("*.py"))
    for name in names:
        assert name in code, f"{name} is documented but nothing reads it"


def test_deploy_readme_covers_install_upgrade_backup_restore_and_scaling() -> None:
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for heading in ("## Install", "## Upgrade", "## Backup and restore", "## Scaling out"):
        assert heading in text
    for needle in ("monitor db upgrade", "pg_dump", "pg_restore", ".backup", "SKIP LOCKED", "advisory"):
        assert needle in text
