"""Named crash points of the transfer engine, settlement rounds and issuance, for fault tests
only.

Each durability point of a transfer or a round calls :func:`hit` with its name (see :data:`POINTS`).
Nothing happens unless a test asked for it:

* ``EAP_CRASH_AT=<name>[,<name>...]`` in a node process's environment makes that process
  exit at once with ``os._exit(137)`` (as if SIGKILLed: no cleanup, no flush, no rollback
  handler) when it reaches the point.  ``<name>@<n>`` crashes at the n-th time it is reached.
* ``EAP_HANG_AT=<name>=<marker file>`` makes the first process of a test that reaches the
  point (the one that creates ``<marker file>``, holding its pid) stop there for good, with its
  locks and leases held, for the test to SIGKILL it; processes reaching it later go on.  Used
  on replicas of one node, where only one of them must stop.
* :func:`arm` makes the *current* process raise :class:`SimulatedCrash` (a ``BaseException``,
  so no ``except Exception`` swallows it) at the point, once.  In-process tests use it to
  abandon a node object mid-flight and reopen its database, like a restart.
"""

from __future__ import annotations

import os
import threading

ENV = "EAP_CRASH_AT"
HANG_ENV = "EAP_HANG_AT"
EXIT_CODE = 137

#: The transfer engine's crash points, in the order a transfer reaches them.
TRANSFER_POINTS: tuple[str, ...] = (
    # source, inside the transaction that locks the range (rolled back: nothing happened)
    "source.in_prepare_txn",
    # source: range locked, transfer + PREPARE in the outbox, nothing sent yet
    "source.after_prepare_commit",
    # destination: inside the prepare transaction (rolled back)
    "dest.in_prepare_txn",
    # destination: import recorded PREPARED, answer not sent
    "dest.after_prepared_commit",
    # source: PREPARED answer received, not recorded
    "source.after_send_prepare",
    # source: decision (COMMITTED / ABORTED) durable, not announced
    "source.after_decision_commit",
    # destination: inside the commit transaction (rolled back)
    "dest.in_commit_txn",
    # destination: import COMMITTED (bundle ACTIVE), answer not sent
    "dest.after_commit_commit",
    # destination: import ABORTED, answer not sent
    "dest.after_abort_commit",
    # source: COMMIT / ABORT acknowledged by the destination, acknowledgement not recorded
    "source.after_send_commit",
    "source.after_send_abort",
    # destination: the source's answer to GetTransferStatus received, not applied
    "dest.after_status_reply",
    # issuer (third party's serials): inside the MoveCustody transaction (rolled back)
    "issuer.in_custody_txn",
    # issuer: custody moved and the signed record stored, answer not sent
    "issuer.after_custody_commit",
    # source: the issuer's custody answer received, not recorded
    "source.after_send_custody",
)

#: The crash points of a settlement round (docs/settlement.md "Failure cases"), in order.
SETTLEMENT_POINTS: tuple[str, ...] = (
    # coordinator: round recorded (gathering), no view asked yet
    "coordinator.after_round_created",
    # coordinator: views gathered, statement stored (signing), no signature asked yet
    "coordinator.after_views",
    # participant: statement signed and stored, signature not sent
    "participant.after_signed",
    # coordinator: every signature stored, decision durable, no final sent
    "coordinator.after_decision",
    # coordinator: a final acknowledged by a participant, acknowledgement not recorded
    "coordinator.after_final_sent",
    # participant: final stored, obligations settled, sides queued; ack not sent
    "participant.after_finalized",
    # executor: the backend executed a side, its receipt not recorded
    "executor.after_backend_call",
)

#: The crash points of issuance (``eap-node issue``: one transaction per signed batch).
ISSUANCE_POINTS: tuple[str, ...] = (
    # inside a batch's transaction: bundles and batch written, not committed (rolled back)
    "issue.in_batch_txn",
    # a batch committed, the next not started
    "issue.after_batch_commit",
)

#: Every crash point.
POINTS: tuple[str, ...] = TRANSFER_POINTS + SETTLEMENT_POINTS + ISSUANCE_POINTS


class SimulatedCrash(BaseException):
    """Raised at an :func:`arm`-ed crash point (in-process fault tests)."""

    def __init__(self, point: str) -> None:
        super().__init__(f"simulated crash at {point}")
        self.point = point


_lock = threading.Lock()
_armed: set[str] = set()
_counts: dict[str, int] = {}


def arm(point: str) -> None:
    """Make the next :func:`hit` of ``point`` in this process raise :class:`SimulatedCrash`."""
    if point not in POINTS:
        raise ValueError(f"unknown crash point {point!r}; one of {', '.join(POINTS)}")
    with _lock:
        _armed.add(point)


def disarm() -> None:
    """Forget every armed point (test teardown)."""
    with _lock:
        _armed.clear()


def hit(point: str) -> None:
    """Reached a durability point: crash here if a test asked for it (see module docstring)."""
    if _armed:
        with _lock:
            fire = point in _armed
            _armed.discard(point)
        if fire:
            raise SimulatedCrash(point)
    hang = os.environ.get(HANG_ENV)
    if hang:
        _maybe_hang(point, hang)
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    for spec in wanted.split(","):
        name, _, nth = spec.strip().partition("@")
        if name != point:
            continue
        with _lock:
            _counts[point] = _counts.get(point, 0) + 1
            reached = _counts[point]
        if not nth or reached == int(nth):
            os._exit(EXIT_CODE)


def _maybe_hang(point: str, spec: str) -> None:
    name, _, marker = spec.partition("=")
    if name != point or not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:  # another process stopped here already
        return
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    threading.Event().wait()  # until SIGKILLed
