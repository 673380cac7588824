"""The `gateway` command: init, serve, worker, purge, db, models, keys."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import FlaskGroup, routes_command, shell_command, with_appcontext


def _create_app() -> Any:
    from gateway.app import create_app
    from gateway.errors import ConfigError

    try:
        return create_app()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


class GatewayGroup(FlaskGroup):
    """Flask's group, whose help never needs the app: `gateway --help` works before `gateway init`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands)  # FlaskGroup would load the app (and print a traceback without secrets)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help(ctx, formatter)
        problem = _config_problem()
        if problem is not None:
            formatter.write_paragraph()
            formatter.write_text(f"Hint: {problem}. Run `gateway init` first (or set the GATEWAY_* variables).")


def _config_problem() -> str | None:
    """Why the app can't start here, or None when it can."""
    from gateway.app import create_app
    from gateway.errors import ConfigError

    try:
        create_app()
    except ConfigError as exc:
        return str(exc).split(":")[0]
    return None


@click.group(cls=GatewayGroup, create_app=_create_app, add_default_commands=False, load_dotenv=False)
def main() -> None:
    """Decision-rights gateway."""


main.add_command(routes_command)
main.add_command(shell_command)


def _instance_path() -> Path:
    env = os.environ.get("GATEWAY_INSTANCE_PATH")
    if env:
        return Path(env)
    from flask import Flask

    return Path(Flask("gateway").instance_path)


@main.command("init", with_appcontext=False)
def init_command() -> None:
    """Write random secrets into instance/config.py unless it exists (development and `make run`)."""
    folder = _instance_path()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.py"
    if path.exists():
        click.echo(f"{path} exists; keeping it")
        return
    text = (
        "# Written by `gateway init`. Keep this file secret; losing CONTACT_KEY loses contact details,\n"
        "# changing SUBJECT_KEY makes earlier decisions unfindable by IIN.\n"
        f"SUBJECT_KEY = {secrets.token_hex(32)!r}\n"
        f"CONTACT_KEY = {secrets.token_hex(32)!r}\n"
        f"SECRET_KEY = {secrets.token_hex(32)!r}\n"
        "# Signs the audit log's checkpoints (Ed25519 seed); its public key is GET /v1/log/key.\n"
        f"LOG_SIGNING_KEY = {secrets.token_hex(32)!r}\n"
        "\n# Development: write email notices as .eml files (the person's link included) into this folder\n"
        "# instead of sending them. For real delivery set SMTP_HOST (and SMTP_*) and remove these lines.\n"
        'NOTIFY_ROUTES = {"email": "file"}\n'
        f"NOTIFY_FILE_DIR = {str(folder / 'notices')!r}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    click.echo(f"wrote {path}")


@main.command("serve", with_appcontext=False)
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="host:port to listen on")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--timeout", default=30, show_default=True, type=int, help="worker timeout, seconds")
@click.option("--access-log/--no-access-log", default=False)
def serve_command(bind: str, workers: int, timeout: int, access_log: bool) -> None:
    """Serve the gateway with gunicorn; the app and its models are loaded once, before forking."""
    from gateway.server import serve

    serve(bind=bind, workers=workers, timeout=timeout, access_log=access_log)


@main.command("worker")
@click.option("--kinds", default=None, metavar="KIND,KIND",
              help="comma-separated task kinds to run (default: every kind, e.g. deliver,explain)")
@click.option("--batch-size", type=click.IntRange(1, 1000), default=None, help="rows claimed at a time (every kind)")
@click.option("--poll-interval", type=click.FloatRange(0.01, 60), default=None, help="seconds between polls when idle")
@with_appcontext
def worker_command(kinds: str | None, batch_size: int | None, poll_interval: float | None) -> None:
    """Run background jobs until stopped; SIGTERM finishes the jobs in hand. Run any number on PostgreSQL."""
    from gateway.jobs.base import UnknownTaskKind
    from gateway.jobs.runner import kinds as registered
    from gateway.jobs.runner import run_worker

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    names = None
    if kinds is not None:
        names = [name.strip() for name in kinds.split(",") if name.strip()]
        try:
            names = [registered(app).get(name).name for name in names]
        except UnknownTaskKind as exc:
            raise click.BadParameter(str(exc), param_hint="--kinds") from None
        if not names:
            raise click.BadParameter("name at least one task kind", param_hint="--kinds")
    if {"explain", "recourse", "batch"} & set(names or registered(app).names()):
        from gateway import registry, runtime
        from gateway.errors import GatewayError

        # Load the serving models (and fit their explainers) before the first job, not inside its lease. A
        # model that can't be loaded is reported and left to its jobs (retried, then failed): it stops no other.
        for row in registry.list_models(serving_only=True):
            try:
                runtime.cache().get(row.id)
                click.echo(f"model loaded: {row.name} {row.version}", err=True)
            except GatewayError as exc:
                click.echo(f"model not loaded: {row.name} {row.version}: {exc.message}", err=True)
    run_worker(app, names, batch_size=batch_size, poll_interval_s=poll_interval)


@main.command("decide")
@click.option("--model", "model_name", required=True, help="the serving model's name")
@click.option("--client", "client_name", required=True,
              help="the agency's API client (`gateway keys create --role agency`) the decisions are made for")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "parquet", "json"]), default=None,
              help="the file's format (default: from its name: .csv, .jsonl/.ndjson, .parquet, .json)")
@click.option("--results", "results_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write every row's result to this file (.csv, or .jsonl for JSON lines)")
@click.option("--progress/--no-progress", default=True, help="show a progress bar (on stderr)")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_appcontext
def decide_command(model_name: str, client_name: str, fmt: str | None, results_path: Path | None, progress: bool,
                   file: Path) -> None:
    """Decide every row of FILE as a decision batch (what POST …/decision-batches does), with a progress bar.

    The batch is recorded first, then decided here chunk by chunk; interrupted, it is given back and a
    `gateway worker` (or a serving process's jobs thread) finishes it from its last committed chunk.
    """
    import time

    from sqlalchemy import select
    from tqdm import tqdm

    from gateway import batches, batchfiles
    from gateway.auth import Principal
    from gateway.batches.task import BatchKind
    from gateway.errors import GatewayError
    from gateway.extensions import db
    from gateway.ids import utcnow
    from gateway.models import ApiClient, DecisionBatch
    from gateway.presenters import batch as views

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    client = db.session.execute(select(ApiClient).where(ApiClient.name == client_name)).scalar_one_or_none()
    if client is None or client.revoked_at is not None or client.role != "agency":
        raise click.BadParameter(f"no active agency client is named {client_name!r} (see `gateway keys list`)",
                                 param_hint="--client")
    who = Principal(client.id, client.name, client.body, client.role)
    started = time.monotonic()
    try:
        fmt = fmt or batchfiles.format_of(filename=file.name)
        batch = batches.submit(who, model_name, batches.Upload(fmt, data=file.read_bytes()))
    except GatewayError as exc:
        problems = "".join(f"\n  {d.get('field')}: {d.get('message')}" for d in (exc.details or [])
                           if isinstance(d, dict))
        raise click.ClickException(f"{exc.message}{problems}") from None
    batch_id, total = batch.id, batch.total_rows
    click.echo(f"batch {batch_id}: {total} rows, {batch.invalid_rows} refused at intake", err=True)

    def position() -> tuple[str, int]:
        row = db.session.execute(select(DecisionBatch.status, DecisionBatch.next_row)
                                 .where(DecisionBatch.id == batch_id)).one()
        db.session.commit()
        return str(row.status), int(row.next_row)

    kind = BatchKind(app)
    with tqdm(total=total, unit="row", desc="deciding", disable=not progress, file=sys.stderr) as bar:
        def advance(_outcome: object) -> None:
            bar.update(position()[1] - bar.n)

        try:
            if kind.claim(utcnow(), batch_id):
                kind.work(batch_id, on_chunk=advance)
            while position()[0] in ("queued", "running"):  # another runner holds it, or a chunk is retried
                advance(None)
                time.sleep(0.5)
        except KeyboardInterrupt:
            db.session.rollback()
            batches.release(batch_id, kind.owner)
            raise click.ClickException(f"interrupted: batch {batch_id} stays queued; `gateway worker` finishes it "
                                       "from its last committed chunk") from None
        advance(None)
    done = db.session.get(DecisionBatch, batch_id)
    assert done is not None
    elapsed = time.monotonic() - started
    click.echo(f"batch {batch_id}: {done.status} in {elapsed:.1f} s ({total / elapsed:.0f} rows/s): "
               f"{done.decided_rows} decided, {done.replayed_rows} replayed (decided before), "
               f"{done.invalid_rows} not decided")
    if done.last_error:
        click.echo(f"reason: {done.last_error}", err=True)
    shown = 0
    for row in batches.iter_rows(batch_id):
        if row.errors and shown < 5:
            click.echo(f"  row {row.idx} ({row.idempotency_key}): "
                       + "; ".join(f"{e['field']}: {e['message']}" for e in row.errors), err=True)
            shown += 1
    if results_path is not None:
        lines = views.results_jsonl if results_path.suffix in (".jsonl", ".ndjson") else views.results_csv
        with open(results_path, "w", encoding="utf-8", newline="") as fh:
            for chunk in lines(batches.iter_rows(batch_id)):
                fh.write(chunk)
        click.echo(f"results: {results_path}", err=True)
    if done.status != "done":
        sys.exit(1)


@main.command("purge")
@click.option("--dry-run", is_flag=True, help="list what would be purged (and what is kept back, and why); change nothing")
@click.option("--now", "now_text", default=None, metavar="ISO",
              help="purge as of this UTC time instead of now, e.g. 2027-06-01T00:00:00Z")
@click.option("--limit", type=click.IntRange(1, 100000), default=1000, show_default=True,
              help="decisions purged per transaction")
@with_appcontext
def purge_command(dry_run: bool, now_text: str | None, limit: int) -> None:
    """Delete the personal data of decisions past their retention period (what the purge job kind does)."""
    import datetime as dt

    from gateway import retention
    from gateway.ids import isoformat, utcnow
    from gateway.settings import current_settings

    now = utcnow()
    if now_text is not None:
        try:
            now = dt.datetime.fromisoformat(now_text.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(f"{now_text!r} is not an ISO date-time, e.g. 2027-06-01T00:00:00Z",
                                     param_hint="--now") from None
        now = now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)
    settings = current_settings()
    if dry_run:
        found = retention.expired(now, settings, include_kept=True)
        due = [c for c in found if c.kept_because is None]
        click.echo(f"as of {isoformat(now)}: {len(due)} decision(s) would be purged, "
                   f"{len(found) - len(due)} kept back (dry run: nothing changed)")
        for c in found:
            what = "purge" if c.kept_because is None else f"keep ({c.kept_because})"
            click.echo(f"{what}\t{c.decision_id}\t{c.model}\tdecided {isoformat(c.created_at)}\t"
                       f"expired {isoformat(c.expired_at)} ({c.retention_days} days)")
        return
    total = 0
    while True:
        result = retention.purge(now, settings=settings, limit=limit)
        for decision_id in result.purged:
            click.echo(f"purged\t{decision_id}")
        total += len(result.purged)
        if len(result.purged) + result.skipped < limit:
            break
    swept = retention.sweep(settings)
    click.echo(f"as of {isoformat(now)}: {total} decision(s) purged")
    if swept.keys or swept.files:
        click.echo(f"swept: {swept.keys} data key(s) and {swept.files} notice file(s) of purged or unrecorded "
                   "decisions")


@main.group("models")
def models_group() -> None:
    """Register, list, activate and suspend models."""


@models_group.command("register")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--activate/--no-activate", default=False, help="make this version the serving one")
@with_appcontext
def models_register(manifest: Path, activate: bool) -> None:
    """Register a model version from MANIFEST (TOML or JSON) and its artifact."""
    from pydantic import ValidationError

    from gateway import registry
    from gateway.db import write_transaction
    from gateway.errors import GatewayError
    from gateway.manifest import load_manifest

    try:
        parsed, folder = load_manifest(manifest)
    except ValidationError as exc:
        raise click.ClickException(f"invalid manifest {manifest}:\n{exc}") from None
    if parsed.artifact is None and parsed.source is None:
        raise click.ClickException("the manifest has no 'artifact' path")
    artifact = (folder / parsed.artifact).read_bytes() if parsed.artifact is not None else None
    background = None
    if parsed.explanation.background:
        background = (folder / parsed.explanation.background).read_bytes()
    try:
        with write_transaction():
            row, created = registry.register(parsed, artifact, background, activate=activate, registered_by="cli",
                                             on_plan=lambda plan: click.echo(f"explainer: {plan}"))
            status = row.status
    except GatewayError as exc:
        detail = f"\n{json.dumps(exc.details, indent=2, ensure_ascii=False)}" if exc.details else ""
        raise click.ClickException(f"{exc.message}{detail}") from None
    word = "registered" if created else "already registered"
    click.echo(f"{word}: {parsed.name} {parsed.version} ({status}) sha256={row.artifact_sha256}")


@models_group.command("list")
@with_appcontext
def models_list() -> None:
    """List every registered model version."""
    from gateway import registry

    for row in registry.list_models(serving_only=False):
        click.echo(f"{row.name}\t{row.version}\t{row.status}\t{row.risk_class}\t{row.artifact_sha256[:12]}")


@models_group.command("activate")
@click.argument("name")
@click.argument("version")
@with_appcontext
def models_activate(name: str, version: str) -> None:
    """Make VERSION the serving version of NAME."""
    from gateway import registry
    from gateway.db import write_transaction
    from gateway.errors import GatewayError

    try:
        with write_transaction():
            registry.activate_version(name, version)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"active: {name} {version}")


@models_group.command("suspend")
@click.argument("name")
@click.option("--reason", required=True)
@click.option("--incident", "incident_id", required=True, help="the incident (POST /v1/incidents) that asks for it")
@with_appcontext
def models_suspend(name: str, reason: str, incident_id: str) -> None:
    """Stop NAME making decisions at once (the kill switch), naming the incident."""
    from gateway import registry
    from gateway.db import write_transaction
    from gateway.errors import GatewayError

    try:
        with write_transaction():
            registry.suspend(name, reason, incident_id)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"suspended: {name}")


@main.command("report")
@click.option("--model", required=True, help="the model's name")
@click.option("--from", "start", required=True, type=click.DateTime(["%Y-%m-%d"]), help="first day (UTC)")
@click.option("--to", "end", required=True, type=click.DateTime(["%Y-%m-%d"]), help="last day (UTC), included")
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "html"]), default="json", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="write here instead of stdout")
@with_appcontext
def report_command(model: str, start: Any, end: Any, fmt: str, output: Path | None) -> None:
    """The oversight report of MODEL for a period (the same figures as GET /v1/reports/oversight)."""
    from gateway import oversight
    from gateway.errors import GatewayError

    try:
        data = oversight.report(model, start.date(), end.date())
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
    body = oversight.FORMATS[fmt][0](data)
    if output is not None:
        output.write_bytes(body)
    else:
        click.echo(body.decode(), nl=False)


@main.group("keys")
def keys_group() -> None:
    """Create, list and revoke API keys."""


@keys_group.command("create")
@click.option("--role", required=True, type=click.Choice(["agency", "reviewer", "auditor", "admin", "metrics"]))
@click.option("--name", required=True, help="unique name of the client")
@click.option("--body", default=None, help="the organisation the client acts for (default: the name)")
@click.option("--if-none", is_flag=True, help="do nothing when a client of this role already exists")
@click.option("--web", is_flag=True, help="also print a one-time sign-in link to the console (reviewer, auditor)")
@with_appcontext
def keys_create(role: str, name: str, body: str | None, if_none: bool, web: bool) -> None:
    """Create an API key; it is printed once and only its hash is stored.

    With --web (reviewers and auditors), also print a one-time sign-in link for the browser: it works once,
    for 15 minutes, and signs in as this client; the key itself never reaches the browser."""
    from sqlalchemy import select

    from gateway.auth import create_key
    from gateway.db import write_transaction
    from gateway.errors import GatewayError
    from gateway.extensions import db
    from gateway.models import ApiClient

    if if_none and db.session.execute(
        select(ApiClient.id).where(ApiClient.role == role, ApiClient.revoked_at.is_(None))
    ).first():
        click.echo(f"an active {role} key exists already; not creating another", err=True)
        return
    if web and role not in ("reviewer", "auditor"):
        raise click.BadParameter("sign-in links are for the roles reviewer and auditor", param_hint="--web")
    try:
        with write_transaction():
            client, key = create_key(name=name, role=role, body=body)
            link = _sign_in_link(client) if web else None
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(key)
    if link:
        click.echo(f"one-time sign-in link (works once, for 15 minutes): {link}")


def _sign_in_link(client: Any) -> str:
    from gateway import officials
    from gateway.settings import current_settings

    return current_settings().base_url + officials.sign_in_path(officials.issue_link(client))


@keys_group.command("sign-in-link")
@click.argument("name")
@with_appcontext
def keys_sign_in_link(name: str) -> None:
    """Print a new one-time sign-in link for the reviewer or auditor NAME (works once, for 15 minutes)."""
    from sqlalchemy import select

    from gateway.db import write_transaction
    from gateway.errors import GatewayError
    from gateway.extensions import db
    from gateway.models import ApiClient

    try:
        with write_transaction():
            client = db.session.execute(select(ApiClient).where(ApiClient.name == name)).scalar_one_or_none()
            if client is None:
                raise click.ClickException(f"no API client named {name!r}")
            link = _sign_in_link(client)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(link)


@keys_group.command("list")
@with_appcontext
def keys_list() -> None:
    """List API clients (never their keys)."""
    from sqlalchemy import select

    from gateway.extensions import db
    from gateway.models import ApiClient

    for c in db.session.execute(select(ApiClient).order_by(ApiClient.created_at)).scalars():
        state = "revoked" if c.revoked_at else "active"
        click.echo(f"{c.name}\t{c.role}\t{c.body}\t{c.key_prefix}…\t{state}")


@keys_group.command("revoke")
@click.argument("name")
@with_appcontext
def keys_revoke(name: str) -> None:
    """Revoke the key of client NAME at once."""
    from gateway.auth import revoke_key
    from gateway.db import write_transaction
    from gateway.errors import GatewayError

    try:
        with write_transaction():
            revoke_key(name)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"revoked: {name}")


@main.command("config-check")
@with_appcontext
def config_check() -> None:
    """Print where the database and instance folder are."""
    click.echo(f"instance: {current_app.instance_path}")
    click.echo(f"database: {current_app.config['SQLALCHEMY_DATABASE_URI']}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
