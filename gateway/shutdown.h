// Work to do when the server stops, before main() returns: background threads that
// subsystems started on demand (a JWKS fetcher) are stopped there, not during static
// destruction, when logging and other singletons may already be gone. Thread-safe.
#pragma once

#include <functional>

namespace gw {

void atShutdown(std::function<void()> hook);
// Runs every hook once, most recent first. Called by Server::run on its way out.
void runShutdownHooks();

}  // namespace gw
