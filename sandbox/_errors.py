"""The sandbox's errors.

::

    SandboxError                 root of everything the sandbox raises on purpose
    ├── AdmissionError           a model or its inputs are refused before (or while) loading
    │   └── InputError           inputs do not match the model's graph
    ├── UntrustedJobRefused      no layer that blocks the network: untrusted jobs cannot run
    ├── SandboxConfigError       the sandbox configuration cannot work on this machine
    └── WorkerProtocolError      a worker sent something that is not a valid reply

A job that runs and fails is not an error: it is an :class:`~sandbox.Outcome` with a kind
other than ``ok``. Each message says what to do about it.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Root of every error the sandbox raises on purpose."""


class AdmissionError(SandboxError):
    """The model or its inputs are refused; the job's outcome is ``rejected``."""


class InputError(AdmissionError):
    """The inputs do not match the model's graph (names, dtypes, ranks, element counts)."""


class UntrustedJobRefused(SandboxError):
    """No available layer blocks the network, so untrusted jobs are refused."""


class SandboxConfigError(SandboxError):
    """The sandbox configuration cannot work on this machine."""


class WorkerProtocolError(SandboxError):
    """A worker process replied with something that is not a valid frame."""


class RunCancelled(SandboxError):
    """A run was cancelled (:class:`~sandbox.RunCancel`) before it had a worker."""
