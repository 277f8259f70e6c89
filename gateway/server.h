// The process: loads the configuration, binds the listeners, runs the workers and the
// admin loop, and turns signals into reloads and drains.
//
// Contract: the admin endpoints and signal handling run on the main thread's loop (an
// admin-only Worker), so a busy worker never delays a health probe or a reload. The
// methods marked "any thread" are safe from workers.
#pragma once

#include <uv.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gateway/connection_limiter.h"
#include "gateway/upstream/health_checker.h"
#include "gateway/admin/status.h"
#include "gateway/worker.h"

namespace gw {

class Server {
 public:
  explicit Server(std::string config_path);
  ~Server();

  // Runs until drained or stopped; returns the process exit code (SPEC §1).
  int run();

  // Any thread.
  ConnectionLimiter& connectionLimiter() { return limiter_; }
  void workerExited();
  bool started() const { return started_.load(std::memory_order_acquire); }
  bool draining() const { return draining_.load(std::memory_order_acquire); }
  uint64_t startTimeMs() const { return start_ms_; }
  std::shared_ptr<const Runtime> runtime() const;
  // Stats of every worker (for /metrics); valid while the server runs.
  const std::vector<std::unique_ptr<Worker>>& workers() const { return workers_; }
  uint64_t reloadsSucceeded() const { return reloads_ok_.load(); }
  uint64_t reloadsFailed() const { return reloads_failed_.load(); }
  // Admin thread only (reloads happen there too).
  uint64_t loadedAtMs() const { return loaded_at_ms_; }
  const ReloadRecord& lastReload() const { return last_reload_; }

 private:
  std::shared_ptr<const Runtime> buildRuntime(std::shared_ptr<const Config> config);
  bool bindAll(const Config& config);
  void reload();
  void countReload(bool ok);
  void beginDrain();
  void stopWorkers();
  static void onSignal(uv_signal_t* h, int signum);
  static void onWorkerExit(uv_async_t* h);
  static void onDrainTimeout(uv_timer_t* h);

  std::string config_path_;
  uint64_t start_ms_ = 0;
  std::atomic<bool> started_{false};
  std::atomic<bool> draining_{false};
  ConnectionLimiter limiter_;
  std::atomic<uint64_t> reloads_ok_{0};
  std::atomic<uint64_t> reloads_failed_{0};
  std::atomic<uint32_t> workers_exited_{0};
  mutable std::mutex runtime_mutex_;
  std::shared_ptr<const Runtime> runtime_;
  uint64_t generation_ = 0;
  uint64_t loaded_at_ms_ = 0;
  ReloadRecord last_reload_;

  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<Worker> admin_;
  std::unique_ptr<HealthChecker> health_checker_;
  std::vector<std::vector<ListenSocket>> worker_sockets_;
  ListenSocket admin_socket_;
  uv_signal_t sighup_{}, sigterm_{}, sigint_{}, sigusr1_{};
  uv_async_t worker_exit_{};
  uv_timer_t drain_timer_{};
};

}  // namespace gw
