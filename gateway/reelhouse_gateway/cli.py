"""The `reelhouse` command."""

from __future__ import annotations

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
