"""The runtime: owns every thread of the running exporter; start, signals, reload and stop.

Threads, and who owns them (nothing else in the exporter starts a thread):

- main thread: runs `Daemon.run`, waits for signals and acts on them; returns after `stop()`.
- APScheduler's scheduler thread: started by `Daemon.start` (`BackgroundScheduler`), ended and
  joined by `scheduler.shutdown(wait=True)` in `stop()`.
- `job_N` (at most JOB_WORKERS): the scheduler's executor, running the poll cycle, backfill
  pages, the event consumer (`events:`; long polls of the SQS queue, exporter/events.py),
  reloads and `extra_jobs` (the demo's activity); joined by the same shutdown.
- `poll_N`, `backfill_N` (at most `poll.concurrency` each), `event_N` (at most 4): the
  `ListingPool`s of the service's poller, which make the AWS calls of cycles, backfill pages
  and event-triggered listings; joined by `service.close()` in `stop()`.
- `web_N`, one per listen address: the web server's accept threads, and their request
  handlers (exporter/web.py): started by `WebServer.start`, ended and joined by
  `WebServer.stop` in `stop()` (a handler still answering a request then finishes it on its
  own: web.py marks them daemon threads). A scrape collects the process's own metrics
  (`process_*`, `python_*`) on its handler thread: reading /proc starts no thread.
- `healthimaging-exporter demo` only: the emulator's server threads, started and stopped by the
  `with EmulatorServer(...)` block in demo.py around `Daemon.run`; the demo's activity is a job.

Signals: the handlers only let the main thread know (through `signal.set_wakeup_fd` and a
socket pair: no locks, no I/O in the handler); the main thread reads the signal numbers and acts:
SIGTERM/SIGINT stop, SIGHUP schedules a reload job. A second signal while stopping is ignored.

Shutdown order (`stop`), each step bounded:
1. ask the poller to stop: a running cycle or backfill page stops at its next image set (results
   already applied stay committed), and no new AWS attempt is sent;
2. shut the scheduler down and join its job threads (they notice the stop within 0.25 s, or
   when the search call they are making ends: at most the read timeout; the event job sends no
   receive after the stop and its long poll in flight ends within `events.wait_seconds`
   (at most 20 s), its listings at the next image set like a cycle's);
3. stop the web server;
4. close the service: join the listing threads, which wait for calls already in flight (at most
   `aws.read_timeout_seconds` / `connect_timeout_seconds`), then close the state file.
"""

from __future__ import annotations

import contextlib
import logging
import select
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor as JobExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter.config import Config
from exporter.service import ExporterService
from exporter.web import ListenError, WebApp, WebServer
from exporter.webconfig import BasicAuthChecker, build_ssl_context, load_web_config

log = logging.getLogger(__name__)

# Poll, backfill, events, two reloads and one extra job (the demo's) at once; nothing else is.
JOB_WORKERS = 6
BACKFILL_EVERY_SECONDS = 1.0
# The event job runs slices of long polls back to back; when events are off it returns at once.
EVENTS_EVERY_SECONDS = 0.5
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# A periodic job beside the exporter's own (the demo's activity): (name, function, seconds).
ExtraJob = tuple[str, Callable[[], None], float]


def _guarded(
    name: str, job: Callable[[], object], crashed: Callable[[str], None]
) -> Callable[[], None]:
    def run() -> None:
        try:
            job()
        except Exception as exc:
            # A bug in one run must not stop the schedule; the next run starts afresh.
            crashed(name)
            what = f"{type(exc).__name__}: {exc}"
            log.error("%s crashed: %s; it runs again on schedule", name, what)
            log.debug("%s crashed", name, exc_info=exc)

    return run


class Daemon:
    """The exporter service plus its schedule, HTTP server and signal handling."""

    def __init__(
        self,
        config: Config,
        reload_config: Callable[[], Config] | None = None,
        enable_lifecycle: bool = False,
        extra_jobs: Sequence[ExtraJob] = (),
    ) -> None:
        web_config = load_web_config(config.web.config_file)
        ssl_context = build_ssl_context(web_config)  # before opening anything: may raise
        self.service = ExporterService(config, load_config=reload_config)
        self._reload_lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._schedule_lock = threading.Lock()  # see _change_schedule
        self._stopped = False
        self._extra_jobs = tuple(extra_jobs)
        # Set by a reload: the poll job runs one more cycle before it returns (plain flags, read
        # and written whole: a cycle is never started twice at once, the job has max_instances 1).
        self._poll_again = False
        self._polling = False
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={
                "default": JobExecutor(JOB_WORKERS, pool_kwargs={"thread_name_prefix": "job"})
            },
        )
        app = WebApp(
            exposition=self.service.cache,
            is_ready=self.service.is_ready,
            health=self.service.health,
            reload=self.reload if enable_lifecycle else None,
            authenticator=BasicAuthChecker(web_config.basic_auth_users),
            headers=dict(web_config.headers),
            rate_limit=web_config.rate_limit,
            telemetry_path=config.web.telemetry_path,
            crashed=self._count_crash,
        )
        addresses = config.web.listen_addresses
        try:
            self._server = WebServer(
                [(address.host, address.port) for address in addresses], app, ssl_context
            )
        except ListenError as exc:
            self.service.close()
            raise OSError(f"cannot listen on {addresses[exc.index]}: {exc.strerror}") from None

    @property
    def url(self) -> str:
        """Return the base URL of the HTTP server (its first listen address)."""
        return self._server.url

    @property
    def urls(self) -> tuple[str, ...]:
        """Return the base URL of every listen address, in the order configured."""
        return self._server.urls

    def _count_crash(self, job: str) -> None:
        self.service.metrics.job_crashes.labels(job).inc()

    def start(self) -> Daemon:
        """Start serving and polling; the first poll starts at once."""
        self._server.start()
        self._scheduler.add_job(
            self._paused_while_running(
                "poll", _guarded("poll cycle", self._poll, self._count_crash)
            ),
            self._trigger(self.service.config),
            id="poll",
            name="poll cycle",
            max_instances=1,  # polls never overlap
            coalesce=True,  # a slow cycle delays the next one instead of stacking
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )
        self._scheduler.add_job(
            # Backfill pages, resumed from the saved token: a few seconds' worth per run.
            self._paused_while_running(
                "backfill", _guarded("backfill", self.service.run_backfills, self._count_crash)
            ),
            IntervalTrigger(seconds=BACKFILL_EVERY_SECONDS, timezone=UTC),
            id="backfill",
            name="backfill pages",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        self._scheduler.add_job(
            # Long polls of the event queue, a slice at a time (a no-op without `events:`).
            self._paused_while_running(
                "events", _guarded("event consumer", self.service.consume_events, self._count_crash)
            ),
            IntervalTrigger(seconds=EVENTS_EVERY_SECONDS, timezone=UTC),
            id="events",
            name="event consumer",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )
        self._scheduler.add_job(
            # Run on demand (SIGHUP) by moving its next run time to now. A permanent job, not a
            # one-off: APScheduler 3 may fail to remove a fired one-off job when a shutdown
            # starts at the same moment (JobLookupError in its scheduler thread).
            _guarded("reload", self.reload, self._count_crash),
            IntervalTrigger(days=365 * 100, timezone=UTC),
            id="reload",
            name="reload",
            next_run_time=None,  # added paused
            max_instances=2,  # a SIGHUP during a reload reloads again (they take turns)
            coalesce=True,
            misfire_grace_time=None,
        )
        for name, job, seconds in self._extra_jobs:
            self._scheduler.add_job(
                self._paused_while_running(name, _guarded(name, job, self._count_crash)),
                IntervalTrigger(seconds=seconds, timezone=UTC),
                id=name,
                name=name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        self._scheduler.start()
        path = self.service.config.web.telemetry_path
        log.info("listening on %s", ", ".join(url + path for url in self.urls))
        return self

    def _paused_while_running(self, job_id: str, run: Callable[[], None]) -> Callable[[], None]:
        """Pause a periodic job while it runs: its fire times meanwhile are skipped quietly.

        (APScheduler would log a warning for each fire time that finds it still running; a
        backfill slice or a long cycle is normal, not news.) Resuming takes the next fire time.
        """

        def paused() -> None:
            self._change_schedule(lambda: self._scheduler.pause_job(job_id))
            try:
                run()
            finally:
                self._change_schedule(lambda: self._scheduler.resume_job(job_id))

        return paused

    def _change_schedule(self, change: Callable[[], object]) -> None:
        """Change the schedule, unless the daemon is stopping.

        APScheduler's shutdown holds its job store lock while it waits for running jobs, so a
        job that changed the schedule during it would deadlock the stop: `stop` marks the daemon
        stopped under the same lock before it shuts the scheduler down.
        """
        with self._schedule_lock:
            if self._stopped or not self._scheduler.running:
                return
            with contextlib.suppress(JobLookupError):  # a job removed meanwhile
                change()

    def _poll(self) -> None:
        self._polling = True
        try:
            self._poll_again = True
            while self._poll_again and not self._stopped:
                self._poll_again = False
                self.service.poll()
        finally:
            self._polling = False

    @staticmethod
    def _trigger(config: Config) -> IntervalTrigger:
        return IntervalTrigger(seconds=config.poll.interval_seconds, timezone=UTC)

    def reload(self) -> str | None:
        """Reload the config; return the error if the new one is invalid.

        After a successful reload a cycle runs at once, so image sets it added are polled now.
        """
        with self._reload_lock:
            error = self.service.reload()
            if error is None:
                # A cycle in progress runs another one right after; otherwise one starts now.
                self._poll_again = True
                trigger = self._trigger(self.service.config)

                def reschedule() -> None:
                    if self._polling:
                        # Paused while it runs; resuming takes the new trigger's next time.
                        self._scheduler.modify_job("poll", trigger=trigger)
                    else:
                        self._scheduler.reschedule_job("poll", trigger=trigger)
                        self._scheduler.modify_job("poll", next_run_time=datetime.now(UTC))

                self._change_schedule(reschedule)
        return error

    def schedule_reload(self) -> None:
        """Reload on a job thread (SIGHUP): the main thread stays free to act on signals."""
        self._change_schedule(
            lambda: self._scheduler.modify_job("reload", next_run_time=datetime.now(UTC))
        )

    def stop(self) -> None:
        """Stop in the order the module docstring gives; safe to call twice."""
        with self._stop_lock:
            if self._stopped:
                return
            with self._schedule_lock:
                self._stopped = True
            log.info("stopping")
            self.service.stop()
            if self._scheduler.running:
                self._scheduler.shutdown(wait=True)
            self._server.stop()
            self.service.close()
            log.info("stopped")

    def run(
        self, on_started: Callable[[Daemon], None] | None = None, restore_signals: bool = True
    ) -> None:
        """Start, serve until SIGTERM or SIGINT (reloading on SIGHUP), then stop.

        On the main thread only: signal handlers can only be installed there. With
        `restore_signals` false (a process about to exit), signals arriving after the stop stay
        ignored instead of killing the process or raising KeyboardInterrupt.
        """
        with _SignalInbox(restore_signals) as inbox:
            # Before start() logs "listening on": from then on a SIGHUP or SIGTERM must find
            # its handler, not the default action that kills the process.
            try:
                self.start()
                if on_started is not None:
                    on_started(self)
                while True:
                    received = inbox.wait(1.0)
                    if any(s in STOP_SIGNALS for s in received):
                        break
                    if signal.SIGHUP in received:
                        self.schedule_reload()
            finally:
                self.stop()


class _SignalInbox:
    """Records SIGTERM, SIGINT and SIGHUP; the main thread reads them with `wait`."""

    SIGNALS = (*STOP_SIGNALS, signal.SIGHUP)

    def __init__(self, restore: bool) -> None:
        self._restore = restore

    def __enter__(self) -> _SignalInbox:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        # The C-level handler writes the signal number to the socket; the Python-level handler
        # below does nothing at all, so a signal landing anywhere cannot deadlock anything.
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous: dict[int, Any] = {}
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, _record_only)
        return self

    def wait(self, timeout: float) -> set[int]:
        """Return the signals that arrived, waiting up to `timeout` seconds for one."""
        readable, _, _ = select.select([self._reader], [], [], timeout)
        if not readable:
            return set()
        try:
            data = self._reader.recv(4096)
        except BlockingIOError:
            return set()
        return set(data)

    def __exit__(self, *exc: object) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        if self._restore:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
        self._reader.close()
        self._writer.close()


def _record_only(signum: int, frame: FrameType | None) -> None:
    """Python-level handler: the wakeup fd already carries the signal to the main thread."""
