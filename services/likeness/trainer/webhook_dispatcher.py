"""The webhook dispatcher of a trainer API replica: a thread that claims due deliveries from the outbox in the
control-plane database (`likeness.trainer.webhooks.WebhookOutbox`), POSTs each through the egress guard
(`likeness.net.egress`) with the Standard Webhooks signature headers, and records the attempt.

Any number of replicas run one each: a claim leases the rows it takes (for the send's time limit plus a margin),
so two replicas never send one delivery at the same time, and a replica that dies mid-send leaves a lease that
expires and makes the delivery due again (delivery is at least once; receivers drop repeats by `webhook-id`).
Sends run on a small pool of threads, so a slow receiver holds one of them for at most the time limit and
training never waits for any of it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import socket
import threading
import time
import uuid

from likeness.errors import Unavailable
from likeness.net import egress
from likeness.net.egress import EgressError, EgressPolicy, EgressRefused
from likeness.trainer import metrics
from likeness.trainer.signals import Wakeup
from likeness.trainer.webhooks import AttemptResult, ClaimedDelivery, WebhookOutbox
from likeness_client.webhooks import signed_headers

log = logging.getLogger("likeness.trainer.webhooks")

USER_AGENT = "Likeness-Webhooks/1"
#: A claim's lease lasts the send's time limit plus this margin.
LEASE_MARGIN_SECONDS = 30.0


class WebhookDispatcher:
    """Claims, sends and records webhook deliveries on a background thread (`start`, `wake`, `stop`)."""

    def __init__(
        self,
        outbox: WebhookOutbox,
        policy: EgressPolicy,
        *,
        timeout_seconds: float = 10.0,
        max_attempts: int = 5,
        backoff_seconds: float = 15.0,
        concurrency: int = 4,
        poll_seconds: float = 1.0,
    ) -> None:
        self.outbox = outbox
        self.policy = policy
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._wakeup = Wakeup()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook-send")
        self._thread = threading.Thread(target=self._run, name="webhook-dispatcher", daemon=True)
        self._thread.start()

    def wake(self, *_: object) -> None:
        """Look for due deliveries now (this process just wrote an event) instead of at the next poll."""
        self._wakeup.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops claiming; waits up to `timeout` for the sends in flight (their leases expire otherwise)."""
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            deadline = time.monotonic() + timeout
            while self._in_flight and time.monotonic() < deadline:
                time.sleep(0.05)

    def _run(self) -> None:
        assert self._pool is not None
        while not self._stopping.is_set():
            token = self._wakeup.token()
            with self._lock:
                free = self.concurrency - self._in_flight
            claimed: list[ClaimedDelivery] = []
            try:
                claimed = self.outbox.claim(self.owner, free, self.timeout_seconds + LEASE_MARGIN_SECONDS)
            except Unavailable as error:
                # The database is down: the monitor reports it; the deliveries wait for the next poll.
                log.debug("webhook deliveries not claimed: %s", error)
            except Exception:
                log.exception("claiming webhook deliveries failed")
            for delivery in claimed:
                with self._lock:
                    self._in_flight += 1
                self._pool.submit(self._send_and_record, delivery)
            self._wakeup.wait(self.poll_seconds, since=token)

    def _send_and_record(self, delivery: ClaimedDelivery) -> None:
        try:
            started = time.monotonic()
            result = self.attempt(delivery)
            metrics.WEBHOOK_SECONDS.observe(time.monotonic() - started)
            state = self.outbox.record(
                delivery,
                self.owner,
                result,
                max_attempts=self.max_attempts,
                backoff_seconds=self.backoff_seconds,
            )
            metrics.WEBHOOK_ATTEMPTS.labels(state.value.lower()).inc()
            extra = {
                "job_id": delivery.job_id,
                "delivery_id": delivery.delivery_id,
                "attempt": delivery.attempts + 1,
                "state": state.value,
                "http_status": result.http_status,
            }
            if result.delivered:
                log.debug("webhook delivered", extra=extra)
            else:
                log.warning("webhook attempt failed: %s", result.error, extra=extra)
        except Unavailable:
            log.warning("could not record a webhook attempt; it is retried when its lease expires")
        except Exception:
            log.exception("webhook delivery failed unexpectedly", extra={"delivery_id": delivery.delivery_id})
        finally:
            with self._lock:
                self._in_flight -= 1
            self._wakeup.set()

    def attempt(self, delivery: ClaimedDelivery) -> AttemptResult:
        """One signed POST of a delivery (a fresh `webhook-timestamp` each time); never raises."""
        body = delivery.body.encode()
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signed_headers(delivery.secret, delivery.delivery_id, body),
        }
        try:
            response = egress.post(self.policy, delivery.url, body, headers, timeout=self.timeout_seconds)
        except EgressRefused as error:
            return AttemptResult(False, error=f"the URL is refused: {error}", permanent=True)
        except EgressError as error:
            return AttemptResult(False, error=str(error))
        if 200 <= response.status < 300:
            return AttemptResult(True, http_status=response.status)
        detail = f"the receiver answered {response.status} {response.reason}".rstrip()
        if response.status in egress.REDIRECTS:
            detail += " (redirects are not followed; give the final URL)"
        return AttemptResult(False, http_status=response.status, error=detail)
