#include "gateway/upstream/health_checker.h"

#include <nghttp2/nghttp2.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
#include <utility>

#include "gateway/admin/health.h"
#include "gateway/buffer.h"
#include "gateway/http_util.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/tls/tls_context.h"
#include "gateway/tls/tls_session.h"
#include "gateway/upstream/grpc_health.h"

namespace gw {

namespace {

// A check stops reading past this many bytes (of plaintext, over TLS: the handshake is
// bounded by OpenSSL's own limits and the deadline): an endpoint cannot make a probe hold
// more.
constexpr size_t kMaxCheckBytes = 16 * 1024;

enum class Verdict { Pending, Healthy, Unhealthy };

// What one kind of check says on a fresh connection and how it judges the answer. The
// Probe owns the connection (TLS included), the deadline and the thresholds; a
// Conversation sees plaintext bytes.
class Conversation {
 public:
  virtual ~Conversation() = default;
  // A new attempt: `out` gets the first bytes to send.
  virtual void begin(std::string& out) = 0;
  // Bytes received; `out` gets whatever must be sent in reply.
  virtual Verdict receive(const char* data, size_t n, std::string& out) = 0;
  // The peer closed the connection, or reading failed.
  virtual bool healthyAtEof() = 0;
  // The attempt is over (either way): free what it held until the next one.
  virtual void end() {}
};

// GET path over HTTP/1.1: healthy on a 2xx or 3xx status line.
class HttpConversation final : public Conversation {
 public:
  HttpConversation(const std::string& path, const std::string& host)
      : request_("GET " + path + " HTTP/1.1\r\nHost: " + host +
                 "\r\nUser-Agent: gateway-health-check\r\nConnection: close\r\n\r\n") {}

  void begin(std::string& out) override {
    head_len_ = 0;
    out = request_;
  }

  Verdict receive(const char* data, size_t n, std::string&) override {
    size_t take = std::min(n, sizeof head_ - head_len_);
    std::memcpy(head_ + head_len_, data, take);
    head_len_ += take;
    // The status line's start is all it takes: "HTTP/1.1 200".
    if (head_len_ < sizeof head_) return Verdict::Pending;
    return healthyAtEof() ? Verdict::Healthy : Verdict::Unhealthy;
  }

  bool healthyAtEof() override {
    if (head_len_ < sizeof head_ || std::memcmp(head_, "HTTP/1.", 7) != 0) return false;
    int status = (head_[9] - '0') * 100 + (head_[10] - '0') * 10 + (head_[11] - '0');
    return status >= 200 && status < 400;
  }

 private:
  std::string request_;
  char head_[12];
  size_t head_len_ = 0;
};

// grpc.health.v1.Health/Check over HTTP/2 (with prior knowledge, or after ALPN h2 over
// TLS), nghttp2 in client mode on memory buffers: healthy on :status 200, grpc-status 0
// and a response message saying SERVING.
class GrpcConversation final : public Conversation {
 public:
  GrpcConversation(std::string authority, std::string_view service, bool tls)
      : authority_(std::move(authority)), scheme_(tls ? "https" : "http"),
        request_(grpc_health::encodeRequest(service)) {
    nghttp2_session_callbacks_new(&callbacks_);
    nghttp2_session_callbacks_set_on_header_callback(callbacks_, onHeader);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks_, onData);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks_, onStreamClose);
  }
  ~GrpcConversation() override {
    end();
    nghttp2_session_callbacks_del(callbacks_);
  }

  void begin(std::string& out) override {
    end();
    http_status_ = 0;
    grpc_status_.clear();
    response_.clear();
    response_too_long_ = closed_ = reset_ = false;
    request_sent_ = 0;
    if (nghttp2_session_client_new(&session_, callbacks_, this) != 0) return;
    // The answer is a few bytes: a small window keeps a misbehaving server's DATA small.
    const nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                               {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16384}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
    auto nv = [](std::string_view name, std::string_view value) {
      return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                        reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                        value.size(), NGHTTP2_NV_FLAG_NONE};
    };
    const nghttp2_nv headers[] = {nv(":method", "POST"),
                                  nv(":scheme", scheme_),
                                  nv(":path", "/grpc.health.v1.Health/Check"),
                                  nv(":authority", authority_),
                                  nv("content-type", "application/grpc"),
                                  nv("te", "trailers"),
                                  nv("user-agent", "gateway-health-check")};
    nghttp2_data_provider body{};
    body.source.ptr = this;
    body.read_callback = readRequest;
    stream_id_ = nghttp2_submit_request(session_, nullptr, headers, std::size(headers), &body, this);
    flush(out);
  }

  Verdict receive(const char* data, size_t n, std::string& out) override {
    if (!session_ ||
        nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(data), n) < 0 ||
        !flush(out)) {
      return Verdict::Unhealthy;
    }
    if (closed_) return healthyAtEof() ? Verdict::Healthy : Verdict::Unhealthy;
    // A GOAWAY, say, leaves nothing more to wait for.
    if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) {
      return Verdict::Unhealthy;
    }
    return Verdict::Pending;
  }

  bool healthyAtEof() override {
    if (!closed_ || reset_ || response_too_long_ || http_status_ != 200 || grpc_status_ != "0") {
      return false;
    }
    return grpc_health::decodeResponse(response_) == grpc_health::kServing;
  }

  void end() override {
    if (session_) nghttp2_session_del(session_);
    session_ = nullptr;
  }

 private:
  static GrpcConversation* self(void* user_data) { return static_cast<GrpcConversation*>(user_data); }

  // What nghttp2 has to send (preface, SETTINGS and their ACKs, the request), appended.
  bool flush(std::string& out) {
    for (;;) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) return false;
      if (n == 0) return true;
      out.append(reinterpret_cast<const char*>(data), size_t(n));
    }
  }

  static ssize_t readRequest(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                             uint32_t* flags, nghttp2_data_source*, void* user_data) {
    auto* c = self(user_data);
    size_t n = std::min(length, c->request_.size() - c->request_sent_);
    std::memcpy(buf, c->request_.data() + c->request_sent_, n);
    c->request_sent_ += n;
    if (c->request_sent_ == c->request_.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return ssize_t(n);
  }

  // Headers and trailers alike: a trailers-only answer carries grpc-status in its headers.
  static int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                      void* user_data) {
    auto* c = self(user_data);
    if (frame->hd.stream_id != c->stream_id_) return 0;
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    if (n == ":status") {
      c->http_status_ = v.size() == 3 ? std::atoi(std::string(v).c_str()) : 0;
    } else if (n == "grpc-status") {
      // Only "0" counts; a longer value need not be kept to know it is not that.
      c->grpc_status_ = v.size() <= 3 ? std::string(v) : "?";
    }
    return 0;
  }

  static int onData(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                    size_t len, void* user_data) {
    auto* c = self(user_data);
    if (stream_id != c->stream_id_) return 0;
    if (c->response_.size() + len > grpc_health::kMaxResponseBody) {
      c->response_too_long_ = true;
    } else {
      c->response_.append(reinterpret_cast<const char*>(data), len);
    }
    return 0;
  }

  static int onStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                           void* user_data) {
    auto* c = self(user_data);
    if (stream_id != c->stream_id_) return 0;
    c->closed_ = true;
    c->reset_ = error_code != NGHTTP2_NO_ERROR;
    return 0;
  }

  std::string authority_;
  std::string_view scheme_;
  std::string request_;  // the framed HealthCheckRequest, the same for every attempt
  nghttp2_session_callbacks* callbacks_ = nullptr;
  nghttp2_session* session_ = nullptr;  // per attempt
  int32_t stream_id_ = -1;
  size_t request_sent_ = 0;
  int http_status_ = 0;
  std::string grpc_status_;
  std::string response_;
  bool response_too_long_ = false;
  bool closed_ = false;
  bool reset_ = false;
};

std::unique_ptr<Conversation> conversationFor(const HealthCheckConfig& check,
                                              const SocketAddress& address, bool tls) {
  if (check.type == HealthCheckType::Grpc) {
    return std::make_unique<GrpcConversation>(address.text, check.service, tls);
  }
  return std::make_unique<HttpConversation>(check.path, address.text);
}

// A write owns its bytes until libuv is done with them (a close cancels it: same callback).
struct PendingWrite {
  uv_write_t req{};
  std::string data;
};

}  // namespace

// How a probe reaches the endpoints of one upstream: plain TCP, or TLS as the upstream's
// own connections speak it (same trust, sni, verification, client certificate) with the
// ALPN the check's conversation needs. Built once per configuration, shared by the
// upstream's probes.
struct ProbeTls {
  bool enabled = false;
  std::shared_ptr<const TlsClientContext> context;  // null when enabled: it failed to build
  bool needs_h2 = false;  // gRPC: an endpoint that does not choose h2 cannot be checked
};

struct HealthChecker::Probe {
  uv_loop_t* loop;
  HealthCheckConfig check;
  std::shared_ptr<EndpointState> state;
  SocketAddress address;
  uint16_t upstream_label = 0;
  uint16_t endpoint_label = 0;
  ProbeTls tls_config;
  std::unique_ptr<Conversation> conversation;

  uv_timer_t interval{};
  uv_timer_t deadline{};
  uv_tcp_t* tcp = nullptr;  // per attempt; freed in its close callback
  uv_connect_t connect_req{};
  // Per attempt, freed by finish(): idle probes of many TLS endpoints keep no OpenSSL state.
  std::unique_ptr<TlsSession> tls;
  InputBlock plaintext;  // what TLS decrypted, until the conversation took it
  char read_buf[4096];
  size_t received = 0;
  int64_t started_us = 0;
  // The conversation began on this attempt: until then its verdict at EOF is a previous
  // attempt's.
  bool talking = false;
  // A TLS failure is usually a configuration problem that repeats on every check: it is
  // logged once until the endpoint is healthy again.
  bool tls_failure_logged = false;
  bool stopping = false;
  int open_handles = 2;

  Probe(uv_loop_t* l, const HealthCheckConfig& c, std::shared_ptr<EndpointState> s,
        const SocketAddress& a, uint16_t upstream, uint16_t endpoint, ProbeTls t)
      : loop(l), check(c), state(std::move(s)), address(a), upstream_label(upstream),
        endpoint_label(endpoint), tls_config(std::move(t)),
        conversation(conversationFor(c, a, tls_config.enabled)) {}

  static int64_t nowUs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
  }

  void start() {
    uv_timer_init(loop, &interval);
    uv_timer_init(loop, &deadline);
    interval.data = deadline.data = this;
    // The first check runs at once, so a dead endpoint is known within one timeout.
    uv_timer_start(&interval, [](uv_timer_t* t) { static_cast<Probe*>(t->data)->attempt(); }, 0,
                   uint64_t(check.interval.count()));
  }

  void attempt() {
    if (tcp || stopping) return;  // the previous check has not finished
    tcp = new uv_tcp_t;
    uv_tcp_init(loop, tcp);
    tcp->data = this;
    connect_req.data = this;
    received = 0;
    talking = false;
    started_us = nowUs();
    // The deadline covers the connect, the TLS handshake and the conversation alike.
    uv_timer_start(&deadline, [](uv_timer_t* t) { static_cast<Probe*>(t->data)->finish(false); },
                   uint64_t(check.timeout.count()), 0);
    if (uv_tcp_connect(&connect_req, tcp, address.sa(), [](uv_connect_t* req, int status) {
          auto* p = static_cast<Probe*>(req->data);
          // A connect cancelled by a timed-out attempt's close is old news.
          if (reinterpret_cast<uv_tcp_t*>(req->handle) != p->tcp) return;
          if (status != 0) return p->finish(false);
          p->onConnected();
        }) != 0) {
      finish(false);
    }
  }

  void onConnected() {
    if (!tcp) return;
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(tcp),
        [](uv_handle_t* h, size_t, uv_buf_t* b) {
          auto* p = static_cast<Probe*>(h->data);
          *b = uv_buf_init(p->read_buf, sizeof p->read_buf);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
          auto* p = static_cast<Probe*>(s->data);
          if (n < 0) return p->finish(p->talking && p->conversation->healthyAtEof());
          if (p->tls) return p->receiveTls(b->base, size_t(n));
          p->deliver(b->base, size_t(n));
        });
    if (!tls_config.enabled) return talk();
    if (!tls_config.context) return tlsFailed("no TLS context (see the configuration error)");
    tls = std::make_unique<TlsSession>(tls_config.context, address.text);
    if (!tls->start()) return tlsFailed(tls->error());
    write();
  }

  // The conversation starts once the connection can carry it: at connect, or once the
  // TLS handshake settled the protocol.
  void talk() {
    talking = true;
    std::string out;
    conversation->begin(out);
    send(std::move(out));
  }

  void receiveTls(const char* data, size_t n) {
    bool handshaken = tls->state() != TlsState::Handshaking;
    TlsFeedResult res = tls->feed(data, n, plaintext, kMaxCheckBytes);
    if (tls->state() == TlsState::Error) {
      // A failure on an established session is the endpoint cutting the answer short.
      return handshaken ? finish(false) : tlsFailed(tls->error());
    }
    write();  // handshake messages
    if (!tcp) return;
    if (res.handshake_done) {
      if (tls_config.needs_h2 && tls->info().alpn != "h2") {
        return tlsFailed("the endpoint did not choose ALPN h2, which gRPC needs");
      }
      talk();
      if (!tcp) return;
    }
    // Everything decrypted is handed over at once, so a full block means the answer went
    // past the bound.
    if (res.sink_full) return finish(false);
    if (plaintext.unconsumed() > 0) {
      size_t len = plaintext.unconsumed();
      const char* text = plaintext.data() + plaintext.consumed();
      if (!deliver(text, len)) return;  // finished: the block is gone
      plaintext.consume(len);
      plaintext.compact();
    }
    if (tls->peerClosed()) finish(talking && conversation->healthyAtEof());
  }

  // Plaintext from the endpoint to the conversation. False once the check is over.
  bool deliver(const char* data, size_t n) {
    received += n;
    if (received > kMaxCheckBytes || !talking) {
      finish(false);
      return false;
    }
    std::string out;
    Verdict v = conversation->receive(data, n, out);
    send(std::move(out));
    if (!tcp) return false;
    if (v == Verdict::Pending) return true;
    finish(v == Verdict::Healthy);
    return false;
  }

  // Plaintext from the conversation to the endpoint.
  void send(std::string data) {
    if (data.empty() || !tcp) return;
    if (!tls) return write(std::move(data));
    iovec iov{data.data(), data.size()};
    if (!tls->encrypt(&iov, 1)) return finish(false);
    write();
  }

  // Bytes for the socket: `data`, else what the TLS session has to send.
  void write(std::string data = {}) {
    if (!tcp) return;
    if (tls) {
      Buffer& out = tls->output();
      data.reserve(data.size() + out.size());
      iovec iov[16];
      while (!out.empty()) {
        size_t count = out.peek(iov, std::size(iov));
        size_t taken = 0;
        for (size_t i = 0; i < count; ++i) {
          data.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
          taken += iov[i].iov_len;
        }
        out.drain(taken);
      }
    }
    if (data.empty()) return;
    auto* w = new PendingWrite{{}, std::move(data)};
    w->req.data = w;
    uv_buf_t buf = uv_buf_init(w->data.data(), unsigned(w->data.size()));
    if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(tcp), &buf, 1,
                 [](uv_write_t* r, int) { delete static_cast<PendingWrite*>(r->data); }) != 0) {
      delete w;
    }
  }

  void tlsFailed(std::string_view error) {
    if (!tls_failure_logged) {
      tls_failure_logged = true;
      log::warn("upstream health check TLS failure",
                {{"upstream", state->upstream}, {"endpoint", state->address}, {"error", error}});
    }
    finish(false);
  }

  void closeAttempt() {
    conversation->end();
    tls.reset();
    plaintext.release();
    if (tcp) {
      uv_close(reinterpret_cast<uv_handle_t*>(tcp), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
      tcp = nullptr;
    }
  }

  void finish(bool ok) {
    uv_timer_stop(&deadline);
    if (!tcp) return;  // already finished (timeout and failure racing)
    closeAttempt();
    if (stopping) return;
    state->last_checked_ms.store(int64_t(wallClockMs()), std::memory_order_relaxed);
    state->last_latency_us.store(ok ? nowUs() - started_us : -1, std::memory_order_relaxed);
    if (ok) {
      state->check_failures.store(0, std::memory_order_relaxed);
      uint32_t n = state->check_successes.fetch_add(1) + 1;
      if (!state->healthy.load() && n >= check.healthy_threshold) {
        state->healthy.store(true);
        tls_failure_logged = false;
        log::info("upstream endpoint healthy", {{"upstream", state->upstream}, {"endpoint", state->address}});
      }
    } else {
      state->check_successes.store(0, std::memory_order_relaxed);
      uint32_t n = state->check_failures.fetch_add(1) + 1;
      if (state->healthy.load() && n >= check.unhealthy_threshold) {
        state->healthy.store(false);
        log::warn("upstream endpoint unhealthy", {{"upstream", state->upstream}, {"endpoint", state->address}});
      }
    }
    metrics::process().set(metrics::Id::UpstreamEndpointHealthy, {upstream_label, endpoint_label, 0},
                           state->healthy.load() ? 1 : 0);
  }

  void stop() {
    stopping = true;
    closeAttempt();
    auto closed = [](uv_handle_t* h) {
      auto* p = static_cast<Probe*>(h->data);
      if (--p->open_handles == 0) delete p;
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&interval), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&deadline), closed);
  }
};

HealthChecker::~HealthChecker() { stop(); }

void HealthChecker::stop() {
  for (Probe* p : probes_) p->stop();
  probes_.clear();
}

void HealthChecker::configure(const Config& config) {
  stop();
  for (const UpstreamConfig& u : config.upstreams) {
    auto state = upstreamState(u);
    ProbeTls tls;
    if (u.health_check && u.tls) {
      tls.enabled = true;
      tls.needs_h2 = u.health_check->type == HealthCheckType::Grpc;
      // The upstream's own context may offer another ALPN (`protocol: auto`), and a check
      // must not find out which protocol it speaks: it knows.
      UpstreamTls settings = *u.tls;
      settings.alpn = tls.needs_h2 ? AlpnOffer::H2 : AlpnOffer::Http11;
      std::string error;
      tls.context = TlsClientContext::build(settings, &error);
      // The loader built the same block a moment ago, so this is a file changed since:
      // the checks fail (and say so) rather than fall back to plaintext.
      if (!tls.context) {
        log::error("cannot set up TLS for health checks", {{"upstream", u.name}, {"error", error}});
      }
    }
    for (size_t i = 0; i < u.endpoints.size(); ++i) {
      uint16_t endpoint_label = metrics::labelId(u.endpoints[i].text);
      if (!u.health_check) {
        // Without checks an endpoint is taken as healthy (failures still open breakers).
        state->endpoints[i]->healthy.store(true);
        metrics::process().set(metrics::Id::UpstreamEndpointHealthy,
                               {u.metrics_label, endpoint_label, 0}, 1);
        continue;
      }
      auto* p = new Probe(loop_, *u.health_check, state->endpoints[i], u.endpoints[i],
                          u.metrics_label, endpoint_label, tls);
      p->start();
      probes_.push_back(p);
    }
  }
  publish(config);
}

void HealthChecker::publish(const Config& config) {
  health::removeChecks("upstream:");
  for (const UpstreamConfig& u : config.upstreams) {
    auto state = upstreamState(u);
    // Without health_check an endpoint counts as healthy until its breaker opens, and says
    // so; its null last_checked tells that nothing probed it.
    health::setCheck("upstream:" + u.name, [state] {
      health::Check c;
      nlohmann::json endpoints = nlohmann::json::array();
      size_t up = 0;
      int64_t now = monotonicMs();
      for (const auto& e : state->endpoints) {
        bool healthy = e->healthy.load() && !e->breakerOpen(now);
        up += healthy;
        int64_t checked_ms = e->last_checked_ms.load();
        int64_t latency_us = e->last_latency_us.load();
        nlohmann::json entry = {{"address", e->address},
                                {"status", healthy ? "healthy" : "unhealthy"},
                                {"latency_ms", nullptr},
                                {"last_checked", nullptr}};
        if (latency_us >= 0 && checked_ms > 0) entry["latency_ms"] = double(latency_us) / 1000.0;
        if (checked_ms > 0) {
          char ts[24];
          formatTimestamp(uint64_t(checked_ms), ts);
          entry["last_checked"] = std::string(ts, 24);
        }
        if (e->breakerOpen(now)) entry["circuit_breaker"] = "open";
        endpoints.push_back(std::move(entry));
      }
      c.detail["endpoints"] = std::move(endpoints);
      c.ready = up > 0;
      c.status = up == state->endpoints.size() ? health::Status::Healthy
                 : up > 0                      ? health::Status::Degraded
                                               : health::Status::Unhealthy;
      return c;
    });
  }
}

}  // namespace gw
