#include "gateway/cpu_count.h"

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <iterator>
#include <thread>

namespace gw {
namespace {

std::optional<uint64_t> parseUnsigned(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<unsigned> wholeCpus(uint64_t quota, uint64_t period) {
  if (period == 0 || quota == 0) return std::nullopt;
  return unsigned(std::max<uint64_t>(1, (quota + period - 1) / period));
}

std::optional<std::string> readFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void tighten(std::optional<unsigned>& limit, std::optional<unsigned> candidate) {
  if (candidate && (!limit || *candidate < *limit)) limit = candidate;
}

// A quota set on any ancestor bounds the process too; inside a container its own cgroup
// is usually the namespace root "/", whose cpu.max the container runtime wrote.
std::optional<unsigned> cgroupV2Limit() {
  auto self = readFile("/proc/self/cgroup");
  if (!self) return std::nullopt;
  auto path = cgroupV2Path(*self);
  if (!path) return std::nullopt;
  std::optional<unsigned> limit;
  std::string dir = *path;
  while (true) {
    if (auto text = readFile("/sys/fs/cgroup" + dir + (dir == "/" ? "" : "/") + "cpu.max")) {
      tighten(limit, cpusFromCpuMax(*text));
    }
    if (dir == "/" || dir.empty()) break;
    size_t slash = dir.rfind('/');
    dir = slash == 0 ? "/" : dir.substr(0, slash);
  }
  return limit;
}

// cgroup v1 as a container sees it (its cpu controller mounted at its own cgroup).
std::optional<unsigned> cgroupV1Limit() {
  auto quota = readFile("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
  auto period = readFile("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
  if (!quota || !period) return std::nullopt;
  return cpusFromCfs(*quota, *period);
}

}  // namespace

std::optional<unsigned> cpusFromCpuMax(std::string_view cpu_max) {
  size_t space = cpu_max.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  auto quota = parseUnsigned(cpu_max.substr(0, space));  // "max" does not parse: no limit
  auto period = parseUnsigned(cpu_max.substr(space + 1));
  if (!quota || !period) return std::nullopt;
  return wholeCpus(*quota, *period);
}

std::optional<unsigned> cpusFromCfs(std::string_view quota_us, std::string_view period_us) {
  auto quota = parseUnsigned(quota_us);  // "-1" does not parse: no limit
  auto period = parseUnsigned(period_us);
  if (!quota || !period) return std::nullopt;
  return wholeCpus(*quota, *period);
}

std::optional<std::string> cgroupV2Path(std::string_view proc_self_cgroup) {
  while (!proc_self_cgroup.empty()) {
    size_t eol = proc_self_cgroup.find('\n');
    std::string_view line = proc_self_cgroup.substr(0, eol);
    if (line.substr(0, 3) == "0::" && line.size() > 3) return std::string(line.substr(3));
    if (eol == std::string_view::npos) break;
    proc_self_cgroup.remove_prefix(eol + 1);
  }
  return std::nullopt;
}

unsigned usableCpus() {
  unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = std::max(1, CPU_COUNT(&set));
  std::optional<unsigned> quota = cgroupV2Limit();
  tighten(quota, cgroupV1Limit());
  if (quota) cpus = std::min(cpus, *quota);
  return cpus;
}

}  // namespace gw
