// The `tracing` section: defaults, every field, and the FILE:LINE:COL errors.
#include "gateway/tracing/tracing_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "gateway/config/config_loader.h"
#include "tests/gateway/config_test_util.h"

namespace gw {
namespace {

using test_util::errorsOf;
using test_util::kMinimal;
using ::testing::ElementsAre;

std::shared_ptr<const Config> load(const std::string& tracing) {
  LoadResult r = loadConfigString(std::string(kMinimal) + tracing, "test.yaml");
  for (const auto& e : r.errors) ADD_FAILURE() << e.format();
  return r.config;
}

TEST(TracingConfigTest, AbsentMeansOff) {
  auto c = load("");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->tracing, nullptr);
}

TEST(TracingConfigTest, EmptySectionTakesTheDefaults) {
  auto c = load("tracing:\n");
  ASSERT_TRUE(c && c->tracing);
  const auto& t = *c->tracing;
  EXPECT_EQ(t.service_name, "gateway");
  EXPECT_EQ(t.ratio, 0.01);
  EXPECT_TRUE(t.parent_based);
  EXPECT_EQ(t.endpoint, "http://127.0.0.1:4318/v1/traces");
  EXPECT_EQ(t.timeout, Millis(2000));
  EXPECT_EQ(t.max_spans, 512u);
  EXPECT_EQ(t.max_delay, Millis(2000));
  EXPECT_EQ(t.queue, 8192u);
  EXPECT_TRUE(t.headers.empty());
}

TEST(TracingConfigTest, EveryField) {
  auto c = load(
      "tracing:\n"
      "  service_name: edge\n"
      "  sampler: {ratio: 1}\n"
      "  parent_based: false\n"
      "  otlp:\n"
      "    endpoint: https://collector.example:4318/v1/traces\n"
      "    timeout: 500ms\n"
      "    headers: {Authorization: Bearer abc, x-tenant: t1}\n"
      "    batch: {max_spans: 10, max_delay: 100ms}\n"
      "    queue: 100\n");
  ASSERT_TRUE(c && c->tracing);
  const auto& t = *c->tracing;
  EXPECT_EQ(t.service_name, "edge");
  EXPECT_EQ(t.ratio, 1.0);
  EXPECT_FALSE(t.parent_based);
  EXPECT_EQ(t.endpoint, "https://collector.example:4318/v1/traces");
  EXPECT_EQ(t.timeout, Millis(500));
  EXPECT_THAT(t.headers,
              ElementsAre(std::pair<std::string, std::string>{"Authorization", "Bearer abc"},
                          std::pair<std::string, std::string>{"x-tenant", "t1"}));
  EXPECT_EQ(t.max_spans, 10u);
  EXPECT_EQ(t.max_delay, Millis(100));
  EXPECT_EQ(t.queue, 100u);
  // The sampler is built from the values read, not the defaults.
  uint8_t id[16] = {};
  uint8_t not_sampled = 0;
  EXPECT_TRUE(t.sampler.sample(id, &not_sampled));
}

TEST(TracingConfigTest, ErrorsPointAtTheValue) {
  std::string head = std::string(kMinimal) + "tracing:\n";
  EXPECT_THAT(errorsOf(head + "  sampler: {ratio: 1.5}\n"),
              ElementsAre("test.yaml:8:20: sampler ratio must be a number from 0 to 1, got '1.5'"));
  EXPECT_THAT(
      errorsOf(head + "  sampler: {ratio: half}\n"),
      ElementsAre("test.yaml:8:20: sampler ratio must be a number from 0 to 1, got 'half'"));
  EXPECT_THAT(
      errorsOf(head + "  sampler: {ratio: -0.1}\n"),
      ElementsAre("test.yaml:8:20: sampler ratio must be a number from 0 to 1, got '-0.1'"));
  EXPECT_THAT(errorsOf(head + "  parent_based: yes\n"),
              ElementsAre("test.yaml:8:17: expected true or false, got 'yes'"));
  EXPECT_THAT(errorsOf(head + "  otlp: {endpoint: \"grpc://c:4317\"}\n"),
              ElementsAre("test.yaml:8:20: otlp endpoint 'grpc://c:4317': not an http:// or "
                          "https:// URL"));
  EXPECT_THAT(errorsOf(head + "  otlp: {queue: 0}\n"),
              ElementsAre(::testing::StartsWith("test.yaml:8:17: ")));
  EXPECT_THAT(errorsOf(head + "  otlp: {queue: 10, batch: {max_spans: 11}}\n"),
              ElementsAre("test.yaml:8:17: otlp queue (10) must hold at least one batch "
                          "(max_spans 11)"));
  EXPECT_THAT(errorsOf(head + "  otlp: {timeout: 0s}\n"),
              ElementsAre(::testing::StartsWith("test.yaml:8:19: ")));
  EXPECT_THAT(errorsOf(head + "  otlp: {headers: {Content-Type: text/plain}}\n"),
              ElementsAre("test.yaml:8:20: the exporter sets 'Content-Type' itself"));
  EXPECT_THAT(errorsOf(head + "  otlp: {headers: {\"bad name\": x}}\n"),
              ElementsAre("test.yaml:8:20: 'bad name' is not a valid header name"));
  EXPECT_THAT(errorsOf(head + "  service_name: \"\"\n"),
              ElementsAre(::testing::StartsWith("test.yaml:8:17: ")));
}

TEST(TracingConfigTest, UnknownKeysAreRefused) {
  std::string head = std::string(kMinimal) + "tracing:\n";
  auto errors = errorsOf(head + "  sample: {ratio: 1}\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_THAT(errors[0], ::testing::StartsWith("test.yaml:8:3: "));
  EXPECT_THAT(errors[0], ::testing::HasSubstr("sampler"));  // the suggestion
  EXPECT_THAT(errorsOf(head + "  otlp: {batch: {max_span: 1}}\n"),
              ElementsAre(::testing::StartsWith("test.yaml:8:18: ")));
  EXPECT_THAT(errorsOf(head + "  otlp: {endpont: x}\n"),
              ElementsAre(::testing::StartsWith("test.yaml:8:10: ")));
}

}  // namespace
}  // namespace gw
