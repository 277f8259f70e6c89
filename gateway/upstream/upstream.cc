#include "gateway/upstream/upstream.h"

#include <algorithm>
#include <cstdio>
#include <cassert>

#include "gateway/http1/chunked.h"
#include "gateway/metrics.h"
#include "gateway/stream_write.h"
#include "gateway/upstream/http2_client.h"
#include "gateway/worker.h"

namespace gw {

// ---------------------------------------------------------------------------------------
// UpstreamPool

UpstreamPool::UpstreamPool(Worker& worker, const UpstreamConfig& config,
                           uint64_t connect_timeout_ms, std::shared_ptr<const TlsClientContext> tls,
                           uint32_t workers)
    : worker_(worker),
      config_(config),
      connect_timeout_ms_(connect_timeout_ms),
      endpoints_(config.endpoints.size()),
      state_(upstreamState(config)),
      tls_(std::move(tls)),
      retry_budget_(workers) {
  for (size_t i = 0; i < endpoints_.size(); ++i) endpoints_[i].label = metrics::labelId(config.endpoints[i].text);
  // Spread workers over endpoints so that N workers do not all start on endpoint 0.
  next_endpoint_ = endpoints_.empty() ? 0 : worker.index() % endpoints_.size();
}

void UpstreamPool::requestStarted(size_t endpoint) {
  Endpoint& ep = endpoints_[endpoint];
  ++ep.active;
  metrics::local().add(metrics::Id::UpstreamEndpointInFlight, {config_.metrics_label, ep.label, 0}, 1);
}

void UpstreamPool::requestEnded(size_t endpoint) {
  Endpoint& ep = endpoints_[endpoint];
  --ep.active;
  metrics::local().add(metrics::Id::UpstreamEndpointInFlight, {config_.metrics_label, ep.label, 0}, -1);
}

UpstreamPool::~UpstreamPool() {
  assert(live_ == 0);
  if (wait_timer_) {
    uv_close(reinterpret_cast<uv_handle_t*>(wait_timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }
}

size_t UpstreamPool::pickEndpoint(size_t avoid, bool* trial) {
  *trial = false;
  size_t n = endpoints_.size();
  int64_t now = monotonicMs();
  if (config_.load_balancing == LoadBalancing::LeastRequest && n > 1) {
    // Power of two choices: two random endpoints, the one with fewer requests in flight
    // on this worker. Cheap, and it avoids the herd that "least of all" causes.
    uint64_t r[2];
    worker_.random128(r);
    size_t a = r[0] % n, b = r[1] % (n - 1);
    if (b >= a) ++b;
    EndpointState& sa = endpointState(a);
    EndpointState& sb = endpointState(b);
    bool ea = sa.eligible(now) && a != avoid, eb = sb.eligible(now) && b != avoid;
    size_t pick = SIZE_MAX;
    if (ea && eb) pick = endpoints_[a].active <= endpoints_[b].active ? a : b;
    else if (ea) pick = a;
    else if (eb) pick = b;
    if (pick != SIZE_MAX && endpointState(pick).admits(now, trial)) return pick;
  }
  // Round robin over the endpoints that admit a request; the avoided one only as a last
  // resort (a retry prefers another endpoint, but one endpoint beats none).
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < n; ++i) {
      size_t e = (next_endpoint_ + i) % n;
      if (pass == 0 && e == avoid && n > 1) continue;
      if (endpointState(e).admits(now, trial)) {
        next_endpoint_ = (e + 1) % n;
        return e;
      }
    }
  }
  return SIZE_MAX;
}

AcquireResult UpstreamPool::acquire(UpstreamHandler* handler, size_t avoid_endpoint,
                                    UpstreamStream** out, bool* trial) {
  *trial = false;
  if (config_.protocol == UpstreamProtocol::Http1 || (config_.protocol == UpstreamProtocol::Auto && !tls_)) {
    return acquireHttp1(handler, avoid_endpoint, SIZE_MAX, out, trial);
  }
  size_t e = pickEndpoint(avoid_endpoint, trial);
  if (e == SIZE_MAX) return AcquireResult::NoEndpoint;
  if (!multiplexed(e)) return acquireHttp1(handler, avoid_endpoint, e, out, trial);
  return acquireHttp2(handler, e, out, trial);
}

bool UpstreamPool::multiplexed(size_t endpoint) const {
  return config_.protocol == UpstreamProtocol::H2 ||
         (config_.protocol == UpstreamProtocol::Auto && tls_ && endpoints_[endpoint].speaks_h2);
}

AcquireResult UpstreamPool::wait(UpstreamHandler* handler) {
  uint32_t pending = state_->pending.fetch_add(1, std::memory_order_relaxed) + 1;
  if (pending > config_.max_pending) {
    state_->pending.fetch_sub(1, std::memory_order_relaxed);
    return AcquireResult::Overflow;
  }
  waiters_.push_back({handler, worker_.nowMs()});
  armWaitTimer(100);
  return AcquireResult::Queued;
}

AcquireResult UpstreamPool::acquireHttp1(UpstreamHandler* handler, size_t avoid_endpoint, size_t picked,
                                         UpstreamStream** out, bool* trial) {
  // Bulkhead: connections in use are counted across workers (idle pooled ones are not: a
  // worker cannot lend its idle connections to another); past max_connections a request
  // waits for one (up to max_pending of them), past both it is refused.
  uint32_t busy = state_->connections.fetch_add(1, std::memory_order_relaxed) + 1;
  if (busy > config_.max_connections) {
    state_->connections.fetch_sub(1, std::memory_order_relaxed);
    if (*trial) endpointState(picked).releaseTrial();
    *trial = false;
    return wait(handler);
  }
  size_t e = picked != SIZE_MAX ? picked : pickEndpoint(avoid_endpoint, trial);
  if (e == SIZE_MAX) {
    state_->connections.fetch_sub(1, std::memory_order_relaxed);
    return AcquireResult::NoEndpoint;
  }
  UpstreamConnection* c = endpoints_[e].idle;
  if (c) {
    removeIdle(c);
    c->reused_ = true;
    c->state_ = UpstreamConnection::State::Active;
    c->clearDeadline();
  } else {
    c = new UpstreamConnection(*this, e);
    ++live_;
    c->connect();
  }
  c->busy_ = true;
  c->handler_ = handler;
  c->response_bytes_ = 0;
  c->keep_alive_ = true;
  c->awaiting_response_ = false;
  c->response_.reset(worker_.limits().max_response_head_bytes);
  *out = c;
  return AcquireResult::Connection;
}

UpstreamConnection* UpstreamPool::roomyConnection(size_t endpoint) const {
  // The first with room: streams gather on few connections, as the upstream prefers.
  for (UpstreamConnection* c : endpoints_[endpoint].multiplexed) {
    if (c->state_ != UpstreamConnection::State::Closing && c->h2_->hasCapacity()) return c;
  }
  return nullptr;
}

bool UpstreamPool::anyRoom() const {
  for (size_t e = 0; e < endpoints_.size(); ++e) {
    if (endpoints_[e].idle || roomyConnection(e)) return true;
  }
  return false;
}

AcquireResult UpstreamPool::acquireHttp2(UpstreamHandler* handler, size_t e, UpstreamStream** out,
                                         bool* trial) {
  UpstreamConnection* c = roomyConnection(e);
  if (!c) {
    // A connection counts against max_connections for its whole life; streams waiting for
    // room count against max_pending (SPEC §8).
    uint32_t busy = state_->connections.fetch_add(1, std::memory_order_relaxed) + 1;
    if (busy > config_.max_connections) {
      state_->connections.fetch_sub(1, std::memory_order_relaxed);
      if (*trial) endpointState(e).releaseTrial();
      *trial = false;
      return wait(handler);
    }
    c = new UpstreamConnection(*this, e);
    ++live_;
    c->busy_ = true;
    c->startHttp2();
    endpoints_[e].multiplexed.push_back(c);
    c->connect();
  }
  *out = c->h2_->open(handler);
  return AcquireResult::Connection;
}

void UpstreamPool::becameHttp2(UpstreamConnection* c) {
  endpoints_[c->endpoint_index_].multiplexed.push_back(c);
}

Http2UpstreamStream* UpstreamPool::acquireStream() { return free_streams_.acquire(); }

void UpstreamPool::releaseStream(Http2UpstreamStream* s) { free_streams_.release(s); }

void UpstreamPool::countRequest() { retry_budget_.countRequest(worker_.nowMs()); }

bool UpstreamPool::takeRetry() { return retry_budget_.takeRetry(worker_.nowMs()); }

void UpstreamPool::cancelWait(UpstreamHandler* handler) {
  for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
    if (it->handler == handler) {
      waiters_.erase(it);
      state_->pending.fetch_sub(1, std::memory_order_relaxed);
      return;
    }
  }
}

void UpstreamPool::armWaitTimer(uint64_t ms) {
  if (waiters_.empty()) return;
  if (!wait_timer_) {
    wait_timer_ = new uv_timer_t;
    uv_timer_init(worker_.loop(), wait_timer_);
    wait_timer_->data = this;
  }
  uv_timer_start(wait_timer_, onWaitTimer, ms, 0);
}

void UpstreamPool::wakeWaiter() {
  // Deferred to the timer so a waiter never runs inside another request's callbacks.
  if (!waiters_.empty()) armWaitTimer(0);
}

void UpstreamPool::onWaitTimer(uv_timer_t* t) noexcept {
  auto* pool = static_cast<UpstreamPool*>(t->data);
  uint64_t now = pool->worker_.nowMs();
  // Expired waiters get their 503; the first waiter retries if a connection is free.
  std::vector<Waiter> expired;
  auto& w = pool->waiters_;
  while (!w.empty() && now - w.front().since_ms >= pool->connect_timeout_ms_) {
    expired.push_back(w.front());
    w.erase(w.begin());
    pool->state_->pending.fetch_sub(1, std::memory_order_relaxed);
  }
  bool capacity = pool->state_->connections.load(std::memory_order_relaxed) < pool->config_.max_connections ||
                  pool->anyRoom();
  UpstreamHandler* next = nullptr;
  if (capacity && !w.empty()) {
    next = w.front().handler;
    w.erase(w.begin());
    pool->state_->pending.fetch_sub(1, std::memory_order_relaxed);
  }
  pool->armWaitTimer(100);
  for (auto& e : expired) e.handler->onUpstreamAvailable(true);
  if (next) next->onUpstreamAvailable(false);
}

void UpstreamPool::release(UpstreamConnection* c) {
  c->handler_ = nullptr;
  bool reusable = c->keep_alive_ && c->response_.complete() && c->out_.empty() &&
                  c->writing_bytes_ == 0 && c->in_.unconsumed() == 0 && !retired_ &&
                  c->state_ == UpstreamConnection::State::Active;
  if (!reusable || endpoints_[c->endpoint_index_].idle_count >= config_.keepalive.max_idle) {
    c->close();
    return;
  }
  c->becomeIdle();
}

void UpstreamPool::retire() {
  retired_ = true;
  if (wait_timer_ && waiters_.empty()) {
    uv_close(reinterpret_cast<uv_handle_t*>(wait_timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    wait_timer_ = nullptr;
  }
  for (auto& ep : endpoints_) {
    while (ep.idle) {
      UpstreamConnection* c = ep.idle;
      removeIdle(c);
      c->close();
    }
    // HTTP/2 connections close once their last stream is done (streamsFreed).
    std::vector<UpstreamConnection*> unused;
    for (UpstreamConnection* c : ep.multiplexed) {
      if (c->h2_->streams() == 0) unused.push_back(c);
    }
    for (UpstreamConnection* c : unused) c->close();
  }
}

void UpstreamPool::pushIdle(UpstreamConnection* c) {
  Endpoint& ep = endpoints_[c->endpoint_index_];
  c->idle_prev_ = nullptr;
  c->idle_next_ = ep.idle;
  if (ep.idle) ep.idle->idle_prev_ = c;
  ep.idle = c;
  ++ep.idle_count;
}

void UpstreamPool::removeIdle(UpstreamConnection* c) {
  Endpoint& ep = endpoints_[c->endpoint_index_];
  if (c->idle_prev_) {
    c->idle_prev_->idle_next_ = c->idle_next_;
  } else {
    ep.idle = c->idle_next_;
  }
  if (c->idle_next_) c->idle_next_->idle_prev_ = c->idle_prev_;
  c->idle_next_ = c->idle_prev_ = nullptr;
  --ep.idle_count;
}

void UpstreamPool::releaseBusy(UpstreamConnection* c) {
  if (!c->busy_) return;
  c->busy_ = false;
  state_->connections.fetch_sub(1, std::memory_order_relaxed);
  wakeWaiter();
}

void UpstreamPool::connectionClosed() {
  --live_;
  if (live_ == 0 && retired_) worker_.poolDrained(this);
}

// ---------------------------------------------------------------------------------------
// UpstreamConnection

UpstreamConnection::UpstreamConnection(UpstreamPool& pool, size_t endpoint_index)
    : pool_(pool), endpoint_index_(endpoint_index) {
  uv_tcp_init(pool.worker().loop(), &tcp_);
  uv_timer_init(pool.worker().loop(), &timer_);
  tcp_.data = this;
  timer_.data = this;
  connect_req_.data = this;
  write_req_.data = this;
}

const SocketAddress& UpstreamConnection::endpoint() const {
  return pool_.config().endpoints[endpoint_index_];
}

void UpstreamConnection::connect() {
  state_ = State::Connecting;
  if (pool_.tls_) tls_ = std::make_unique<TlsSession>(pool_.tls_, endpoint().text);
  uv_tcp_nodelay(&tcp_, 1);
  int rc = uv_tcp_connect(&connect_req_, &tcp_, endpoint().sa(), onConnectCb);
  if (rc != 0) {
    // Report asynchronously: the caller has not attached its handler yet.
    setDeadline(0);
    connect_failed_ = true;
    return;
  }
  setDeadline(pool_.connect_timeout_ms_);
}

void UpstreamConnection::onConnectCb(uv_connect_t* req, int status) noexcept {
  static_cast<UpstreamConnection*>(req->data)->onConnected(status);
}

void UpstreamConnection::onConnected(int status) {
  if (state_ == State::Closing) return;
  clearDeadline();
  if (status != 0) {
    metrics::local().add(metrics::Id::UpstreamConnectFailures, {pool_.config().metrics_label, 0, 0});
    fail(status == UV_ETIMEDOUT ? UpstreamError::ConnectTimeout : UpstreamError::ConnectFailed);
    return;
  }
  state_ = State::Active;
  startRead();
  if (response_timeout_pending_) armResponseTimer();
  if (h2_) h2_->restartDeadlines();
  if (tls_ && !tls_->start()) {
    fail(UpstreamError::TlsFailed);
    return;
  }
  flush();
}

void UpstreamConnection::sendHead(const UpstreamRequestHead& head) {
  size_t before = out_.size();
  // The head outlives every attempt: sent from where it is, and copied only if the kernel
  // does not take it at once (flush() internalizes). An endpoint's Host is known only now.
  out_.appendViews(*head.http1);
  if (head.host_from_endpoint) {
    out_.appendFieldLine("Host", endpoint().text);
    out_.append("\r\n", 2);
  }
  request_head_bytes_ = out_.size() - before;
  request_tail_bytes_ = 0;
  chunked_request_ = head.chunked;
  unsent_chunks_.clear();
  chunks_unsent_ = head.chunked;
  response_.setHeadRequest(head.head_request);
  response_timeout_ms_ = head.response_timeout_ms;
  if (!head.body) requestComplete();
}

void UpstreamConnection::sendBody(const char* data, size_t len) {
  if (chunked_request_) {
    if (chunks_unsent_) unsent_chunks_.push_back(uint32_t(len));
    http1::appendChunk(out_, data, len);
  } else {
    out_.appendExternal(data, len);
  }
}

void UpstreamConnection::endRequest(const HeaderList* trailers) {
  if (chunked_request_) {
    size_t before = out_.size();
    // Trailer fields go after the last chunk; a body with a Content-Length has nowhere
    // to put them (RFC 9110 §6.5: they may be dropped).
    out_.append("0\r\n", 3);
    if (trailers) {
      for (const Header& h : *trailers) out_.appendFieldLine(h.name, h.value);
    }
    out_.append("\r\n", 2);
    request_tail_bytes_ = out_.size() - before;
  }
  requestComplete();
}

bool UpstreamConnection::takeUnsentBody(Buffer& to) {
  // The body without its head and without the last chunk and trailers; chunked, without
  // its framing (the next attempt may speak HTTP/2).
  out_.drain(std::min(request_head_bytes_, out_.size()));
  size_t body = out_.size() - std::min(request_tail_bytes_, out_.size());
  bool whole = true;
  if (!chunked_request_) {
    to.moveFront(out_, body);
  } else if (!chunks_unsent_) {
    whole = false;
  } else {
    for (uint32_t len : unsent_chunks_) {
      char hex[16];
      out_.drain(size_t(std::snprintf(hex, sizeof hex, "%x", len)) + 2);
      to.moveFront(out_, len);
      out_.drain(2);
    }
  }
  out_.clear();
  unsent_chunks_.clear();
  return whole;
}

void UpstreamConnection::resendBody(Buffer& from) {
  if (from.empty()) return;
  if (!chunked_request_) {
    out_.moveFrom(from);
    return;
  }
  if (chunks_unsent_) unsent_chunks_.push_back(uint32_t(from.size()));
  out_.appendHex(from.size());
  out_.append("\r\n", 2);
  out_.moveFrom(from);
  out_.append("\r\n", 2);
}

void UpstreamConnection::release() { pool_.release(this); }

size_t UpstreamConnection::maxResponseHeadBytes() const { return pool_.worker().limits().max_response_head_bytes; }

uint64_t UpstreamConnection::nowMs() const { return uv_now(timer_.loop); }

void UpstreamConnection::deadlineAt(uint64_t due_ms) {
  // The earliest of the streams' deadlines: the timer then finds the others. While
  // connecting the connect timeout rules (onTimer fails the connection then), and the
  // streams' deadlines start over once connected, as HTTP/1.1's response timeout does.
  if (state_ == State::Connecting) return;
  if (deadline_ms_ != 0 && deadline_ms_ <= due_ms) return;
  uint64_t now = nowMs();
  setDeadline(due_ms > now ? due_ms - now : 0);
}

void UpstreamConnection::startHttp2() { h2_ = std::make_unique<Http2ClientSession>(*this); }

bool UpstreamConnection::onHandshake() {
  bool h2 = tls_->info().alpn == "h2";
  if (pool_.config().protocol == UpstreamProtocol::Auto) pool_.endpoints_[endpoint_index_].speaks_h2 = h2;
  if (h2_ && !h2) {
    // `h2` needs ALPN h2; under `auto` the endpoint changed its mind since the last
    // handshake: its streams, never sent, go again over HTTP/1.1.
    fail(pool_.config().protocol == UpstreamProtocol::Auto ? UpstreamError::Refused : UpstreamError::NoHttp2);
    return false;
  }
  if (!h2_ && h2) {
    // `auto`, first contact: the request queued here as HTTP/1.1 goes again, as HTTP/2, on
    // this very connection (nothing of it was sent).
    UpstreamHandler* h = handler_;
    handler_ = nullptr;
    startHttp2();
    pool_.becameHttp2(this);
    if (h) h->onUpstreamError(UpstreamError::Refused, false, false);
    out_.clear();
    if (state_ == State::Closing) return false;
    if (h2_->streams() == 0) streamsFreed();
  }
  flush();
  return state_ != State::Closing;
}

void UpstreamConnection::streamsFreed() {
  pool_.wakeWaiter();
  if (state_ == State::Closing || !h2_ || h2_->streams() > 0) return;
  if (h2_->finished() || pool_.retired_) {
    close();
    return;
  }
  idle_since_ms_ = nowMs();
  deadlineAt(idle_since_ms_ + uint64_t(pool_.config().keepalive.idle_timeout.count()));
}

void UpstreamConnection::requestComplete() {
  if (response_.headComplete()) return;  // answered early: its body has no timeout to meet
  response_timeout_pending_ = true;
  if (state_ != State::Connecting) armResponseTimer();
}

void UpstreamConnection::armResponseTimer() {
  response_timeout_pending_ = false;
  awaiting_response_ = true;
  if (response_timeout_ms_ > 0) {
    setDeadline(response_timeout_ms_);
  } else {
    clearDeadline();
  }
}

void UpstreamConnection::flush() {
  if (state_ == State::Closing) return;
  if (state_ == State::Connecting) {
    out_.internalize();  // the caller's input block is about to be reused
    return;
  }
  if (h2_ && !h2_->produce()) {
    close();
    return;
  }
  // TLS: the session queues plaintext until its handshake is done, then encrypts it; but
  // where ALPN decides the protocol, nothing is queued before it has.
  bool hold = tls_ && tls_->state() == TlsState::Handshaking && pool_.config().protocol != UpstreamProtocol::Http1;
  if (hold) out_.internalize();
  if (!hold && !out_.empty() && chunks_unsent_) {
    chunks_unsent_ = false;  // the request starts going out: it cannot be taken back
    unsent_chunks_.clear();
  }
  if (tls_ && !out_.empty() && !hold && !tls_->encrypt(out_)) {
    fail(UpstreamError::Reset);
    return;
  }
  switch (writeBuffer(reinterpret_cast<uv_stream_t*>(&tcp_), &write_req_, wire(), &writing_bytes_,
                      onWriteCb)) {
    case WriteResult::Done:
      if (handler_) handler_->onUpstreamDrained();
      if (h2_) h2_->notifyDrained();
      break;
    case WriteResult::Pending:
      // Until the request is complete the response timeout does not run, so an upstream
      // that stops reading the body would hold the exchange forever: the same timeout
      // bounds each wait for it to take more (nginx's proxy_send_timeout).
      if (!awaiting_response_ && !response_.headComplete() && response_timeout_ms_ > 0) {
        setDeadline(response_timeout_ms_);
      }
      break;
    case WriteResult::Failed:
      fail(UpstreamError::Reset);
      break;
  }
}

void UpstreamConnection::onWriteCb(uv_write_t* req, int status) noexcept {
  static_cast<UpstreamConnection*>(req->data)->onWritten(status);
}

void UpstreamConnection::onWritten(int status) {
  size_t done = writing_bytes_;
  writing_bytes_ = 0;
  if (state_ == State::Closing) return;
  if (status != 0) {
    fail(UpstreamError::Reset);
    return;
  }
  wire().drain(done);
  if (!awaiting_response_ && state_ == State::Active) clearDeadline();  // the upstream took it
  flush();
}

void UpstreamConnection::startRead() {
  if (reading_ || read_paused_) return;
  reading_ = uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), onAllocCb, onReadCb) == 0;
}

void UpstreamConnection::pauseReading() {
  read_paused_ = true;
  if (reading_) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    reading_ = false;
  }
}

void UpstreamConnection::resumeReading() {
  if (!read_paused_) return;
  read_paused_ = false;
  if (state_ == State::Active) {
    startRead();
    // Bytes parsed-but-unprocessed never remain (we parse whole reads), so nothing to replay.
  }
}

void UpstreamConnection::onAllocCb(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
  auto* c = static_cast<UpstreamConnection*>(h->data);
  size_t n = 0;
  if (c->tls_) {
    buf->base = TlsSession::scratchInput(&n);
    buf->len = n;
    return;
  }
  if (c->response_.headComplete() || c->large_responses_ || c->h2_) c->in_.reserveBulk();
  char* p = c->in_.writable(&n, c->inputLimit());
  buf->base = p;
  buf->len = p ? n : 0;
}

void UpstreamConnection::onReadCb(uv_stream_t* s, ssize_t nread, const uv_buf_t*) noexcept {
  static_cast<UpstreamConnection*>(s->data)->onRead(nread);
}

void UpstreamConnection::onRead(ssize_t nread) {
  if (state_ == State::Closing) return;
  if (nread == 0) {
    if (in_.length() == 0) in_.release();
    return;
  }
  if (nread < 0 && h2_) {
    // Streams cut short fail; a connection with none simply ends.
    fail(UpstreamError::Reset);
    return;
  }
  if (nread < 0) {
    if (state_ == State::Idle) {  // the upstream closed a pooled connection: forget it
      pool_.removeIdle(this);
      close();
      return;
    }
    if (!tunnel_ && nread == UV_EOF && endsAtEof()) return;
    fail(UpstreamError::Reset);
    return;
  }
  if (tls_ && state_ == State::Idle) {
    // TLS records may arrive on an idle connection (session tickets, key updates) without
    // any plaintext; only application bytes mean the connection is out of step.
    size_t scratch_len;
    TlsFeedResult res = tls_->feed(TlsSession::scratchInput(&scratch_len), size_t(nread), in_,
                                   inputLimit());
    if (tls_->wantsWrite()) flush();
    if (state_ == State::Closing) return;
    if (res.plaintext == 0 && tls_->state() == TlsState::Established && !tls_->peerClosed()) {
      in_.release();
      tls_->releaseIdleMemory();
      return;
    }
  }
  if (state_ == State::Idle || (!handler_ && !h2_)) {
    // Bytes nobody asked for: the connection is out of step; drop it.
    if (state_ == State::Idle) pool_.removeIdle(this);
    close();
    return;
  }
  if (tls_) {
    size_t scratch_len;
    const char* data = TlsSession::scratchInput(&scratch_len);
    size_t len = size_t(nread);
    // Decrypt everything the read brought, parsing as the block fills.
    for (;;) {
      bool handshaken = tls_->state() != TlsState::Handshaking;
      TlsFeedResult res = tls_->feed(data, len, in_, inputLimit());
      data = nullptr;
      len = 0;
      if (tls_->state() == TlsState::Error) {
        // Only a failed handshake is the upstream being unusable (502 "TLS handshake");
        // an error on an established session is a connection cut short.
        fail(response_.headComplete() || handshaken ? UpstreamError::Reset : UpstreamError::TlsFailed);
        return;
      }
      // ALPN decides before anything is encrypted for the upstream.
      if (!handshaken && tls_->state() == TlsState::Established && !onHandshake()) return;
      if (tls_->wantsWrite()) flush();  // handshake messages
      if (state_ == State::Closing) return;
      if (res.plaintext > 0) {
        if (h2_) {
          receiveHttp2();
          if (state_ == State::Closing) return;
        } else {
          parseInput();
          if (state_ == State::Closing || !handler_) return;
        }
      }
      if (!res.sink_full) break;
      if (!h2_ && in_.unconsumed() == in_.capacity() && !response_.headComplete()) {
        fail(UpstreamError::HeadTooLarge);  // parseInput() took nothing from a full block
        return;
      }
    }
    if (tls_->peerClosed() && (h2_ || (!response_.complete() && !endsAtEof()))) fail(UpstreamError::Reset);
    return;
  }
  in_.added(size_t(nread));
  response_bytes_ += uint64_t(nread);
  if (h2_) {
    receiveHttp2();
  } else {
    parseInput();
  }
}

void UpstreamConnection::receiveHttp2() {
  // Everything is consumed: nghttp2 keeps what it needs of a partial frame itself. Body
  // bytes handed on are views into the block, valid until receive() returns.
  if (!h2_->receive(in_.data() + in_.consumed(), in_.unconsumed())) {
    close();
    return;
  }
  if (state_ == State::Closing) return;
  in_.consume(in_.unconsumed());
  in_.compact();
  if (h2_->finished()) close();
}

void UpstreamConnection::parseInput() {
  if (tunnel_) {
    handler_->onUpstreamTunnelData(in_.data() + in_.consumed(), in_.unconsumed());
    if (!handler_) return;
    in_.consume(in_.unconsumed());
    handler_->onUpstreamReadDone();
    if (handler_) in_.compact();
    return;
  }
  switch (response_.parse(in_)) {
    case ResponseParser::Status::More:
      break;
    case ResponseParser::Status::Complete:
      // Anything after a complete response is a protocol violation.
      if (in_.unconsumed() > 0) keep_alive_ = false;
      in_.consume(in_.unconsumed());
      break;
    case ResponseParser::Status::Upgrade:
      startTunnel();
      return;
    case ResponseParser::Status::Stopped:
      return;
    case ResponseParser::Status::HeadTooLarge:
      fail(UpstreamError::HeadTooLarge);
      return;
    case ResponseParser::Status::Malformed:
      fail(UpstreamError::BadResponse);
      return;
  }
  if (!handler_) return;
  if (response_.headComplete()) {
    // The head has been handed over: the block can be reused from the start.
    handler_->onUpstreamReadDone();
    if (!handler_) return;
    in_.compact();
  }
  if (response_.complete()) completeResponse();
}

bool UpstreamConnection::endsAtEof() {
  if (!response_.finishAtEof()) return false;  // only a close-delimited body ends so
  keep_alive_ = false;
  if (handler_) handler_->onUpstreamReadDone();
  completeResponse();
  return true;
}

void UpstreamConnection::completeResponse() {
  large_responses_ = response_bytes_ > kSliceSize;
  if (handler_) handler_->onUpstreamComplete();
}

void UpstreamConnection::startTunnel() {
  // Switched protocols: what follows the head is the tunnel's first bytes.
  tunnel_ = true;
  keep_alive_ = false;
  clearDeadline();
  if (!handler_) return;
  if (in_.unconsumed() > 0) {
    handler_->onUpstreamTunnelData(in_.data() + in_.consumed(), in_.unconsumed());
    if (!handler_) return;
    in_.consume(in_.unconsumed());
  }
  handler_->onUpstreamReadDone();
  if (handler_) in_.compact();
}

size_t UpstreamConnection::inputLimit() const {
  // Room for the largest head accepted and one slice more, so that a head just below the
  // limit still has its terminator and the first body bytes read with it.
  return pool_.worker().limits().max_response_head_bytes + kSliceSize;
}

bool UpstreamConnection::onResponseHead(UpstreamResponseHead& head) {
  clearDeadline();
  keep_alive_ = head.keep_alive;
  if (handler_) handler_->onUpstreamHead(head);
  return handler_ != nullptr;
}

void UpstreamConnection::onResponseTrailers(HeaderList& trailers) {
  if (handler_) handler_->onUpstreamTrailers(trailers);
}

void UpstreamConnection::onResponseBody(const char* data, size_t len) {
  if (handler_) handler_->onUpstreamBody(data, len);
}

void UpstreamConnection::setDeadline(uint64_t timeout_ms) {
  uint64_t due = uv_now(timer_.loop) + timeout_ms;
  deadline_ms_ = due == 0 ? 1 : due;
  if (timer_due_ms_ == 0 || timer_due_ms_ > deadline_ms_) {
    uv_timer_start(&timer_, onTimerCb, timeout_ms, 0);
    timer_due_ms_ = deadline_ms_;
  }
}

void UpstreamConnection::onTimerCb(uv_timer_t* t) noexcept {
  auto* c = static_cast<UpstreamConnection*>(t->data);
  c->timer_due_ms_ = 0;
  if (c->deadline_ms_ == 0) return;  // cleared since: nothing is due
  uint64_t now = uv_now(t->loop);
  if (now < c->deadline_ms_) {  // a later deadline replaced the one the timer ran for
    uv_timer_start(t, onTimerCb, c->deadline_ms_ - now, 0);
    c->timer_due_ms_ = c->deadline_ms_;
    return;
  }
  c->deadline_ms_ = 0;
  c->onTimer();
}

void UpstreamConnection::onTimer() {
  switch (state_) {
    case State::Connecting:
      metrics::local().add(metrics::Id::UpstreamConnectFailures, {pool_.config().metrics_label, 0, 0});
      fail(connect_failed_ ? UpstreamError::ConnectFailed : UpstreamError::ConnectTimeout);
      break;
    case State::Active:
      if (h2_) {
        h2_->onTimer(nowMs());
        if (state_ == State::Active && h2_->streams() == 0) {
          uint64_t idle_due = idle_since_ms_ + uint64_t(pool_.config().keepalive.idle_timeout.count());
          if (nowMs() >= idle_due) {
            close();
          } else {
            deadlineAt(idle_due);
          }
        }
        break;
      }
      fail(response_.headComplete() ? UpstreamError::Reset : UpstreamError::ResponseTimeout);
      break;
    case State::Idle:
      pool_.removeIdle(this);
      close();
      break;
    case State::Closing:
      break;
  }
}

void UpstreamConnection::becomeIdle() {
  pool_.releaseBusy(this);
  state_ = State::Idle;
  response_timeout_pending_ = false;
  awaiting_response_ = false;
  in_.release();
  if (tls_) tls_->releaseIdleMemory();
  pool_.pushIdle(this);
  read_paused_ = false;
  startRead();  // notice the upstream closing it
  setDeadline(uint64_t(pool_.config().keepalive.idle_timeout.count()));
}

void UpstreamConnection::fail(UpstreamError e) {
  if (h2_) {
    h2_->failAll(e);
    close();
    return;
  }
  UpstreamHandler* h = handler_;
  bool started = response_.headComplete();
  handler_ = nullptr;
  close();
  if (h) h->onUpstreamError(e, started, reused_);
}

void UpstreamConnection::abort() {
  handler_ = nullptr;
  if (state_ == State::Idle) pool_.removeIdle(this);
  close();
}

void UpstreamConnection::close() {
  if (state_ == State::Closing) return;
  state_ = State::Closing;
  handler_ = nullptr;
  if (h2_) {
    h2_->failAll(UpstreamError::Reset);  // no stream is left waiting on a closed connection
    auto& list = pool_.endpoints_[endpoint_index_].multiplexed;
    list.erase(std::remove(list.begin(), list.end(), this), list.end());
  }
  pool_.releaseBusy(this);
  uv_timer_stop(&timer_);
  pending_closes_ = 2;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onCloseCb);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onCloseCb);
}

void UpstreamConnection::onCloseCb(uv_handle_t* h) noexcept {
  auto* c = static_cast<UpstreamConnection*>(h->data);
  if (--c->pending_closes_ > 0) return;
  UpstreamPool& pool = c->pool_;
  delete c;
  pool.connectionClosed();
}

}  // namespace gw
