// Documents the loader must refuse promptly, whatever yaml-cpp makes of them: each runs in
// a child process (a gtest death test, re-executed so that no other thread is copied)
// with an alarm, so that a parser that loops fails the test instead of stalling the suite.
// Found by tests/fuzz/config_fuzz.

#include <gtest/gtest.h>
#include <unistd.h>

#include <ostream>
#include <string>
#include <string_view>

#include "gateway/config/config_loader.h"
#include "gateway/router.h"

namespace gw {
namespace {

// Exits 0 when the document was refused with errors that all read FILE:LINE:COL, 1 when
// it was accepted, 2 for a malformed error; SIGALRM kills the child after two seconds
// (a correct answer takes microseconds).
[[noreturn]] void loadAndExit(const std::string& yaml) {
  alarm(2);
  LoadResult r = loadConfigString(yaml, "test.yaml");
  if (r.ok()) _exit(1);
  for (const ConfigError& e : r.errors) {
    if (e.message.empty() || e.format().rfind("test.yaml:", 0) != 0) _exit(2);
  }
  _exit(r.errors.empty() ? 2 : 0);
}

struct Document {
  const char* label;
  std::string_view yaml;
};

class ConfigLoaderDeathTest : public ::testing::TestWithParam<Document> {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

void PrintTo(const Document& d, std::ostream* os) { *os << d.label; }

// yaml-cpp 0.7's LoadAll() loops for ever, pushing an empty document per turn (memory
// grows by hundreds of MiB a second), on a stream whose document starts with a flow entry
// ',' (jbeder/yaml-cpp#1040, fixed upstream by #1319 after 0.8.0). `gateway --check` and
// a SIGHUP reload of such a file never return.
TEST_P(ConfigLoaderDeathTest, RefusedPromptly) {
  const Document& d = GetParam();
  EXPECT_EXIT(loadAndExit(std::string(d.yaml)), ::testing::ExitedWithCode(0), "")
      << d.label << ": the loader did not refuse the document within two seconds "
      << "(killed by SIGALRM: it loops), or accepted it";
}

INSTANTIATE_TEST_SUITE_P(
    Documents, ConfigLoaderDeathTest,
    ::testing::Values(Document{"lone_comma", ","}, Document{"comma_line", "\n,\n"},
                      Document{"nul_bytes_then_comma", std::string_view("\0\0\0,", 4)},
                      Document{"comma_after_a_valid_document",
                               "listeners: [{name: http, address: 127.0.0.1:8080}]\n---\n,\n"},
                      Document{"deep_flow_nesting", "listeners: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[["},
                      Document{"unterminated_flow_map", "{:"},
                      Document{"nul_only", std::string_view("\0", 1)},
                      // The same loop behind what a line-start check does not see: a ','
                      // after a tag, an anchor, a quoted scalar or a document marker.
                      Document{"tag_then_comma", "!!str ,"},
                      Document{"anchor_then_comma", "&a ,"},
                      Document{"quoted_scalar_then_comma", "\"x\" ,"},
                      Document{"document_marker_then_comma", "x\n--- ,"},
                      Document{"valid_document_then_marker_and_comma",
                               "listeners: [{name: http, address: 127.0.0.1:8080}]\n--- ,\n"}),
    [](const ::testing::TestParamInfo<Document>& info) { return std::string(info.param.label); });

// What `gateway --check` accepts, Server::buildRuntime must be able to route: a match
// host the Router refuses (it throws, and the server logs "cannot build the router" and
// refuses the configuration, without a position) must be refused by the loader, at the
// host's line and column.
std::string routeWithHost(std::string_view host) {
  return "listeners: [{name: http, address: 127.0.0.1:8080}]\n"
         "upstreams: [{name: api, endpoints: [127.0.0.1:9000]}]\n"
         "routes:\n"
         "  - name: r\n"
         "    match: {host: \"" + std::string(host) + "\"}\n"
         "    upstream: api\n";
}

TEST(ConfigLoaderRobustnessTest, EveryRouteHostTheLoaderAcceptsBuildsARouter) {
  for (std::string_view host : {"api.example.com", "*.example.com", "API.Example.COM.", "::1",
                                "[::1]", "127.0.0.1", "api.example.com:8443", "*.example.com:1",
                                "127.0.0.1:80", "x:"}) {
    LoadResult r = loadConfigString(routeWithHost(host), "test.yaml");
    if (!r.ok()) continue;  // refused at load: fine
    EXPECT_NO_THROW(Router router(r.config->routes))
        << "host '" << host << "' passes the loader but not the router";
  }
}

TEST(ConfigLoaderRobustnessTest, RouteHostWithAPortIsRefusedAtItsPosition) {
  LoadResult r = loadConfigString(routeWithHost("api.example.com:8443"), "test.yaml");
  EXPECT_FALSE(r.ok());
  ASSERT_FALSE(r.errors.empty()) << "accepted: `gateway --check` says OK, the server refuses it";
  EXPECT_EQ(r.errors[0].line, 5) << r.errors[0].format();
  EXPECT_EQ(r.errors[0].column, 19) << r.errors[0].format();  // the value's opening quote
}

}  // namespace
}  // namespace gw
