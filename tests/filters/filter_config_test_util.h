// Runs one filter's config parser on YAML text and hands back the typed result and the
// formatted errors.
#pragma once

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <memory>
#include <string>
#include <vector>

#include "gateway/config/config_context.h"
#include "gateway/filter.h"

namespace gw::test_util {

template <class T>
struct Parsed {
  std::shared_ptr<const T> config;
  std::vector<std::string> errors;
};

template <class T>
Parsed<T> parseFilter(std::shared_ptr<const FilterConfig> (*parse)(const YAML::Node&,
                                                                   ConfigContext&),
                      const std::string& yaml) {
  ConfigContext ctx("f.yaml");
  auto config = parse(YAML::Load(yaml), ctx);
  Parsed<T> out;
  out.config = std::dynamic_pointer_cast<const T>(config);
  for (const auto& e : ctx.errors()) out.errors.push_back(e.format());
  // The contract: null exactly when something was reported.
  EXPECT_EQ(config == nullptr, !out.errors.empty()) << yaml;
  return out;
}

}  // namespace gw::test_util
