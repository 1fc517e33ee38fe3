"""The `reelhouse` command."""

from __future__ import annotations

from pathlib import Path

import click

from services.config import Config, ConfigError
from transcode_worker.cli import worker
from upload_service.cli import login, logout, upload


def _config(**overrides) -> Config:
    try:
        return Config.from_env(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Reelhouse: a self-hostable, multi-tenant video platform."""


@main.command()
@click.option("--host", help="Address to listen on (REELHOUSE_HOST, default 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (REELHOUSE_PORT, default 8080).")
def up(host: str | None, port: int | None) -> None:
    """Run everything in one process: gateway, every service, workers and Socket.IO."""
    from reelhouse_gateway.server import serve

    config = _config(host=host, port=port)
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # it holds password hashes and the signing key
    try:
        serve(config)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@main.command()
@click.option("--host", help="Address to listen on (REELHOUSE_HOST, default 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (REELHOUSE_PORT, default 8080).")
def gateway(host: str | None, port: int | None) -> None:
    """Run the distributed gateway: the web app and API docs, each service's routes forwarded to its URL."""
    from reelhouse_gateway.server import serve_gateway

    config = _config(host=host, port=port)
    try:
        serve_gateway(config)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@main.group()
def cluster() -> None:
    """The distributed topology on this machine as separate processes (make cluster / make cluster-down)."""


@cluster.command("up")
@click.option("--dir", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".cluster"),
              show_default=True, help="Data, logs and generated configuration.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Ingress port.")
@click.option("--detach", is_flag=True, help="Run in the background; return once everything answers.")
@click.option("--quiet", is_flag=True, help="Do not echo the processes' logs (they are in <dir>/logs).")
@click.option("--store", type=click.Choice(["s3", "local"]), default="s3", show_default=True,
              help="Objects in moto's S3 server, or in a local directory shared by the processes.")
def cluster_up(run_dir: Path, port: int, detach: bool, quiet: bool, store: str) -> None:
    """Start nginx, the gateway, auth, upload, stream, two notify replicas and two workers."""
    from reelhouse_gateway import cluster as topology

    if detach:
        current = topology.start_detached(run_dir, port, store=store)
        click.echo(f"Reelhouse cluster is running at {current['url'].replace('127.0.0.1', 'localhost')}/ "
                   f"(logs in {run_dir / 'logs'}; `make cluster-down` stops it)")
        for name, service in current["services"].items():
            click.echo(f"  {name:<10} pid {service['pid']:<8} port {service['port']}")
        return
    topology.run(run_dir, port, echo=not quiet, store=store)


@cluster.command("down")
@click.option("--dir", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".cluster"),
              show_default=True)
def cluster_down(run_dir: Path) -> None:
    """Stop a cluster started with `cluster up --detach`."""
    from reelhouse_gateway import cluster as topology

    click.echo("stopped" if topology.stop_detached(run_dir) else "no cluster is running from " + str(run_dir))


@main.command("check-config")
def check_config() -> None:
    """Validate the environment's configuration and print it (secrets hidden)."""
    config = _config()
    hidden = {"jwt_private_key", "aws_secret_access_key"}
    for name, value in vars(config).items():
        if name == "extra":
            continue
        click.echo(f"{name} = {'***' if name in hidden and value else value}")


main.add_command(login)
main.add_command(logout)
main.add_command(upload)
main.add_command(worker)
