// libFuzzer target for the configuration loader (gateway/config/config_loader.h): whatever the
// bytes, loadConfigString() returns (it never throws or crashes), and
// - either a Config and no error, or no Config and at least one error;
// - every error is "fuzz.yaml:LINE:COL: message" with a non-empty message, a position
//   inside the document (0:0 only for the file as a whole), the errors sorted by position;
// - a Config it accepts is one the server can run: its routes name existing upstreams and
//   the Router builds from them (Server::buildRuntime refuses the config otherwise, after
//   `gateway --check` said it was fine).
//
// The files reference.yaml names (certificate, key, JWKS, API keys) are written once to
// kFilesDir, so that seeds naming them by absolute path load completely and the fuzzer
// reaches the filter parsers and chain building behind a valid file. Name resolution is
// made hermetic below: only numeric hosts and "localhost" resolve.

#include <dlfcn.h>
#include <netdb.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <tuple>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>

#include <sstream>

#include "gateway/config/config_loader.h"
#include "gateway/headers.h"
#include "gateway/router.h"
#include "tests/gateway/config_test_util.h"

// getaddrinfo for a random host name would ask the resolver: slow (a DNS round trip per
// input) and different from one machine to the next. Anything but "localhost" is
// resolved as a numeric address only; a name fails at once, as an unknown one does.
extern "C" int getaddrinfo(const char* node, const char* service, const struct addrinfo* hints,
                           struct addrinfo** res) {
  using Fn = int (*)(const char*, const char*, const struct addrinfo*, struct addrinfo**);
  static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "getaddrinfo"));
  struct addrinfo h = hints ? *hints : addrinfo{};
  if (node && std::strcmp(node, "localhost") != 0) h.ai_flags |= AI_NUMERICHOST;
  return real(node, service, &h, res);
}

namespace {

constexpr const char* kFilesDir = "/tmp/gateway_config_fuzz";
constexpr const char* kDisplayName = "fuzz.yaml";

std::string_view g_input;

[[noreturn]] void fail(const char* what, int line, std::string_view detail) {
  std::fprintf(stderr, "config_fuzz.cc:%d: check failed: %s\n", line, what);
  if (!detail.empty()) std::fprintf(stderr, "detail: %.*s\n", int(detail.size()), detail.data());
  std::fprintf(stderr, "input (%zu bytes):\n", g_input.size());
  for (unsigned char c : g_input) {
    if (c == '\n' || (c >= 0x20 && c < 0x7f)) {
      std::fputc(c, stderr);
    } else {
      std::fprintf(stderr, "\\x%02x", c);
    }
  }
  std::fputc('\n', stderr);
  std::abort();
}

#define FUZZ_CHECK(cond, detail)                  \
  do {                                            \
    if (!(cond)) fail(#cond, __LINE__, (detail)); \
  } while (0)

// CONFIG_FUZZ_IGNORE="unroutable" lets an exploratory run go past known findings; unset
// (ctest, `make fuzz`), every check counts.
//   unroutable: accepts a configuration whose routes the Router refuses.
// (yaml-cpp 0.7's LoadAll() loops for ever on some documents, jbeder/yaml-cpp#1040; the
// loader no longer calls it, and timeout-endless-documents in the corpus keeps it so.)
bool ignored(std::string_view what) {
  static const std::string list = [] {
    const char* env = std::getenv("CONFIG_FUZZ_IGNORE");
    return "," + std::string(env ? env : "") + ",";
  }();
  return list.find("," + std::string(what) + ",") != std::string::npos;
}

void writeFile(const std::filesystem::path& path, const std::string& content) {
  std::filesystem::create_directories(path.parent_path());
  // Write then rename: several fuzzer processes may start at once.
  std::filesystem::path tmp = path;
  tmp += ".tmp" + std::to_string(getpid());
  std::ofstream(tmp, std::ios::binary) << content;
  std::filesystem::rename(tmp, path);
}

// Parses "FILE:LINE:COL: message" back and compares it with the error's fields.
bool formatsAsLocation(const gw::ConfigError& e) {
  std::string f = e.format();
  std::string prefix = std::string(kDisplayName) + ":";
  if (f.compare(0, prefix.size(), prefix) != 0) return false;
  size_t pos = prefix.size();
  auto number = [&](int want) {
    size_t start = pos;
    while (pos < f.size() && f[pos] >= '0' && f[pos] <= '9') ++pos;
    return pos > start && pos - start < 10 && std::stoi(f.substr(start, pos - start)) == want;
  };
  if (!number(e.line) || pos >= f.size() || f[pos++] != ':') return false;
  if (!number(e.column) || f.compare(pos, 2, ": ") != 0) return false;
  std::string_view rest = std::string_view(f).substr(pos + 2);
  // One line, whatever the message held: control bytes and invalid UTF-8 are escaped
  // (then it cannot be compared byte for byte); printable ASCII is the message as it is.
  for (unsigned char c : rest) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  bool plain = std::all_of(e.message.begin(), e.message.end(), [](unsigned char c) {
    return c >= 0x20 && c < 0x7f && c != '\\';
  });
  return !plain || rest.substr(0, e.message.size()) == e.message;
}

void checkErrors(const gw::LoadResult& r, std::string_view input) {
  int lines = 1 + int(std::count(input.begin(), input.end(), '\n'));
  for (size_t i = 0; i < r.errors.size(); ++i) {
    const gw::ConfigError& e = r.errors[i];
    std::string f = e.format();
    FUZZ_CHECK(e.file == kDisplayName, f);
    FUZZ_CHECK(!e.message.empty(), f);
    FUZZ_CHECK(formatsAsLocation(e), f);
    FUZZ_CHECK(e.line >= 0 && e.column >= 0, f);
    FUZZ_CHECK(e.line <= lines + 1, f);  // (yaml-cpp's columns run on across a
                                         // multi-line scalar: no bound on them)
    FUZZ_CHECK(e.line > 0 || e.column == 0, f);  // 0:0 is the whole file
    if (i > 0) {
      const gw::ConfigError& p = r.errors[i - 1];
      FUZZ_CHECK(std::tie(p.line, p.column) <= std::tie(e.line, e.column), p.format() + " / " + f);
    }
  }
}

void checkConfig(const gw::Config& config) {
  FUZZ_CHECK(!config.listeners.empty(), "a config without listeners");
  FUZZ_CHECK(config.workers >= 1, "workers");
  FUZZ_CHECK(config.source_file == kDisplayName, config.source_file);
  for (const gw::RouteConfig& route : config.routes) {
    FUZZ_CHECK(route.upstream_index < config.upstreams.size() &&
                   config.upstreams[route.upstream_index].name == route.upstream,
               route.name);
    FUZZ_CHECK(config.findUpstream(route.upstream) != nullptr, route.name);
    FUZZ_CHECK(route.match.path_regex.empty() || route.match.regex, route.name);
    for (const auto& filter : route.chain) FUZZ_CHECK(filter != nullptr, route.name);
  }
  for (const auto& filter : config.default_chain) FUZZ_CHECK(filter != nullptr, "default chain");
  // What Server::buildRuntime does with an accepted config: it must not refuse it.
  try {
    gw::Router router(config.routes);
    gw::HeaderList headers;
    headers.addRef("X-Test", "1");
    router.match("example.com", "/", "GET", headers);
    router.match("[::1]:8080", "/api/x", "POST", headers);
  } catch (const std::exception& e) {
    if (!ignored("unroutable")) {
      fail("a configuration the loader accepts cannot be routed", __LINE__, e.what());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  namespace fs = std::filesystem;
  const fs::path dir = kFilesDir;
  auto [cert, key] = gw::test_util::makeSelfSigned("localhost");
  writeFile(dir / "conf/tls/server.crt", cert);
  writeFile(dir / "conf/tls/server.key", key);
  writeFile(dir / "conf/jwks.json", gw::test_util::kJwks);
  writeFile(dir / "conf/api-keys.txt", gw::test_util::kApiKeys);
  // ${FUZZ_VAR} in seeds: substitution with a set variable.
  setenv("FUZZ_VAR", "127.0.0.1:9000", 0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  g_input = text;
  gw::LoadResult result;
  try {
    result = gw::loadConfigString(text, kDisplayName);
  } catch (const std::exception& e) {
    fail("loadConfigString threw", __LINE__, e.what());
  } catch (...) {
    fail("loadConfigString threw something that is not a std::exception", __LINE__, "");
  }
  FUZZ_CHECK(result.ok() == (result.config != nullptr), "ok() and config disagree");
  if (result.config) {
    FUZZ_CHECK(result.errors.empty(), result.errors.front().format());
    checkConfig(*result.config);
  } else {
    FUZZ_CHECK(!result.errors.empty(), "neither a config nor an error");
  }
  checkErrors(result, text);
  return 0;
}
