#include "gateway/shutdown.h"

#include <mutex>
#include <vector>

namespace gw {

namespace {

struct Hooks {
  std::mutex mutex;
  std::vector<std::function<void()>> hooks;
};

Hooks& hooks() {
  static Hooks* h = new Hooks();  // used until exit by every thread
  return *h;
}

}  // namespace

void atShutdown(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(hooks().mutex);
  hooks().hooks.push_back(std::move(hook));
}

void runShutdownHooks() {
  std::vector<std::function<void()>> todo;
  {
    std::lock_guard<std::mutex> lock(hooks().mutex);
    todo.swap(hooks().hooks);
  }
  for (auto it = todo.rbegin(); it != todo.rend(); ++it) (*it)();
}

}  // namespace gw
