"""The running daemon: poll on a schedule, serve HTTP, reload on request, stop cleanly."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter.config import Config
from exporter.service import ExporterService
from exporter.web import WebApp, WebServer
from exporter.webconfig import BasicAuthChecker, build_ssl_context, load_web_config

log = logging.getLogger(__name__)


def _safe_poll(service: ExporterService) -> None:
    try:
        service.poll()
    except Exception:
        # A bug in one pass must not stop the schedule; the next pass starts afresh.
        log.exception("poll cycle crashed; the next one will run on schedule")


class Daemon:
    """The exporter service plus its schedule and HTTP server."""

    def __init__(
        self,
        config: Config,
        reload_config: Callable[[], Config] | None = None,
        enable_lifecycle: bool = False,
    ) -> None:
        web_config = load_web_config(config.web.config_file)
        ssl_context = build_ssl_context(web_config)  # before opening anything: may raise
        self.service = ExporterService(config, load_config=reload_config)
        self._reload_lock = threading.Lock()
        self._scheduler = BackgroundScheduler(timezone=UTC)
        app = WebApp(
            exposition=self.service.cache,
            is_ready=self.service.is_ready,
            health=self.service.health,
            reload=self.reload if enable_lifecycle else None,
            authenticator=BasicAuthChecker(web_config.basic_auth_users),
            headers=dict(web_config.headers),
            rate_limit=web_config.rate_limit,
        )
        try:
            self._server = WebServer(config.web.host, config.web.port, app, ssl_context)
        except OSError as exc:
            self.service.close()
            raise OSError(f"cannot listen on {config.web.listen_address}: {exc.strerror}") from None

    @property
    def url(self) -> str:
        """Return the base URL of the HTTP server."""
        return self._server.url

    def start(self) -> Daemon:
        """Start serving and polling; the first poll starts at once."""
        self._server.start()
        self._scheduler.add_job(
            _safe_poll,
            self._trigger(self.service.config),
            args=[self.service],
            id="poll",
            max_instances=1,  # polls never overlap
            coalesce=True,  # a slow cycle delays the next one instead of stacking
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )
        self._scheduler.start()
        log.info("listening on %s/metrics", self.url)
        return self

    @staticmethod
    def _trigger(config: Config) -> IntervalTrigger:
        return IntervalTrigger(seconds=config.poll.interval_seconds, timezone=UTC)

    def reload(self) -> str | None:
        """Reload the config; return the error if the new one is invalid."""
        with self._reload_lock:
            error = self.service.reload()
            if error is None and self._scheduler.running:
                self._scheduler.reschedule_job("poll", trigger=self._trigger(self.service.config))
        return error

    def stop(self) -> None:
        """Finish the running cycle's current image set, stop serving, close the store."""
        log.info("stopping")
        self.service.stop()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        self._server.stop()
        self.service.close()
        log.info("stopped")
