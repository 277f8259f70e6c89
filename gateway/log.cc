#include "gateway/log.h"

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "gateway/http_util.h"

namespace gw::log {

namespace {

// The access log's one sink, stdout or a file, retargeted in place (a reload naming another
// path, SIGUSR1 after logrotate moved the file): the logger the workers write to is never
// replaced, so none can be left writing to a dead one, and a rotated file is closed.
class AccessSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  ~AccessSink() override { closeFile(); }

  // "stdout" or a path, opened for appending; on failure the current target stays.
  bool open(const std::string& target, std::string* error) {
    std::lock_guard<std::mutex> lock(mutex_);
    FILE* file = stdout;
    if (target != "stdout") {
      // A missing directory is the loader's error (FILE:LINE:COL) at start and at a reload;
      // one removed since, at SIGUSR1, is this one: nothing is created behind the operator.
      file = std::fopen(target.c_str(), "ae");
      if (!file) {
        if (error) *error = std::strerror(errno);
        return false;
      }
    }
    closeFile();
    file_ = file;
    target_ = target;
    return true;
  }

  bool reopen(std::string* error) {
    std::string target;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      target = target_;
    }
    return open(target, error);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (!file_) return;
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    std::fwrite(line.data(), 1, line.size(), file_);
  }
  void flush_() override {
    if (file_) std::fflush(file_);
  }

 private:
  void closeFile() {
    if (!file_) return;
    std::fflush(file_);
    if (file_ != stdout) std::fclose(file_);
    file_ = nullptr;
  }

  FILE* file_ = nullptr;
  std::string target_;
};

std::once_flag g_pool_once;
std::shared_ptr<spdlog::logger> g_app;
std::shared_ptr<AccessSink> g_access_sink;
std::shared_ptr<spdlog::logger> g_access_logger;  // writes to g_access_sink
std::atomic<spdlog::logger*> g_access{nullptr};   // g_access_logger while the log is on
std::atomic<bool> g_access_unflushed{false};
std::atomic<int> g_level{int(LogLevel::Info)};
std::mutex g_access_mutex;  // opening and reopening (the main thread, tests)

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
  std::lock_guard<std::mutex> lock(g_access_mutex);
  if (target == "off") {
    if (auto* old = g_access.exchange(nullptr)) old->flush();  // its last lines, now
    return true;
  }
  if (!g_access_logger) {
    g_access_sink = std::make_shared<AccessSink>();
    g_access_logger = makeAsync("access", g_access_sink);
  }
  // Lines still queued go to the new target: the writer thread takes them after this.
  if (!g_access_sink->open(target, error)) return false;
  g_access.store(g_access_logger.get());
  return true;
}

bool reopenAccessLog(std::string* error) {
  std::lock_guard<std::mutex> lock(g_access_mutex);
  if (!g_access.load()) return true;  // off
  return g_access_sink->reopen(error);
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
