// GET / on the admin listener (SPEC §11): one self-contained HTML page (inline style and
// script, no other resource) that polls GET /status and draws it.
//
// Contract: the page is fixed at build time; its Content-Security-Policy admits exactly its
// own inline style and script (by SHA-256) and connections to its own origin, so nothing
// else can load or run in it. The script builds the DOM with textContent only: every
// string of /status (route names come from the configuration) is shown, never parsed.
#pragma once

#include <string_view>

namespace gw {

std::string_view statusPageHtml();
std::string_view statusPageCsp();

}  // namespace gw
