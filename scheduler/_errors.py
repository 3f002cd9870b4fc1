"""The scheduler's errors.

::

    SchedulerError             root of everything scheduler/ raises on purpose
    ├── JobRejected            a job spec we were asked to submit cannot run as given
    ├── UnknownJob             an event names a job this machine does not hold
    └── SealError              encrypted job data could not be opened
        ├── DecryptionFailed   the ciphertext is not for our key, or was altered
        └── ContentMismatch    the plaintext does not match the content hash it must have

A peer's bad message never raises: the machines turn it into a ``Misbehaved`` effect. These
errors are for the driver's own mistakes and for data the driver must refuse; each message
says what to do about it.
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Root of every error :mod:`scheduler` raises on purpose."""


class JobRejected(SchedulerError):
    """The job spec cannot be submitted as it is (the message says which field to fix)."""


class UnknownJob(SchedulerError):
    """An event names a job that this state machine does not hold."""


class SealError(SchedulerError):
    """Encrypted job data could not be opened."""


class DecryptionFailed(SealError):
    """The sealed box was not made for our key, or it was altered in transit."""


class ContentMismatch(SealError):
    """The opened bytes do not hash to the content id they were announced with."""
