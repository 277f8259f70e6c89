// A worker: one thread, one libuv loop, its own listening sockets (SO_REUSEPORT), its own
// connections, upstream pools and request objects.
//
// Contract:
// - Everything in a Worker is touched only by its own thread, except post*() which other
//   threads call to hand it a new configuration or tell it to drain.
// - Configuration generations: a request pins the Generation it started with (a plain
//   counter, no atomics: the Generation is per worker). A retired generation is freed
//   when its last request ends, so a reload never changes a request mid-flight and never
//   puts shared reference counting on the request path.
#pragma once

#include <uv.h>

#include <atomic>
#include <map>
#include <cstdint>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/headers.h"
#include "gateway/deadline_list.h"
#include "gateway/filter.h"
#include "gateway/free_list.h"
#include "gateway/router.h"
#include "gateway/tls/tls_context.h"
#include "gateway/metrics.h"
#include "gateway/unused_count.h"

namespace gw {

class Server;
class UpstreamPool;
class DownstreamConnection;
struct Http1Request;
struct Http2Stream;
class Http2ServerCodec;

// One configuration generation, shared read-only by all workers.
struct Runtime {
  std::shared_ptr<const Config> config;
  std::unique_ptr<Router> router;
  // By listener index: the TLS context of listeners with a `tls` block, else null.
  std::vector<std::shared_ptr<const TlsServerContext>> listener_tls;
  // By upstream index: the TLS context of upstreams with a `tls` block, else null.
  std::vector<std::shared_ptr<const TlsClientContext>> upstream_tls;
  uint64_t generation = 0;
};

// A worker's view of one Runtime: its upstream pools and how many requests use it.
struct Generation {
  std::shared_ptr<const Runtime> runtime;
  std::vector<std::unique_ptr<UpstreamPool>> pools;  // by Config::upstreams index
  uint32_t active_requests = 0;
  bool retired = false;
};

// A bound listening socket, created by the Server before workers start.
struct ListenSocket {
  int fd = -1;
  size_t listener_index = 0;  // into Config::listeners; SIZE_MAX for the admin listener
  bool admin = false;
};

class Worker final : public WorkerServices {
 public:
  Worker(Server& server, uint32_t index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Set up the loop and listeners on the calling thread; run() then blocks until stopped.
  void init(std::shared_ptr<const Runtime> runtime, const std::vector<ListenSocket>& sockets);
  void run();
  void startThread(std::shared_ptr<const Runtime> runtime, std::vector<ListenSocket> sockets);
  void join();

  // Any thread.
  void postRuntime(std::shared_ptr<const Runtime> runtime);
  void postDrain();
  void postStop();

  // Worker thread only.
  uv_loop_t* loop() override { return &loop_; }
  uint32_t workerIndex() const override { return index_; }
  WorkerState& state(std::string_view key,
                     std::unique_ptr<WorkerState> (*make)(WorkerServices&)) override;
  // True at most once a second per worker: for warnings that a flood could repeat.
  bool logThrottle() {
    uint64_t now = nowMs();
    if (now - last_throttled_log_ms_ < 1000) return false;
    last_throttled_log_ms_ = now;
    return true;
  }
  Server& server() { return server_; }
  uint32_t index() const { return index_; }
  Generation* currentGeneration() { return current_; }
  Generation* pinGeneration();
  void unpinGeneration(Generation* g);
  UpstreamPool& pool(Generation* g, size_t upstream_index) { return *g->pools[upstream_index]; }
  Http1Request* acquireRequest();
  void releaseRequest(Http1Request* r);
  Http2Stream* acquireStream();
  void releaseStream(Http2Stream* s);
  // HTTP/2 sessions whose frames wait for the end of this loop iteration, so that the
  // responses of several streams that became ready in it leave in one write.
  void deferSend(Http2ServerCodec* codec);
  void cancelSend(Http2ServerCodec* codec);
  bool draining() const { return draining_; }
  uint64_t nowMs() const { return uv_now(const_cast<uv_loop_t*>(&loop_)); }

  // Connection bookkeeping and the shared timeouts (see deadline_list.h).
  void addConnection(DownstreamConnection* c);
  void removeConnection(DownstreamConnection* c);
  DeadlineList& headerDeadlines() { return header_deadlines_; }
  DeadlineList& idleDeadlines() { return idle_deadlines_; }
  DeadlineList& writeDeadlines() { return write_deadlines_; }
  DeadlineList& bodyDeadlines() { return body_deadlines_; }
  void scheduleDeadline(uint64_t deadline_ms);

  // Connection-level limits of the current configuration, cached per generation.
  struct ConnectionLimits {
    uint64_t header_read_ms = 10000;
    uint64_t body_read_ms = 60000;
    uint64_t idle_ms = 60000;
    uint64_t write_ms = 60000;
    uint64_t max_head_bytes = 16 * 1024;
    uint64_t max_response_head_bytes = 64 * 1024;
    uint64_t max_uri_bytes = 8 * 1024;
  };
  const ConnectionLimits& limits() const { return limits_; }
  // Now as an HTTP date ("Sun, 06 Nov 1994 08:49:37 GMT"), formatted once a second; the
  // view stays valid until the next call in a later second.
  std::string_view httpDate();
  // A UUIDv7 (time-ordered, 74 random bits) in the arena.
  std::string_view newRequestId(StringArena& arena);
  // A retired pool has closed its last connection.
  void poolDrained(UpstreamPool* pool);

  // 128 random bits for request ids; per worker, seeded from the kernel.
  void random128(uint64_t out[2]) override;

 private:
  static void onAsync(uv_async_t* h);
  template <typename Fill>
  void post(Fill&& fill);  // fills the mailbox under its lock, then wakes the loop
  static void onTimer(uv_timer_t* h);
  static void onHousekeeping(uv_timer_t* h);
  // Gives back what the pools kept from a burst and no request needed for a period.
  void releaseUnusedMemory();
  static void onConnection(uv_stream_t* server, int status);
  void applyMailbox();
  void adoptRuntime(std::shared_ptr<const Runtime> runtime);
  void beginDrain();
  void maybeFinishDrain();
  void expireDeadlines();
  void closeAll();
  void collectGenerations();

  Server& server_;
  uint32_t index_;
  uv_loop_t loop_{};
  uv_async_t async_{};
  uv_timer_t timer_{};
  uint64_t timer_due_ = UINT64_MAX;
  struct Listener {
    uv_tcp_t handle;
    Worker* worker;
    size_t listener_index;
    bool admin;
  };
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::unique_ptr<Generation>> generations_;  // current is the last
  Generation* current_ = nullptr;
  FreeList<Http1Request> requests_;
  FreeList<Http2Stream> streams_;
  uint64_t requests_this_period_ = 0;  // of housekeeping
  size_t released_since_trim_ = 0;     // pooled items freed since the last malloc_trim
  uv_timer_t housekeeping_{};
  uv_check_t send_check_{};  // runs the deferred HTTP/2 sends after each poll
  std::vector<Http2ServerCodec*> deferred_sends_;
  static void onSendCheck(uv_check_t* h);
  DownstreamConnection* connections_ = nullptr;  // intrusive list of live connections
  size_t connection_count_ = 0;
  DeadlineList header_deadlines_;
  DeadlineList idle_deadlines_;
  DeadlineList write_deadlines_;
  DeadlineList body_deadlines_;
  bool draining_ = false;
  bool stopping_ = false;
  bool collect_pending_ = false;
  bool closed_ = false;
  uint64_t last_throttled_log_ms_ = 0;
  bool has_admin_listener_ = false;
  metrics::MetricStore metrics_{false};
  ConnectionLimits limits_;
  uint64_t rng_[4]{};
  char http_date_[30]{};  // 29 characters and strftime's NUL
  time_t http_date_second_ = -1;
  std::thread thread_;
  std::map<std::string, std::unique_ptr<WorkerState>, std::less<>> filter_states_;

  std::mutex mailbox_mutex_;
  std::shared_ptr<const Runtime> mailbox_runtime_;
  bool mailbox_drain_ = false;
  bool mailbox_stop_ = false;
  bool async_ready_ = false;  // async_ is initialised (by the worker's own thread)

  friend class DownstreamConnection;
};

}  // namespace gw
