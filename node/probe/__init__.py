"""The hardware probe: CPU, memory, disk, GPUs (NVML), runtimes and a benchmark score.

Importing this package needs only the standard library, numpy and ``sandbox`` (whose ISA
levels it reports; importing it loads only that part); onnxruntime, pynvml and torch are
imported when probed, and their absence is reported, never raised. The JSON form
is specified in specs/probe.md.
"""

from sandbox import isa_level as isa_level

from ._benchmark import BenchmarkReport as BenchmarkReport
from ._benchmark import median_ns as median_ns
from ._benchmark import run_benchmark as run_benchmark
from ._benchmark import score as score
from ._cpu import CpuInfo as CpuInfo
from ._cpu import CpuReport as CpuReport
from ._cpu import parse_cgroup_cpu_max as parse_cgroup_cpu_max
from ._cpu import parse_cpuinfo as parse_cpuinfo
from ._cpu import read_cpu as read_cpu
from ._disk import DiskReport as DiskReport
from ._disk import read_disk as read_disk
from ._gpu import GpuDevice as GpuDevice
from ._gpu import GpuReport as GpuReport
from ._gpu import probe_gpus as probe_gpus
from ._memory import MemoryReport as MemoryReport
from ._memory import parse_cgroup_memory_max as parse_cgroup_memory_max
from ._memory import parse_meminfo as parse_meminfo
from ._memory import read_memory as read_memory
from ._onnx_models import tiny_model as tiny_model
from ._onnx_models import workload as workload
from ._probe import SCHEMA as SCHEMA
from ._probe import ProbeReport as ProbeReport
from ._probe import determinism_class as determinism_class
from ._probe import run_probe as run_probe
from ._runtimes import NOT_COMPUTE as NOT_COMPUTE
from ._runtimes import OnnxRuntimeReport as OnnxRuntimeReport
from ._runtimes import ProviderCheck as ProviderCheck
from ._runtimes import TorchReport as TorchReport
from ._runtimes import check_provider as check_provider
from ._runtimes import probe_onnxruntime as probe_onnxruntime
from ._runtimes import probe_torch as probe_torch
