// gateway -c FILE | --check -c FILE | --explain -c FILE METHOD URL [-H …] | --version
// (SPEC §1, §11)
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gateway/config/config_loader.h"
#include "gateway/admin/explain.h"
#include "gateway/server.h"

namespace {

constexpr const char* kDefaultConfig = "conf/gateway.yaml";

void usage(FILE* out) {
  std::fprintf(out,
               "usage: gateway [-c FILE]          run in the foreground (default %s)\n"
               "       gateway --check [-c FILE]  validate FILE and the files it names\n"
               "       gateway --explain [-c FILE] METHOD URL [-H 'Name: value']...\n"
               "                                  the route, filters and upstream of that request\n"
               "       gateway --version          print the version\n",
               kDefaultConfig);
}

int check(const std::string& path) {
  gw::setValidationOnly(true);
  gw::LoadResult r = gw::loadConfigFile(path);
  if (r.ok()) {
    std::printf("configuration OK\n");
    return 0;
  }
  for (const auto& e : r.errors) std::printf("%s\n", e.format().c_str());
  if (r.errors.empty()) std::printf("%s: invalid configuration\n", path.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = kDefaultConfig;
  bool check_only = false;
  bool explain = false;
  std::vector<std::string> positional, headers;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-c" || a == "--config") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "gateway: %s needs a file\n", a.c_str());
        usage(stderr);
        return 2;
      }
      config = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config = a.substr(9);
    } else if (a == "--check" || a == "-t") {
      check_only = true;
    } else if (a == "--explain") {
      explain = true;
    } else if (explain && (a == "-H" || a == "--header")) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "gateway: %s needs 'Name: value'\n", a.c_str());
        usage(stderr);
        return 2;
      }
      headers.push_back(argv[++i]);
    } else if (explain && (a.empty() || a[0] != '-')) {
      positional.push_back(a);
    } else if (a == "--version" || a == "-v") {
      std::printf("gateway %s\n", GATEWAY_VERSION);
      return 0;
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "gateway: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (explain) {
    if (positional.size() != 2 || check_only) {
      std::fprintf(stderr, "gateway: --explain needs METHOD and URL\n");
      usage(stderr);
      return 2;
    }
    return gw::explainRequest(config, positional[0], positional[1], headers, stdout);
  }
  if (check_only) return check(config);
  gw::Server server(config);
  return server.run();
}
