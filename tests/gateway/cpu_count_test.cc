#include "gateway/cpu_count.h"

#include <gtest/gtest.h>
#include <sched.h>

namespace gw {
namespace {

TEST(CpuCount, CgroupV2CpuMax) {
  EXPECT_EQ(cpusFromCpuMax("max 100000\n"), std::nullopt);
  EXPECT_EQ(cpusFromCpuMax("200000 100000\n"), 2u);
  EXPECT_EQ(cpusFromCpuMax("150000 100000"), 2u);  // 1.5 CPUs: a second worker still runs
  EXPECT_EQ(cpusFromCpuMax("50000 100000"), 1u);
  EXPECT_EQ(cpusFromCpuMax("1000 100000"), 1u);
  EXPECT_EQ(cpusFromCpuMax("0 100000"), std::nullopt);
  EXPECT_EQ(cpusFromCpuMax("100000 0"), std::nullopt);
  EXPECT_EQ(cpusFromCpuMax(""), std::nullopt);
  EXPECT_EQ(cpusFromCpuMax("garbage"), std::nullopt);
  EXPECT_EQ(cpusFromCpuMax("12x 100000"), std::nullopt);
}

TEST(CpuCount, CgroupV1Cfs) {
  EXPECT_EQ(cpusFromCfs("-1\n", "100000\n"), std::nullopt);
  EXPECT_EQ(cpusFromCfs("400000\n", "100000\n"), 4u);
  EXPECT_EQ(cpusFromCfs("250000", "100000"), 3u);
  EXPECT_EQ(cpusFromCfs("", "100000"), std::nullopt);
}

TEST(CpuCount, CgroupV2PathFromProcSelfCgroup) {
  EXPECT_EQ(cgroupV2Path("0::/\n"), "/");
  EXPECT_EQ(cgroupV2Path("0::/system.slice/gateway.service\n"), "/system.slice/gateway.service");
  // A hybrid host lists the v1 controllers first.
  EXPECT_EQ(cgroupV2Path("4:memory:/x\n1:cpu:/\n0::/kubepods/pod1/c1\n"), "/kubepods/pod1/c1");
  EXPECT_EQ(cgroupV2Path("4:memory:/x\n1:cpu:/\n"), std::nullopt);
  EXPECT_EQ(cgroupV2Path(""), std::nullopt);
  EXPECT_EQ(cgroupV2Path("0::"), std::nullopt);
}

TEST(CpuCount, NeverMoreThanTheAffinityMaskAllows) {
  cpu_set_t set;
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  unsigned n = usableCpus();
  EXPECT_GE(n, 1u);
  EXPECT_LE(n, unsigned(CPU_COUNT(&set)));
}

}  // namespace
}  // namespace gw
