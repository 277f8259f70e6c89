// Connections to upstream endpoints and the per-worker pool.
//
// Contract:
// - An UpstreamPool belongs to one worker and one configuration Generation; all its
//   connections live on that worker's loop.
// - acquire() hands out an UpstreamStream (upstream_stream.h): over HTTP/1.1 a connection
//   that is either idle-and-connected (reused) or connecting; over HTTP/2 a stream on a
//   connection with room for one more (the upstream's SETTINGS_MAX_CONCURRENT_STREAMS), or
//   on a new one. The caller queues its request at once (sent when the connection is up).
// - The bulkhead counts connections in use (an HTTP/2 connection for its whole life) and
//   requests waiting for one (max_connections, max_pending).
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
#include "gateway/upstream/upstream_stream.h"
#include "gateway/free_list.h"

namespace gw {

class Worker;
class UpstreamPool;
class Http2ClientSession;
struct Http2UpstreamStream;

enum class AcquireResult {
  Connection,  // *out is set (a connection or an HTTP/2 stream)
  Queued,      // onUpstreamAvailable() follows
  NoEndpoint,  // every endpoint unhealthy or its breaker open: 503 at once
  Overflow,    // max_connections and max_pending both reached: 503 at once
};

class UpstreamConnection final : public UpstreamStream, private ResponseParser::Sink {
 public:
  // --- UpstreamStream: over HTTP/1.1 the connection is its request's stream ---
  UpstreamProtocolUsed protocol() const override { return UpstreamProtocolUsed::Http1; }
  void sendHead(const UpstreamRequestHead& head) override;
  void sendBody(const char* data, size_t len) override;
  void endRequest(const HeaderList* trailers) override;
  // Sends what is in out(); safe to call while connecting (sent once connected).
  void flush() override;
  // Request bytes not yet on the wire (encrypted ones included).
  size_t pendingBytes() const override { return out_.size() + (tls_ ? tls_->output().size() : 0); }
  bool takeUnsentBody(Buffer& to) override;
  void resendBody(Buffer& from) override;
  void pauseReading() override;
  void resumeReading() override;
  bool reused() const override { return reused_; }
  const SocketAddress& endpoint() const override;
  size_t endpointIndex() const override { return endpoint_index_; }
  void release() override;
  // Detaches the handler and closes (the downstream went away or gave up).
  void abort() override;

  // --- the transport, for an HTTP/2 session on it ---
  Buffer& out() { return out_; }
  bool outputFull() const { return pendingBytes() >= kOutputHighWatermark; }
  size_t maxResponseHeadBytes() const;
  uint64_t nowMs() const;
  // A stream's deadline: the connection's timer fires no later than `due_ms` (loop time).
  void deadlineAt(uint64_t due_ms);
  UpstreamPool& pool() { return pool_; }
  // Streams were freed: room for waiting requests, or the connection may go idle.
  void streamsFreed();

 private:
  friend class UpstreamPool;
  enum class State { Connecting, Idle, Active, Closing };
  // An HTTP/2 session stops framing output above this (resumed once written).
  static constexpr size_t kOutputHighWatermark = 256 * 1024;

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
  // After the TLS handshake: what ALPN chose decides the protocol (SPEC §8).
  bool onHandshake();
  void startHttp2();
  void receiveHttp2();
  // An HTTP/2 connection with no stream: closes after the keep-alive idle timeout.
  void idleHttp2();

  static void onConnectCb(uv_connect_t* req, int status) noexcept;
  static void onAllocCb(uv_handle_t* h, size_t hint, uv_buf_t* buf) noexcept;
  static void onReadCb(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void onWriteCb(uv_write_t* req, int status) noexcept;
  static void onTimerCb(uv_timer_t* t) noexcept;
  static void onCloseCb(uv_handle_t* h) noexcept;
  void armResponseTimer();
  void requestComplete();

  bool onResponseHead(UpstreamResponseHead& head) override;
  void onResponseBody(const char* data, size_t len) override;
  void onResponseTrailers(HeaderList& trailers) override;
  void startTunnel();
  void completeResponse();
  bool endsAtEof();
  size_t inputLimit() const;

  std::unique_ptr<Http2ClientSession> h2_;  // speaks HTTP/2
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
  bool chunked_request_ = false;  // the request body is framed chunked
  size_t request_head_bytes_ = 0;  // the head at the front of out_ (takeUnsentBody)
  size_t request_tail_bytes_ = 0;  // the last chunk and trailers at its end
  // The chunks queued while nothing of the request has gone out, so that a request that
  // never got there can be taken back unframed (takeUnsentBody).
  std::vector<uint32_t> unsent_chunks_;
  bool chunks_unsent_ = false;
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
  AcquireResult acquire(UpstreamHandler* handler, size_t avoid_endpoint, UpstreamStream** out,
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
  // HTTP/2 streams, pooled per worker like the connections' request objects.
  Http2UpstreamStream* acquireStream();
  void releaseStream(Http2UpstreamStream* s);
  // Closes idle connections and makes later releases close theirs.
  void retire();
  const UpstreamConfig& config() const { return config_; }
  Worker& worker() { return worker_; }
  size_t liveConnections() const { return live_; }

 private:
  friend class UpstreamConnection;
  // `picked`: the endpoint chosen already, or SIZE_MAX.
  AcquireResult acquireHttp1(UpstreamHandler* handler, size_t avoid_endpoint, size_t picked,
                             UpstreamStream** out, bool* trial);
  AcquireResult acquireHttp2(UpstreamHandler* handler, size_t endpoint, UpstreamStream** out,
                             bool* trial);
  // Over the bulkhead: the request waits (Queued) or is refused (Overflow).
  AcquireResult wait(UpstreamHandler* handler);
  // Whether an endpoint's requests go over HTTP/2: `h2`, or `auto` once ALPN said so.
  bool multiplexed(size_t endpoint) const;
  // An HTTP/2 connection to `endpoint` with room for another stream, or null.
  UpstreamConnection* roomyConnection(size_t endpoint) const;
  bool anyRoom() const;
  void becameHttp2(UpstreamConnection* c);
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
    bool speaks_h2 = false;  // `auto`: ALPN chose h2 on this endpoint's last handshake
    std::vector<UpstreamConnection*> multiplexed;  // its HTTP/2 connections
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
  FreeList<Http2UpstreamStream> free_streams_{256};
};

}  // namespace gw
