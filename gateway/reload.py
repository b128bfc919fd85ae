"""Hot reload of the config (backends, prices, policies): file watcher, SIGHUP, admin endpoint.

A reload re-reads and re-validates every config file; a valid result becomes a new config
snapshot (``gateway.snapshot``: prices resolved, derived settings built) that is swapped in with
one assignment. Requests in flight keep the snapshot they started with; an invalid config is
rejected with every problem logged and the running config stays in force. Store and Redis URLs
are read at start-up only: a change to them is reported and needs a restart.

With Redis, a reload reaches every replica: the replica that reloads (admin API, SIGHUP or its
file watcher) publishes the digest of the config files it loaded (``SharedState.config_publish``),
and each replica's watcher polls that digest every ``interval_s`` and, when it differs from the
digest of what it runs, reloads its own config file (the replicas share the config path). A
replica reloading because of a peer does not publish in turn, so replicas whose files differ
cannot bounce reloads between them; an invalid file is rejected there as here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError, ConfigIssue, config_files, load_config
from gateway.runtime import Runtime

log = logging.getLogger("tollgate.reload")


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    changed: bool
    version: str | None
    issues: tuple[ConfigIssue, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "policy_version": self.version,
            "errors": [str(i) for i in self.issues],
        }


def policy_version(config: Config) -> str | None:
    ps = config.policy_set
    return ps.version if ps is not None else None


class Reloader:
    def __init__(self, runtime: Runtime, interval_s: float = 1.0) -> None:
        self.rt = runtime
        self.interval_s = interval_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stamps: dict[Path, float] = {}
        self.digest: str | None = None  # of the config files this replica runs
        self._seen: str | None = None  # the last digest a replica published, as seen here

    @property
    def _shared(self) -> bool:
        return self.rt.settings.redis_url is not None and self.path is not None

    def _digest(self) -> str | None:
        """sha256 of the config files' bytes (None: one could not be read)."""
        if self.path is None:
            return None
        h = hashlib.sha256()
        try:
            for p in config_files(self.path, self.rt.config):
                h.update(str(p).encode() + b"\0" + p.read_bytes() + b"\0")
        except OSError:
            return None
        return h.hexdigest()

    async def _publish(self) -> None:
        if not self._shared or self.digest is None:
            return
        try:
            await self.rt.state.config_publish(self.digest)
            self._seen = self.digest
        except Exception as exc:  # a Redis blip: this replica's reload stands all the same
            log.warning("could not tell the other replicas about this reload: %s", exc)

    async def _follow_peers(self) -> None:
        """Reload when another replica published a config digest unlike this one's."""
        try:
            published = await self.rt.state.config_published()
        except Exception:
            return  # Redis unreachable: each replica keeps its own config meanwhile
        if published is None or published == self._seen:
            return
        self._seen = published
        if published != self.digest:
            await self.reload("another replica reloaded", publish=False)

    @property
    def path(self) -> str | None:
        return self.rt.settings.config_path

    def _file_stamps(self) -> dict[Path, float]:
        if self.path is None:
            return {}
        stamps = {}
        for p in config_files(self.path, self.rt.config):
            with contextlib.suppress(OSError):
                stamps[p] = p.stat().st_mtime
        return stamps

    async def reload(self, reason: str, *, publish: bool = True) -> ReloadResult:
        result = await self._reload(reason)
        if result.ok and publish:
            await self._publish()
        return result

    async def _reload(self, reason: str) -> ReloadResult:
        async with self._lock:
            if self.path is None:
                return ReloadResult(
                    False,
                    False,
                    policy_version(self.rt.config),
                    (
                        ConfigIssue(
                            "<none>",
                            "",
                            None,
                            "the gateway was started without a config file; nothing to reload",
                        ),
                    ),
                )
            try:
                new = await asyncio.to_thread(load_config, self.path)
            except ConfigError as exc:
                self._stamps = self._file_stamps()  # report a broken file once, not every second
                for issue in exc.issues:
                    log.error("config reload (%s) rejected: %s", reason, issue)
                log.error(
                    "the running config (policy version %s) stays in force",
                    policy_version(self.rt.config),
                )
                return ReloadResult(False, False, policy_version(self.rt.config), tuple(exc.issues))
            old = self.rt.config
            self._stamps = self._file_stamps()
            self.digest = await asyncio.to_thread(self._digest)
            if new == old:
                log.info("config reload (%s): unchanged", reason)
                return ReloadResult(True, False, policy_version(old))
            for section in ("store", "redis", "server"):
                if getattr(new, section) != getattr(old, section):
                    log.warning("config reload: changes to %r take effect after a restart", section)
            self.rt.install(self.rt.snapshot_for(new))
            log.info(
                "config reloaded (%s): policy version %s -> %s",
                reason,
                policy_version(old),
                policy_version(new),
            )
            return ReloadResult(True, True, policy_version(new))

    async def _watch(self) -> None:
        self._stamps = self._file_stamps()
        self.digest = await asyncio.to_thread(self._digest)
        if self._shared:
            with contextlib.suppress(Exception):  # what was published before this one started
                self._seen = await self.rt.state.config_published()
        while True:
            await asyncio.sleep(self.interval_s)
            if self._shared:
                try:
                    await self._follow_peers()
                except Exception:
                    log.exception("config reload from a peer failed; the running config stays")
            if self._file_stamps() != self._stamps:
                try:
                    await self.reload("file changed")
                except Exception:  # the watcher must outlive any one bad edit
                    log.exception("config reload failed; the running config stays in force")
                    self._stamps = self._file_stamps()

    def start(self) -> None:
        if self.path is not None:
            self._task = asyncio.create_task(self._watch(), name="tollgate-config-watch")
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            # only possible in the main thread (uvicorn); test clients run elsewhere
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: asyncio.ensure_future(self.reload("SIGHUP"))
            )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
