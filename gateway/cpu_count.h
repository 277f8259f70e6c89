// How many CPUs this process may actually use: `workers: auto` should start one event loop
// per usable core, not one per core of the host. A container (Docker --cpus, a Kubernetes
// CPU limit) or taskset gives the process fewer than the machine has, and a worker per host
// core would then only add context switches and memory.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace gw {

// min(CPUs in the affinity mask, the tightest cgroup CPU quota rounded up), at least 1.
unsigned usableCpus();

// The parts of usableCpus() that read text, apart for tests.
// A cgroup v2 `cpu.max` ("max 100000", "150000 100000"): whole CPUs (rounded up), or none.
std::optional<unsigned> cpusFromCpuMax(std::string_view cpu_max);
// cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` (quota -1: no limit).
std::optional<unsigned> cpusFromCfs(std::string_view quota_us, std::string_view period_us);
// The process's cgroup v2 path from /proc/self/cgroup ("0::/some/path"), if it has one.
std::optional<std::string> cgroupV2Path(std::string_view proc_self_cgroup);

}  // namespace gw
