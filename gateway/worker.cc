#include "gateway/worker.h"

#include <malloc.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include "gateway/downstream.h"
#include "gateway/http2/server_codec.h"
#include "gateway/log.h"
#include "gateway/server.h"
#include "gateway/upstream/upstream.h"

namespace gw {

namespace {

// Requests kept for reuse per worker; more than the connections busy at once is waste.
constexpr size_t kMaxFreeRequests = 1024;  // of each kind (HTTP/1.1 requests, HTTP/2 streams)
// Once a period, a pooled request or slice unused all period long is freed and the access
// log's buffered lines are flushed.
constexpr uint64_t kHousekeepingMs = 1000;

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Worker::Worker(Server& server, uint32_t index)
    : server_(server), index_(index), requests_(kMaxFreeRequests), streams_(kMaxFreeRequests) {
  if (getrandom(rng_, sizeof rng_, 0) != sizeof rng_) {
    // No entropy source is a broken machine, but ids must still differ per process.
    rng_[0] = uint64_t(getpid()) << 32 ^ uint64_t(time(nullptr));
    rng_[1] = uintptr_t(this);
    rng_[2] = 0x9e3779b97f4a7c15ull;
    rng_[3] = index;
  }
}

Worker::~Worker() {
  metrics::unregisterStore(&metrics_);
}

void Worker::random128(uint64_t out[2]) {
  // xoshiro256++: fast, and seeded per worker from the kernel, so ids from different
  // workers and restarts do not collide.
  for (int i = 0; i < 2; ++i) {
    uint64_t result = rotl(rng_[0] + rng_[3], 23) + rng_[0];
    uint64_t t = rng_[1] << 17;
    rng_[2] ^= rng_[0];
    rng_[3] ^= rng_[1];
    rng_[1] ^= rng_[2];
    rng_[0] ^= rng_[3];
    rng_[2] ^= t;
    rng_[3] = rotl(rng_[3], 45);
    out[i] = result;
  }
}

std::string_view Worker::httpDate() {
  time_t now = time(nullptr);
  if (now != http_date_second_) {
    tm t;
    gmtime_r(&now, &t);
    // The C locale's names are the ones RFC 9110 requires (the gateway never sets another).
    strftime(http_date_, sizeof http_date_, "%a, %d %b %Y %H:%M:%S GMT", &t);
    http_date_second_ = now;
  }
  return {http_date_, sizeof http_date_ - 1};
}

std::string_view Worker::newRequestId(StringArena& arena) {
  static const char kHex[] = "0123456789abcdef";
  uint64_t rnd[2];
  random128(rnd);
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  uint64_t ms = uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
  uint8_t b[16];
  for (int i = 0; i < 6; ++i) b[i] = uint8_t(ms >> (40 - 8 * i));
  std::memcpy(b + 6, rnd, 8);
  std::memcpy(b + 14, rnd + 1, 2);
  b[6] = uint8_t(0x70 | (b[6] & 0x0f));  // version 7
  b[8] = uint8_t(0x80 | (b[8] & 0x3f));  // RFC 9562 variant
  char* out = arena.allocate(36);
  char* p = out;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
    *p++ = kHex[b[i] >> 4];
    *p++ = kHex[b[i] & 15];
  }
  return {out, 36};
}

void Worker::init(std::shared_ptr<const Runtime> runtime, const std::vector<ListenSocket>& sockets) {
  metrics::bindThread(&metrics_);
  metrics::registerStore(&metrics_);
  uv_loop_init(&loop_);
  loop_.data = this;  // how a connection finds its worker (DownstreamConnection::worker)
  uv_async_init(&loop_, &async_, onAsync);
  async_.data = this;
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    async_ready_ = true;
  }
  uv_async_send(&async_);  // what was posted before the handle existed: the first loop turn
  uv_timer_init(&loop_, &timer_);
  timer_.data = this;
  uv_check_init(&loop_, &send_check_);
  send_check_.data = this;
  uv_timer_init(&loop_, &housekeeping_);
  housekeeping_.data = this;
  uv_timer_start(&housekeeping_, onHousekeeping, kHousekeepingMs, kHousekeepingMs);
  adoptRuntime(std::move(runtime));
  for (const ListenSocket& s : sockets) {
    auto l = std::make_unique<Listener>();
    uv_tcp_init(&loop_, &l->handle);
    l->handle.data = l.get();
    l->worker = this;
    l->listener_index = s.listener_index;
    l->admin = s.admin;
    has_admin_listener_ |= s.admin;
    if (uv_tcp_open(&l->handle, s.fd) != 0 ||
        uv_listen(reinterpret_cast<uv_stream_t*>(&l->handle), 4096, onConnection) != 0) {
      log::error("cannot listen on a bound socket");
    }
    listeners_.push_back(std::move(l));
  }
}

void Worker::run() {
  uv_run(&loop_, UV_RUN_DEFAULT);
  generations_.clear();
  filter_states_.clear();
  uv_loop_close(&loop_);
}

void Worker::startThread(std::shared_ptr<const Runtime> runtime, std::vector<ListenSocket> sockets) {
  thread_ = std::thread([this, runtime = std::move(runtime), sockets = std::move(sockets)]() mutable {
    init(std::move(runtime), sockets);
    run();
    server_.workerExited();
  });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

template <typename Fill>
void Worker::post(Fill&& fill) {
  // Sent under the lock: a worker that closed its handle (it stopped, or is stopping)
  // must not be woken, and uv_async_send() on a closed handle aborts the process (the
  // drain timeout posted a stop to a worker that had already finished draining).
  std::lock_guard<std::mutex> lock(mailbox_mutex_);
  fill();
  // A signal right after start can come before this worker's thread has set up its loop:
  // its handle does not exist yet, and init() wakes the loop for what was posted.
  if (async_ready_) uv_async_send(&async_);
}

void Worker::postRuntime(std::shared_ptr<const Runtime> runtime) {
  post([&] { mailbox_runtime_ = std::move(runtime); });
}

void Worker::postDrain() {
  post([&] { mailbox_drain_ = true; });
}

void Worker::postStop() {
  post([&] { mailbox_stop_ = true; });
}

void Worker::onAsync(uv_async_t* h) { static_cast<Worker*>(h->data)->applyMailbox(); }

void Worker::applyMailbox() {
  std::shared_ptr<const Runtime> runtime;
  bool drain, stop;
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    runtime = std::move(mailbox_runtime_);
    mailbox_runtime_.reset();
    drain = mailbox_drain_;
    stop = mailbox_stop_;
    mailbox_drain_ = mailbox_stop_ = false;
  }
  if (runtime) adoptRuntime(std::move(runtime));
  if (drain && !stopping_) beginDrain();
  if (stop && !stopping_) {
    stopping_ = true;
    closeAll();
  }
}

void Worker::adoptRuntime(std::shared_ptr<const Runtime> runtime) {
  auto g = std::make_unique<Generation>();
  g->runtime = std::move(runtime);
  const Config& cfg = *g->runtime->config;
  for (const UpstreamConfig& u : cfg.upstreams) {
    size_t i = g->pools.size();
    g->pools.push_back(std::make_unique<UpstreamPool>(
        *this, u, uint64_t(cfg.timeouts.upstream_connect.count()),
        i < g->runtime->upstream_tls.size() ? g->runtime->upstream_tls[i] : nullptr, cfg.workers));
  }
  limits_.header_read_ms = uint64_t(cfg.timeouts.header_read.count());
  limits_.body_read_ms = uint64_t(cfg.timeouts.body_read.count());
  limits_.idle_ms = uint64_t(cfg.timeouts.idle.count());
  // A client that reads nothing for this long while we have bytes for it is gone.
  limits_.write_ms = uint64_t(cfg.timeouts.idle.count());
  limits_.max_head_bytes = cfg.limits.max_request_header_bytes;
  limits_.max_response_head_bytes = cfg.limits.max_response_header_bytes;
  limits_.max_uri_bytes = cfg.limits.max_uri_bytes;
  bool reload = current_ != nullptr;
  if (current_) current_->retired = true;
  current_ = g.get();
  generations_.push_back(std::move(g));
  collectGenerations();
  if (reload) {
    // SPEC §7: an HTTP/2 connection gets GOAWAY; its streams finish, new ones come on a new
    // connection, with the new listener settings.
    for (DownstreamConnection* c = connections_; c;) {
      DownstreamConnection* next = c->next_connection;
      c->onReload();
      c = next;
    }
  }
}

Generation* Worker::pinGeneration() {
  ++current_->active_requests;
  return current_;
}

void Worker::unpinGeneration(Generation* g) {
  if (!g) return;
  --g->active_requests;
  if (g->retired && g->active_requests == 0) collectGenerations();
}

void Worker::collectGenerations() {
  for (auto& g : generations_) {
    if (!g->retired || g->active_requests > 0) continue;
    bool idle = true;
    for (auto& p : g->pools) {
      p->retire();
      idle &= p->liveConnections() == 0;
    }
    if (idle) g->pools.clear();
  }
  generations_.erase(std::remove_if(generations_.begin(), generations_.end(),
                                    [](const std::unique_ptr<Generation>& g) {
                                      return g->retired && g->active_requests == 0 && g->pools.empty();
                                    }),
                     generations_.end());
}

void Worker::poolDrained(UpstreamPool*) {
  // Deferred: the pool is still on the stack of its last connection's close callback.
  if (stopping_) return;
  collect_pending_ = true;
  scheduleDeadline(nowMs());
}

WorkerState& Worker::state(std::string_view key,
                           std::unique_ptr<WorkerState> (*make)(WorkerServices&)) {
  auto it = filter_states_.find(key);
  if (it == filter_states_.end()) it = filter_states_.emplace(std::string(key), make(*this)).first;
  return *it->second;
}

Http1Request* Worker::acquireRequest() {
  ++requests_this_period_;
  return requests_.acquire();
}

void Worker::releaseRequest(Http1Request* r) { requests_.release(r); }

Http2Stream* Worker::acquireStream() {
  ++requests_this_period_;
  return streams_.acquire();
}

void Worker::releaseStream(Http2Stream* s) { streams_.release(s); }

void Worker::deferSend(Http2ServerCodec* codec) {
  if (deferred_sends_.empty()) uv_check_start(&send_check_, onSendCheck);
  deferred_sends_.push_back(codec);
}

void Worker::cancelSend(Http2ServerCodec* codec) {
  for (auto& c : deferred_sends_) {
    if (c == codec) c = nullptr;
  }
}

void Worker::onSendCheck(uv_check_t* h) {
  auto* w = static_cast<Worker*>(h->data);
  // Sends may defer others (a connection's output drained): those wait for the next turn.
  size_t n = w->deferred_sends_.size();
  for (size_t i = 0; i < n; ++i) {
    if (Http2ServerCodec* c = w->deferred_sends_[i]) c->runDeferredSend();
  }
  w->deferred_sends_.erase(w->deferred_sends_.begin(), w->deferred_sends_.begin() + ptrdiff_t(n));
  if (w->deferred_sends_.empty()) uv_check_stop(&w->send_check_);
}

void Worker::onHousekeeping(uv_timer_t* h) {
  static_cast<Worker*>(h->data)->releaseUnusedMemory();
  log::flushAccessLog();
}

void Worker::releaseUnusedMemory() {
  size_t requests = requests_.trim() + streams_.trim();
  released_since_trim_ += requests + SlicePool::local().releaseUnused();
  // What a burst freed (these, closed connections, upstream connections beyond the idle
  // pool) sits in holes of the heap that the allocator keeps resident: a spike would set
  // the process's RSS for good. Trimming walks the heap and hands pages back that the next
  // burst must fault in again, so it waits until this worker has gone quiet (no request
  // began for a whole period) after a release; it then briefly takes every arena's lock,
  // other workers' included, once per burst rather than once a second.
  if (requests_this_period_ == 0 && released_since_trim_ > 0) {
#ifndef __SANITIZE_ADDRESS__
    // Under AddressSanitizer glibc's heap is not the one in use: malloc_trim() would walk
    // an arena that was never set up (a SEGV in mtrim).
    malloc_trim(0);
#endif
    released_since_trim_ = 0;
  }
  requests_this_period_ = 0;
}

void Worker::onConnection(uv_stream_t* server, int status) {
  auto* l = static_cast<Listener*>(server->data);
  if (status != 0) return;
  DownstreamConnection::accept(*l->worker, server, l->listener_index, l->admin);
}

void Worker::addConnection(DownstreamConnection* c) {
  c->next_connection = connections_;
  c->prev_connection = nullptr;
  if (connections_) connections_->prev_connection = c;
  connections_ = c;
  ++connection_count_;
}

void Worker::removeConnection(DownstreamConnection* c) {
  if (c->prev_connection) c->prev_connection->next_connection = c->next_connection;
  else connections_ = c->next_connection;
  if (c->next_connection) c->next_connection->prev_connection = c->prev_connection;
  c->next_connection = c->prev_connection = nullptr;
  --connection_count_;
  if (draining_) maybeFinishDrain();
}

void Worker::scheduleDeadline(uint64_t deadline_ms) {
  if (deadline_ms >= timer_due_ && uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_))) return;
  uint64_t now = nowMs();
  timer_due_ = deadline_ms;
  uv_timer_start(&timer_, onTimer, deadline_ms > now ? deadline_ms - now : 0, 0);
}

void Worker::onTimer(uv_timer_t* h) {
  auto* w = static_cast<Worker*>(h->data);
  w->timer_due_ = UINT64_MAX;
  if (w->collect_pending_) {
    w->collect_pending_ = false;
    w->collectGenerations();
  }
  w->expireDeadlines();
}

void Worker::expireDeadlines() {
  uv_update_time(&loop_);
  uint64_t now = nowMs();
  uint64_t next = UINT64_MAX;
  for (DeadlineList* list : {&header_deadlines_, &idle_deadlines_, &write_deadlines_, &body_deadlines_}) {
    while (DeadlineNode* n = list->front()) {
      if (n->deadline_ms > now) {
        next = std::min(next, n->deadline_ms);
        break;
      }
      DeadlineList::unlink(n);
      static_cast<DownstreamConnection*>(n)->onDeadline();
    }
  }
  if (next != UINT64_MAX) scheduleDeadline(next);
}

void Worker::beginDrain() {
  if (draining_) return;
  draining_ = true;
  for (auto& l : listeners_) {
    if (!l->admin) uv_close(reinterpret_cast<uv_handle_t*>(&l->handle), nullptr);
  }
  // Idle keep-alive connections close now; busy ones after their current response.
  DownstreamConnection* c = connections_;
  while (c) {
    DownstreamConnection* next = c->next_connection;
    c->drain();
    c = next;
  }
  maybeFinishDrain();
}

void Worker::maybeFinishDrain() {
  // The admin worker keeps answering (/health/ready says 503) until the server stops it.
  if (connection_count_ == 0 && !has_admin_listener_) closeAll();
}

void Worker::closeAll() {
  // Re-entered when closing the last connection of a drain: the first call does it all.
  if (closed_) return;
  closed_ = true;
  stopping_ = true;
  DownstreamConnection* c = connections_;
  while (c) {
    DownstreamConnection* next = c->next_connection;
    c->forceClose();
    c = next;
  }
  for (auto& g : generations_) {
    g->retired = true;
    for (auto& p : g->pools) p->retire();
  }
  for (auto& l : listeners_) {
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&l->handle))) {
      uv_close(reinterpret_cast<uv_handle_t*>(&l->handle), nullptr);
    }
  }
  for (auto& [key, state] : filter_states_) state->shutdown();
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    async_ready_ = false;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&housekeeping_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&send_check_), nullptr);
  // The loop ends by itself once the closes above have run their callbacks.
}

}  // namespace gw
