// `gateway --explain -c FILE METHOD URL [-H 'Name: value']…` (SPEC §11): which route a
// request would take, the filters that would run on it in order with their settings
// (secrets masked), and the upstream; nothing is started.
//
// Contract: the configuration goes through the real loader (validation only: no fetcher,
// no socket) and the request through the real path normalisation and Router, so the answer
// is the one the running gateway would give.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace gw {

// Prints to `out`; returns the exit code: 0 a route matches, 1 none does (or the
// configuration or the request is bad), 2 a bad command line.
int explainRequest(const std::string& config_path, const std::string& method,
                   const std::string& url, const std::vector<std::string>& headers, FILE* out);

}  // namespace gw
