// Connections to upstream endpoints and the per-worker keep-alive pool.
//
// Contract:
// - An UpstreamPool belongs to one worker and one configuration Generation; all its
//   connections live on that worker's loop.
// - acquire() hands out a connection that is either idle-and-connected (reused) or
//   connecting; the caller writes its request into out() at once (it is sent when the
//   connection is up) and gets the response through its UpstreamHandler.
// - A connection with a handler calls exactly one terminal callback: onUpstreamComplete()
//   or onUpstreamError(). After either, the handler MUST call release() (complete) or
//   nothing (error: the connection closes itself) and MUST NOT touch it again.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include "gateway/buffer.h"
#include "gateway/config/config.h"
#include "gateway/upstream/endpoint_state.h"
#include "gateway/http1/response_parser.h"
#include "gateway/upstream/retry_budget.h"
#include "gateway/tls/tls_session.h"

namespace gw {

class Worker;
class UpstreamPool;

enum class UpstreamError {
  // The two connect errors leave out() as it was queued: nothing reached the upstream.
  ConnectFailed,    // refused, unreachable
  ConnectTimeout,
  TlsFailed,        // the TLS handshake failed (e.g. a certificate not trusted): connected,
                    // but not to an upstream we can talk to
  ResponseTimeout,  // no response head within the timeout
  Reset,            // closed or reset before a complete response
  BadResponse,      // not a response every HTTP/1.1 parser reads the same way
  HeadTooLarge,     // no complete head within limits.max_response_header_bytes
};

class UpstreamHandler {
 public:
  virtual ~UpstreamHandler() = default;
  virtual void onUpstreamHead(UpstreamResponseHead& head) = 0;
  virtual void onUpstreamBody(const char* data, size_t len) = 0;
  // The response is complete. The connection can be released now.
  virtual void onUpstreamComplete() = 0;
  // After each read was parsed: bytes handed to onUpstreamBody() are valid until return.
  virtual void onUpstreamReadDone() = 0;
  // Terminal. `reused`: the connection came from the pool (the request may be retried
  // if nothing of the response arrived).
  virtual void onUpstreamError(UpstreamError e, bool response_started, bool reused) = 0;
  // The request bytes queued in out() fell below the low watermark.
  virtual void onUpstreamDrained() = 0;
  // A request queued by acquire() (bulkhead full) may try again; or, with `expired`, it
  // waited longer than the connect timeout.
  virtual void onUpstreamAvailable(bool expired) = 0;
  // After a 101 the connection is a byte tunnel: raw bytes from the upstream, valid until
  // onUpstreamReadDone() returns. Its end is reported as onUpstreamError(Reset, true, ..).
  virtual void onUpstreamTunnelData(const char* data, size_t len) = 0;
};

enum class AcquireResult {
  Connection,  // *out is set
  Queued,      // onUpstreamAvailable() follows
  NoEndpoint,  // every endpoint unhealthy or its breaker open: 503 at once
  Overflow,    // max_connections and max_pending both reached: 503 at once
};

class UpstreamConnection final : private ResponseParser::Sink {
 public:
  Buffer& out() { return out_; }
  // Sends what is in out(); safe to call while connecting (sent once connected).
  void flush();
  // Before the request is queued: its response timeout, and whether it is a HEAD.
  void expectResponse(uint64_t timeout_ms, bool head_request);
  // The whole request (head and body) is queued: the response timeout runs from now (from
  // the connect if still connecting). A client slow to send its body is not the upstream's
  // fault, so the timer must not run while the body arrives.
  void requestComplete();
  void pauseReading();
  void resumeReading();
  bool reused() const { return reused_; }
  // Request bytes not yet on the wire (encrypted ones included).
  size_t pendingBytes() const { return out_.size() + (tls_ ? tls_->output().size() : 0); }
  const SocketAddress& endpoint() const;
  size_t endpointIndex() const { return endpoint_index_; }
  // Detaches the handler and closes (the downstream went away or gave up).
  void abort();

 private:
  friend class UpstreamPool;
  enum class State { Connecting, Idle, Active, Closing };

  UpstreamConnection(UpstreamPool& pool, size_t endpoint_index);
  void connect();
  void close();
  void startRead();
  void onConnected(int status);
  void onRead(ssize_t nread);
  void parseInput();
  Buffer& wire() { return tls_ ? tls_->output() : out_; }
  void onWritten(int status);
  void onTimer();
  // One deadline at a time (connect, response or keep-alive idle), kept lazily: the libuv
  // timer is re-armed only when the new deadline is earlier than the one it runs for, and
  // clearing leaves it running (it finds nothing due and stops). A keep-alive connection
  // reused request after request thus touches libuv's timer heap about once per timeout
  // period instead of four times per request.
  void setDeadline(uint64_t timeout_ms);
  void clearDeadline() { deadline_ms_ = 0; }
  void fail(UpstreamError e);
  void becomeIdle();

  static void onConnectCb(uv_connect_t* req, int status) noexcept;
  static void onAllocCb(uv_handle_t* h, size_t hint, uv_buf_t* buf) noexcept;
  static void onReadCb(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void onWriteCb(uv_write_t* req, int status) noexcept;
  static void onTimerCb(uv_timer_t* t) noexcept;
  static void onCloseCb(uv_handle_t* h) noexcept;
  void armResponseTimer();

  bool onResponseHead(UpstreamResponseHead& head) override;
  void onResponseBody(const char* data, size_t len) override;
  void startTunnel();
  void completeResponse();
  bool endsAtEof();
  size_t inputLimit() const;

  uv_tcp_t tcp_{};
  uv_timer_t timer_{};
  uint64_t deadline_ms_ = 0;   // loop time the current deadline falls due; 0: none
  uint64_t timer_due_ms_ = 0;  // loop time timer_ fires; 0: not running
  std::unique_ptr<TlsSession> tls_;  // upstreams with `tls`
  uv_connect_t connect_req_{};
  uv_write_t write_req_{};
  UpstreamPool& pool_;
  size_t endpoint_index_;
  UpstreamHandler* handler_ = nullptr;
  State state_ = State::Connecting;
  ResponseParser response_{*this};
  InputBlock in_;
  Buffer out_;
  size_t writing_bytes_ = 0;  // in the write in flight
  int pending_closes_ = 0;
  bool reading_ = false;
  bool read_paused_ = false;
  bool reused_ = false;
  bool keep_alive_ = true;
  bool tunnel_ = false;  // switched protocols: bytes pass through unparsed
  bool busy_ = false;    // counted in the upstream's connections in use (bulkhead)
  // The previous response did not fit one slice: read the next in bulk from its first
  // byte, so that a 16 KiB answer and its head take one read (and one client write), not two.
  bool large_responses_ = false;
  uint64_t response_bytes_ = 0;  // read so far of the current response
  bool connect_failed_ = false;  // uv_tcp_connect refused at once; reported from the timer
  bool response_timeout_pending_ = false;  // armed once connected
  bool awaiting_response_ = false;        // the response timeout runs
  uint64_t response_timeout_ms_ = 0;
  UpstreamConnection* idle_next_ = nullptr;  // pool's idle stack
  UpstreamConnection* idle_prev_ = nullptr;
  uint64_t idle_since_ms_ = 0;
};

class UpstreamPool {
 public:
  // `workers`: how many workers have a pool for this upstream (they share its retry floor).
  UpstreamPool(Worker& worker, const UpstreamConfig& config, uint64_t connect_timeout_ms,
               std::shared_ptr<const TlsClientContext> tls, uint32_t workers);
  ~UpstreamPool();
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // Picks an endpoint among those that are healthy and whose breaker admits a request
  // (round robin, or least_request: the better of two random choices), avoiding
  // `avoid_endpoint` when another qualifies (a retry goes elsewhere), and gives a pooled
  // connection to it or opens one. A failed connect is reported through the handler.
  // `*trial` tells the caller it carries a half-open breaker's trial request.
  AcquireResult acquire(UpstreamHandler* handler, size_t avoid_endpoint, UpstreamConnection** out,
                        bool* trial);
  // Withdraws a handler queued by acquire().
  void cancelWait(UpstreamHandler* handler);
  EndpointState& endpointState(size_t index) { return *state_->endpoints[index]; }
  UpstreamState& state() { return *state_; }
  // Per-worker count of requests in flight per endpoint, for least_request.
  // Also gateway_upstream_endpoint_in_flight, which /status shows per endpoint.
  void requestStarted(size_t endpoint);
  void requestEnded(size_t endpoint);
  // The retry budget (retry_budget.h), so that retries cannot multiply an outage.
  void countRequest();
  bool takeRetry();
  // Gives a connection whose response is complete back to the pool (or closes it when it
  // cannot be reused or the pool is full).
  void release(UpstreamConnection* c);
  // Closes idle connections and makes later releases close theirs.
  void retire();
  const UpstreamConfig& config() const { return config_; }
  Worker& worker() { return worker_; }
  size_t liveConnections() const { return live_; }

 private:
  friend class UpstreamConnection;
  void pushIdle(UpstreamConnection* c);
  void removeIdle(UpstreamConnection* c);
  void connectionClosed();
  void releaseBusy(UpstreamConnection* c);
  size_t pickEndpoint(size_t avoid, bool* trial);
  void wakeWaiter();
  void armWaitTimer(uint64_t ms);
  static void onWaitTimer(uv_timer_t* t) noexcept;

  Worker& worker_;
  const UpstreamConfig& config_;
  uint64_t connect_timeout_ms_;
  struct Endpoint {
    UpstreamConnection* idle = nullptr;  // most recently used first
    uint32_t idle_count = 0;
    uint32_t active = 0;
    uint16_t label = 0;  // metrics::labelId(address)
  };
  std::vector<Endpoint> endpoints_;
  std::shared_ptr<UpstreamState> state_;
  std::shared_ptr<const TlsClientContext> tls_;
  size_t next_endpoint_ = 0;
  size_t live_ = 0;
  bool retired_ = false;
  struct Waiter {
    UpstreamHandler* handler;
    uint64_t since_ms;
  };
  std::vector<Waiter> waiters_;  // FIFO; short
  uv_timer_t* wait_timer_ = nullptr;
  RetryBudget retry_budget_;
};

}  // namespace gw
