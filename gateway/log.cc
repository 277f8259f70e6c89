#include "gateway/log.h"

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "gateway/http_util.h"

namespace gw::log {

namespace {

std::once_flag g_pool_once;
std::shared_ptr<spdlog::logger> g_app;
std::atomic<spdlog::logger*> g_access{nullptr};
std::atomic<bool> g_access_unflushed{false};
std::atomic<int> g_level{int(LogLevel::Info)};
// Access loggers replaced by a reload stay alive: a worker may still be writing to one.
std::vector<std::shared_ptr<spdlog::logger>> g_access_keep;
std::mutex g_access_mutex;

void ensurePool() {
  std::call_once(g_pool_once, [] {
    // One background thread writes both logs; a full queue drops the oldest lines rather
    // than block a worker (logging never blocks the event loop).
    spdlog::init_thread_pool(8192, 1);
  });
}

std::shared_ptr<spdlog::logger> makeAsync(const std::string& name, spdlog::sink_ptr sink) {
  auto logger = std::make_shared<spdlog::async_logger>(
      name, std::move(sink), spdlog::thread_pool(), spdlog::async_overflow_policy::overrun_oldest);
  logger->set_pattern("%v");
  logger->set_level(spdlog::level::trace);
  return logger;
}

std::string_view levelName(LogLevel l) {
  switch (l) {
    case LogLevel::Trace: return "trace";
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
  }
  return "info";
}

}  // namespace

void init(LogLevel level) {
  ensurePool();
  if (!g_app) {
    g_app = makeAsync("app", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    g_app->flush_on(spdlog::level::trace);  // application lines are rare; show them at once
  }
  setLevel(level);
}

void setLevel(LogLevel level) { g_level.store(int(level), std::memory_order_relaxed); }

bool enabled(LogLevel level) { return int(level) >= g_level.load(std::memory_order_relaxed); }

void shutdown() {
  if (g_app) g_app->flush();
  if (auto* a = g_access.load()) a->flush();
  spdlog::shutdown();
}

void write(LogLevel level, std::string_view message, std::initializer_list<Field> fields) {
  if (!enabled(level)) return;
  std::string line;
  line.reserve(128);
  char ts[24];
  formatTimestamp(wallClockMs(), ts);
  line += "{\"timestamp\":\"";
  line.append(ts, 24);
  line += "\",\"level\":\"";
  line += levelName(level);
  line += "\",\"message\":\"";
  appendJsonEscaped(line, message);
  line += '"';
  for (const auto& [k, v] : fields) {
    line += ",\"";
    appendJsonEscaped(line, k);
    line += "\":\"";
    appendJsonEscaped(line, v);
    line += '"';
  }
  line += '}';
  if (g_app) {
    g_app->log(spdlog::level::info, std::string_view(line));
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

bool openAccessLog(const std::string& target, std::string* error) {
  ensurePool();
  std::shared_ptr<spdlog::logger> logger;
  if (target == "off") {
    if (auto* old = g_access.exchange(nullptr)) old->flush();  // its last lines, now
    return true;
  }
  try {
    if (target == "stdout") {
      logger = makeAsync("access", std::make_shared<spdlog::sinks::stdout_sink_mt>());
    } else {
      logger = makeAsync("access", std::make_shared<spdlog::sinks::basic_file_sink_mt>(target));
    }
  } catch (const std::exception& e) {
    if (error) *error = e.what();
    return false;
  }
  std::lock_guard<std::mutex> lock(g_access_mutex);
  g_access_keep.push_back(logger);
  // The replaced logger is flushed once more: the periodic flush only reaches the current one.
  if (auto* old = g_access.exchange(logger.get())) old->flush();
  return true;
}

bool accessLogEnabled() { return g_access.load(std::memory_order_relaxed) != nullptr; }

void writeAccessLine(std::string_view line) {
  if (auto* a = g_access.load(std::memory_order_relaxed)) {
    a->log(spdlog::level::info, line);
    // Read first: a plain load keeps the flag's cache line shared between workers.
    if (!g_access_unflushed.load(std::memory_order_relaxed)) {
      g_access_unflushed.store(true, std::memory_order_relaxed);
    }
  }
}

void flushAccessLog() {
  if (!g_access_unflushed.exchange(false, std::memory_order_relaxed)) return;
  if (auto* a = g_access.load(std::memory_order_relaxed)) a->flush();  // queued behind the lines
}

}  // namespace gw::log
