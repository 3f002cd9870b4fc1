"""The worker process: ``python -I -m sandbox._worker``, talking frames on stdin/stdout.

Order of events (specs/sandbox.md, "Worker"):
1. parent-death signal; read the setup frame; resource limits;
2. import the runtime (onnxruntime or torch) and numpy;
3. Landlock, then seccomp;
4. report ``ready`` with the layers applied, then serve ``load``/``run``/``python`` requests.

Everything after step 3 runs confined. Nothing here trusts the model or the inputs.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import os
import resource
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from . import _ipc, _procfs

if TYPE_CHECKING:  # _binding imports numpy, which the worker imports after its rlimits
    from ._binding import Binding, LayoutKey, OutputSpecs

_PR_SET_PDEATHSIG = 1
MAX_REQUEST = 2**31 - 1


class JobFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


_RLIMITS = {
    "as": resource.RLIMIT_AS,
    "cpu": resource.RLIMIT_CPU,
    "fsize": resource.RLIMIT_FSIZE,
    "nofile": resource.RLIMIT_NOFILE,
    "core": resource.RLIMIT_CORE,
    "nproc": resource.RLIMIT_NPROC,
}


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _classify(exc: BaseException) -> JobFailed:
    if isinstance(exc, JobFailed):
        return exc
    if isinstance(exc, MemoryError):
        return JobFailed("memory_limit", "the job ran out of its memory limit")
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return JobFailed("output_limit", "the job wrote more than its file size limit")
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return JobFailed("memory_limit", f"the job ran out of its memory limit ({exc})")
    text = f"{type(exc).__name__}: {exc}"
    low = text.lower()
    if "bad_alloc" in low or "failed to allocate" in low or "out of memory" in low:
        return JobFailed("memory_limit", f"the job ran out of its memory limit ({text[:300]})")
    return JobFailed("runtime_error", text[:1000])


class _Worker:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.setup: dict[str, Any] = {}
        self.session: Any = None
        self.out_names: list[str] = []
        self.torch_module: Any = None
        self.runtime = ""
        self.det_class = ""
        self.device = "cpu"
        self.clear_refs: int | None = None
        self.status_fd: int | None = None
        self.region: Any = None
        # IOBinding of warm ONNX jobs (sandbox/_binding.py): the current binding, the last
        # plain run's input layout and outputs, and whether binding is still tried.
        self.binding: Binding | None = None
        self.last_layout: tuple[LayoutKey, OutputSpecs] | None = None
        self.may_bind = True
        self.told_ran = False  # this request's RAN frame is sent
        self.inputs_ready = False  # this request's GO frame is read

    # --- start-up ----------------------------------------------------------------------

    def start(self) -> None:
        setup = _ipc.recv(self.rfd, max_bytes=1 << 20)
        self.setup = setup
        self.runtime = setup["runtime"]
        if setup.get("cpus"):
            # First: the runtime's thread pools, started at import, inherit it.
            os.sched_setaffinity(0, setup["cpus"])
        drop = setup.get("drop")
        if drop and not setup.get("drop_late"):
            _drop_privileges(int(drop[0]), int(drop[1]))
        os.chdir(setup["job_dir"])
        from ._shm import WorkerRegion

        self.region = WorkerRegion(int(setup["shm"][0]), int(setup["shm"][1]))
        for name, (soft, hard) in setup["rlimits"].items():
            resource.setrlimit(_RLIMITS[name], (soft, hard))
        import numpy  # noqa: F401

        if self.runtime == "onnx":
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401

            from . import _admission, _binding, _onnx_session  # noqa: F401
        elif self.runtime == "torchscript":
            import torch  # noqa: F401
        if drop and setup.get("drop_late"):
            _preimport(self.runtime)
            _drop_privileges(int(drop[0]), int(drop[1]))
            os.chdir(setup["job_dir"])
        try:
            self.clear_refs = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            self.clear_refs = None
        try:
            self.status_fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.status_fd = None
        # Not dumpable: another process of this user (a neighbour's job) can no longer
        # open our /proc/<pid>/mem, environ, fds or oom_score_adj, which seccomp does not
        # filter (a job rewrote a same-uid process's memory: review round 80, F2). The
        # files opened above stay ours.
        _procfs.set_undumpable()
        layers: dict[str, str] = {}
        threads = _thread_count()
        if setup.get("landlock"):
            from . import _landlock

            if threads > 1:
                # Landlock confines the calling thread and those it starts: threads started
                # before it (a library's pool at import) would be left out (round 80, F1)
                layers["landlock"] = f"failed: {threads} threads started before it"
            else:
                try:
                    layers["landlock"] = "ok: " + _landlock.restrict_self(
                        setup["ro_paths"], setup["rw_paths"]
                    )
                except OSError as exc:
                    layers["landlock"] = f"failed: {exc}"
        if setup.get("seccomp"):
            from . import _seccomp

            try:
                layers["seccomp"] = "ok: " + _seccomp.install()
            except Exception as exc:
                layers["seccomp"] = f"failed: {exc}"
        layers["uid"] = f"ok: uid {os.getuid()} gid {os.getgid()}"
        _ipc.send(self.wfd, {"op": "ready", "layers": layers})

    # --- requests ----------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            try:
                req = _ipc.recv(self.rfd, max_bytes=MAX_REQUEST, exact=True)
            except _ipc.WorkerGone:
                return
            op = req.get("op")
            if op == "exit":
                return
            self.told_ran = False
            self.inputs_ready = False
            started = time.perf_counter()
            cpu0 = _cpu_seconds()
            self._reset_peak()
            try:
                self._set_cpu_budget(cpu0, req.get("cpu_s"), req.get("cpu_hard"))
                if op == "load":
                    reply = self._load(req)
                elif op == "run":
                    reply = self._run(req)
                elif op == "python":
                    reply = self._python(req)
                else:
                    reply = {"op": "error", "kind": "runtime_error", "message": f"bad op {op!r}"}
            except BaseException as exc:  # the job's failure, reported, never fatal here
                failed = _classify(exc)
                reply = {"op": "error", "kind": failed.kind, "message": failed.message}
            reply["usage"] = {
                "cpu_ms": int((_cpu_seconds() - cpu0) * 1000),
                "wall_ms": int((time.perf_counter() - started) * 1000),
                "peak_kb": self._peak_kb(),
                "gpu_ms": int((time.perf_counter() - started) * 1000)
                if self.device != "cpu"
                else 0,
            }
            try:
                _ipc.send(self.wfd, reply)
            except OSError:
                return

    def _set_cpu_budget(self, used_s: float, cpu_s: int | None, cpu_hard: int | None) -> None:
        """Soft CPU limit: ``used_s`` (CPU seconds so far) + ``cpu_s`` + 1 (rounding).
        ``cpu_hard`` set: lower the hard limit to ``used_s`` + ``cpu_hard`` (never raised).

        The limit is in whole seconds, so most warm jobs find it already right and no
        ``setrlimit`` is made (it is read each time: a job may have changed it)."""
        if cpu_s is None:
            return
        current = resource.getrlimit(resource.RLIMIT_CPU)
        hard = current[1]
        used = int(used_s)
        if cpu_hard is not None:
            lowered = used + int(cpu_hard)
            if hard == resource.RLIM_INFINITY or lowered < hard:
                hard = lowered
        want = used + int(cpu_s) + 1
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
        if (want, hard) != current:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_CPU, (want, hard))

    def _reset_peak(self) -> None:
        if self.clear_refs is not None:
            with contextlib.suppress(OSError):
                os.write(self.clear_refs, b"5")

    def _peak_kb(self) -> int:
        if self.status_fd is not None:
            try:
                status = os.pread(self.status_fd, 1 << 13, 0)
                at = status.index(b"VmHWM:")
                return int(status[at + 6 : status.index(b"\n", at)].split()[0])
            except (OSError, ValueError, IndexError):
                pass
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

    def _load(self, req: dict[str, Any]) -> dict[str, Any]:
        from ._determinism import determinism_class

        model: bytes = req["model"]
        threads = int(req["threads"])
        if self.runtime == "onnx":
            from ._admission import AdmissionLimits, check_model
            from ._errors import AdmissionError
            from ._onnx_session import open_session, session_device

            try:
                check_model(model, AdmissionLimits(**req["admission"]))
            except AdmissionError as exc:
                raise JobFailed("rejected", str(exc)) from None
            self.session = open_session(
                model, opt_level=req["opt_level"], threads=threads, provider=req["provider"]
            )
            self.out_names = [o.name for o in self.session.get_outputs()]
            self.device = session_device(self.session)
            self.det_class = determinism_class("onnx", self.device, req["opt_level"])
        elif self.runtime == "torchscript":
            import torch

            torch.set_num_threads(threads)
            with contextlib.suppress(RuntimeError):
                torch.set_num_interop_threads(1)
            want_cuda = req["provider"] == "CUDAExecutionProvider" and torch.cuda.is_available()
            self.device = "cuda" if want_cuda else "cpu"
            try:
                module = torch.jit.load(  # type: ignore[no-untyped-call]
                    io.BytesIO(model), map_location=self.device
                )
                module.eval()
            except RuntimeError as jit_error:
                # Not TorchScript: a torch.export program (.pt2), also code, also only here.
                try:
                    module = torch.export.load(io.BytesIO(model)).module().to(self.device)
                except Exception:
                    raise jit_error from None
            self.torch_module = module
            self.det_class = determinism_class("torchscript", self.device, req["opt_level"])
        else:
            raise JobFailed("rejected", f"unknown runtime {self.runtime!r}")
        return {"op": "loaded", "class": self.det_class, "device": self.device}

    def _run(self, req: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from . import _binding

        names: list[str] = req["names"]
        size = int(req["shm_size"])
        if size != self.region.size:
            self.binding = None  # its addresses are into the map being replaced
            self.region.remap(size)
        max_out = int(req["max_output_bytes"])
        key: LayoutKey | None = None
        if self.runtime == "onnx" and self.session is not None:
            try:
                key = _binding.layout_key(names, req["inputs"])
            except (TypeError, ValueError, IndexError, KeyError):
                key = None  # malformed: the plain path below reports it
            bound = self._bound(key, max_out)
            if bound is not None:
                bound.arm()
                self._await_inputs()
                began = time.perf_counter()
                try:
                    self.session.run_with_iobinding(bound.io)
                    runtime_us = int((time.perf_counter() - began) * 1e6)
                    self._ran()
                    in_place = bound.in_place()
                except RuntimeError:  # shapes that depend on the data
                    in_place = False
                if not in_place:  # run it the plain way, and no more binding
                    self.binding = None
                    self.may_bind = False
                else:
                    return {
                        "op": "result",
                        "outputs": bound.wire,
                        "class": self.det_class,
                        "runtime_us": runtime_us,
                    }
        arrays = self.region.inputs(req["inputs"])
        outputs: dict[str, Any] = {}
        if self.runtime == "onnx":
            if self.session is None:
                raise JobFailed("runtime_error", "no model loaded")
            out_names = self.out_names
            feed = dict(zip(names, arrays, strict=True))
            self._await_inputs()
            began = time.perf_counter()
            values = self.session.run(out_names, feed)
            runtime_us = int((time.perf_counter() - began) * 1e6)
            self._ran()
            outputs = {n: np.asarray(v) for n, v in zip(out_names, values, strict=True)}
        else:
            import torch

            if self.torch_module is None:
                raise JobFailed("runtime_error", "no model loaded")
            self._await_inputs()
            # Seeded at each run: a program drawing random numbers then draws the same in
            # every run of its class (unseeded, one drawing a random bit had honest
            # providers outvoted and slashed: review round 76, R76-1).
            torch.manual_seed(0)
            with torch.inference_mode():
                args = [torch.from_numpy(a.copy()).to(self.device) for a in arrays]
                began = time.perf_counter()
                result = self.torch_module(*args)
                runtime_us = int((time.perf_counter() - began) * 1e6)
            self._ran()
            outputs = _torch_outputs(result)
        total = 0
        for name in sorted(outputs):
            array = outputs[name]
            if not isinstance(array, np.ndarray):
                raise JobFailed("runtime_error", f"output {name!r} is not a tensor")
            total += array.nbytes
            if total > max_out:
                raise JobFailed("output_limit", f"outputs exceed the limit of {max_out} bytes")
            if any(np.may_share_memory(array, a) for a in arrays):
                outputs[name] = array.copy()  # the outputs overwrite the inputs' bytes
        del arrays
        try:
            wire = self.region.write_outputs(outputs)
        except OverflowError as exc:
            raise JobFailed("output_limit", str(exc)) from None
        except ValueError as exc:
            raise JobFailed("runtime_error", f"an output: {exc}") from None
        if key is not None:
            self.last_layout = (key, _binding.output_specs(outputs))
        return {"op": "result", "outputs": wire, "class": self.det_class, "runtime_us": runtime_us}

    def _await_inputs(self) -> None:
        """Wait (once per request) for the daemon's :data:`_ipc.GO`: the run's inputs are
        in place. Until then the daemon copies them, and this worker prepares the run."""
        if not self.inputs_ready:
            self.inputs_ready = True
            _ipc.await_go(self.rfd)

    def _ran(self) -> None:
        """Send the daemon :data:`_ipc.RAN` (once per request): it wakes while this
        worker checks and measures the job, so it is awake when the reply comes."""
        if not self.told_ran:
            self.told_ran = True
            with contextlib.suppress(OSError):
                os.write(self.wfd, _ipc.RAN)

    def _bound(self, key: LayoutKey | None, max_out: int) -> Binding | None:
        """The binding for input layout ``key``: kept from the last job, or made from the
        last plain run of the same layout; None to run the plain way (sandbox/_binding.py)."""
        from . import _binding

        if key is None or not self.may_bind or self.device != "cpu":
            return None  # a GPU session keeps the plain path (its copies are onnxruntime's)
        if self.binding is not None and self.binding.key == key:
            return self.binding
        self.binding = None
        if self.last_layout is None or self.last_layout[0] != key:
            return None
        try:
            self.binding = _binding.bind(
                self.session, self.region, key, self.last_layout[1], max_out
            )
        except Exception:  # onnxruntime refused a binding: run the plain way from now on
            self.may_bind = False
        return self.binding

    def _python(self, req: dict[str, Any]) -> dict[str, Any]:
        namespace: dict[str, Any] = {"__name__": "aimx_payload"}
        exec(compile(req["source"], "<payload>", "exec"), namespace)
        value = namespace[req["name"]]()
        return {"op": "result", "outputs": [], "value": repr(value)[:1000], "class": "python"}


# Modules the worker (and a test payload) may need after dropping privileges when the
# interpreter is not reachable by the worker user (no bubblewrap to bind it somewhere visible).
_PREIMPORT = (
    "encodings.ascii",
    "encodings.latin_1",
    "encodings.idna",
    "ctypes.util",
    "socket",
    "subprocess",
    "tempfile",
    "pathlib",
    "platform",
    "sandbox._landlock",
    "sandbox._seccomp",
    "sandbox._determinism",
    "sandbox._dtypes",
    "sandbox._admission",
    "sandbox._shm",
    "sandbox._binding",
    "sandbox._onnx_session",
)


def _preimport(runtime: str) -> None:
    import importlib

    for name in _PREIMPORT:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    from . import _determinism, _seccomp

    with contextlib.suppress(Exception):
        _seccomp.load_pyseccomp()
    _determinism.cpu_isa()
    if runtime in ("onnx", "torchscript"):
        _determinism.runtime_version(runtime)


def _thread_count() -> int:
    """This process's threads now (1 when /proc cannot say)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise SystemExit("could not drop privileges")


def _torch_outputs(result: Any) -> dict[str, Any]:
    import torch

    if isinstance(result, torch.Tensor):
        return {"output_0": result.detach().cpu().numpy()}
    if isinstance(result, tuple | list):
        out = {}
        for i, r in enumerate(result):
            if not isinstance(r, torch.Tensor):
                raise JobFailed("runtime_error", f"output {i} is not a tensor")
            out[f"output_{i}"] = r.detach().cpu().numpy()
        return out
    if isinstance(result, dict):
        out = {}
        for k, r in result.items():
            if not isinstance(k, str) or not isinstance(r, torch.Tensor):
                raise JobFailed("runtime_error", "a dict output maps names to tensors")
            out[k] = r.detach().cpu().numpy()
        return out
    raise JobFailed("runtime_error", f"the model returned {type(result).__name__}, not tensors")


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Keep the channel on private fds; the job's own prints go to stderr.
    rfd = os.dup(0)
    wfd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    worker = _Worker(rfd, wfd)
    try:
        worker.start()
    except _ipc.WorkerGone:
        sys.exit(0)
    worker.serve()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
