#include "filters/jwt/http_fetch.h"

#include <sys/uio.h>

#include "gateway/buffer.h"
#include "gateway/tls/tls_context.h"
#include "gateway/tls/tls_session.h"

#include <llhttp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#ifndef GATEWAY_VERSION
#define GATEWAY_VERSION "dev"
#endif

namespace gw::jwt {
namespace {

bool startsWithNoCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = char(c + 32);
    if (c != prefix[i]) return false;
  }
  return true;
}

bool validHostChar(char c, bool bracketed) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  if (c == '.' || c == '-') return true;
  return bracketed ? (c == ':' || c == '%') : c == '_';
}

class PlainTransport final : public Transport {
 public:
  bool start(std::string&, std::string&) override { return true; }
  bool ready() const override { return true; }
  bool plain() const override { return true; }
  bool wrap(std::string_view plain, std::string& to_socket, std::string&) override {
    to_socket.append(plain);
    return true;
  }
  bool unwrap(std::string_view from_socket, std::string& plain, std::string&,
              std::string&) override {
    plain.append(from_socket);
    return true;
  }
};

// https://: the gateway's own TLS client session over memory BIOs, verifying the server
// against the system trust store (SSL_CERT_FILE / SSL_CERT_DIR are honoured) and its name.
class TlsTransport final : public Transport {
 public:
  TlsTransport(std::shared_ptr<const TlsClientContext> context, const std::string& endpoint)
      : session_(std::move(context), endpoint) {}

  bool start(std::string& to_socket, std::string& error) override {
    if (!session_.start()) return failed(error);
    drain(to_socket);
    return true;
  }
  bool ready() const override { return session_.state() == TlsState::Established; }
  bool wrap(std::string_view plain, std::string& to_socket, std::string& error) override {
    iovec iov{const_cast<char*>(plain.data()), plain.size()};
    if (!session_.encrypt(&iov, 1)) return failed(error);
    drain(to_socket);
    return true;
  }
  bool unwrap(std::string_view from_socket, std::string& plain, std::string& to_socket,
              std::string& error) override {
    const char* data = from_socket.data();
    size_t len = from_socket.size();
    for (;;) {
      TlsFeedResult r = session_.feed(data, len, block_, kSliceSize);
      data = nullptr;
      len = 0;
      if (session_.state() == TlsState::Error) return failed(error);
      plain.append(block_.data() + block_.consumed(), block_.unconsumed());
      block_.consume(block_.unconsumed());
      block_.compact();
      if (!r.sink_full && session_.pendingInput() == 0) break;
    }
    drain(to_socket);
    return true;
  }

 private:
  bool failed(std::string& error) {
    error = "TLS: " + (session_.error().empty() ? std::string("handshake failed") : session_.error());
    return false;
  }
  void drain(std::string& out) {
    Buffer& o = session_.output();
    if (o.empty()) return;
    out += o.toString();
    o.drain(o.size());
  }

  TlsSession session_;
  InputBlock block_;
};

}  // namespace

std::optional<HttpUrl> parseHttpUrl(std::string_view text, std::string* error) {
  auto fail = [&](std::string why) {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  HttpUrl url;
  if (startsWithNoCase(text, "https://")) {
    url.https = true;
    url.port = 443;
    text.remove_prefix(8);
  } else if (startsWithNoCase(text, "http://")) {
    url.port = 80;
    text.remove_prefix(7);
  } else {
    return fail("not an http:// or https:// URL");
  }
  size_t end = text.find_first_of("/?#");
  std::string_view authority = text.substr(0, end);
  std::string_view rest = end == std::string_view::npos ? std::string_view() : text.substr(end);
  if (authority.empty()) return fail("no host in the URL");
  if (authority.find('@') != std::string_view::npos)
    return fail("user info in URLs is not supported");
  url.authority = std::string(authority);
  std::string_view host = authority;
  std::string_view port;
  bool bracketed = !host.empty() && host.front() == '[';
  if (bracketed) {
    size_t close = host.find(']');
    if (close == std::string_view::npos) return fail("unterminated IPv6 address");
    port = host.substr(close + 1);
    host = host.substr(1, close - 1);
    if (!port.empty() && port.front() != ':') return fail("junk after the IPv6 address");
    if (!port.empty()) port.remove_prefix(1);
  } else if (size_t colon = host.rfind(':'); colon != std::string_view::npos) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
  }
  if (host.empty()) return fail("no host in the URL");
  for (char c : host) {
    if (!validHostChar(c, bracketed)) return fail("invalid character in the host");
  }
  if (!port.empty() || authority.back() == ':') {
    if (port.empty() || port.size() > 5) return fail("invalid port");
    unsigned value = 0;
    for (char c : port) {
      if (c < '0' || c > '9') return fail("invalid port");
      value = value * 10 + unsigned(c - '0');
    }
    if (value == 0 || value > 65535) return fail("invalid port");
    url.port = uint16_t(value);
  }
  url.host = std::string(host);
  rest = rest.substr(0, rest.find('#'));
  url.target = rest.empty() || rest.front() != '/' ? "/" + std::string(rest) : std::string(rest);
  return url;
}

std::unique_ptr<Transport> makeTransport(const HttpUrl& url, std::string* error) {
  if (!url.https) return std::make_unique<PlainTransport>();
  // The system's trust store, verification on. A name is sent as SNI and checked; an IP
  // address is checked against the certificate's IP names (TlsSession does both from the
  // endpoint).
  UpstreamTls tls;
  bool ipv6 = url.host.find(':') != std::string::npos;
  std::string build_error;
  auto context = TlsClientContext::build(tls, &build_error);
  if (!context) {
    if (error) *error = "TLS: " + build_error;
    return nullptr;
  }
  std::string endpoint = (ipv6 ? "[" + url.host + "]" : url.host) + ":" + std::to_string(url.port);
  return std::make_unique<TlsTransport>(std::move(context), endpoint);
}

// A connection and the request in flight on it. One-shot fetches (startHttpRequest) own
// their request and free themselves after it; kept-alive connections (openHttpConnection)
// serve request after request until closeHttpConnection().
class HttpFetch {
 public:
  HttpFetch(uv_loop_t* loop, HttpUrl url, size_t max_body, bool keep_alive)
      : loop_(loop), url_(std::move(url)), max_body_(max_body), keep_alive_(keep_alive) {
    uv_timer_init(loop_, &timer_);
    timer_.data = this;
    ++open_handles_;
  }

  void send(std::string_view method, const HttpHeaders& headers, std::string_view body,
            uint64_t timeout_ms, HttpDone done) {
    if (released_ || active_) return;  // one request at a time (the callers never do this)
    active_ = true;
    sending_ = true;
    done_ = std::move(done);
    llhttp_init(&parser_, HTTP_RESPONSE, &settings());
    parser_.data = this;
    complete_ = too_large_ = in_value_ = no_reuse_ = request_sent_ = false;
    field_.clear();
    result_ = HttpResult();
    timeout_error_ = "no complete response in time";
    head_.clear();
    head_.append(method).append(" ").append(url_.target).append(" HTTP/1.1\r\nHost: ");
    head_.append(url_.authority).append("\r\nUser-Agent: gateway/" GATEWAY_VERSION "\r\n");
    if (!keep_alive_) head_ += "Connection: close\r\n";
    for (const auto& [name, value] : headers) head_.append(name).append(": ").append(value) += "\r\n";
    if (method != "GET") head_.append("Content-Length: ").append(std::to_string(body.size())) += "\r\n";
    head_ += "\r\n";
    body_ = body;
    uv_timer_start(&timer_, onTimeout, timeout_ms, 0);
    if (connected_) {
      sendRequestIfReady();
    } else if (!tcp_open_ && !resolving_) {
      startConnection();
    }  // else a connection is on its way up or down: onResolved / onConnect / onClosed go on
    sending_ = false;
  }

  // The request in flight ends without `done`; the connection goes with it.
  void cancel() {
    done_ = nullptr;
    finish("cancelled");
  }

  // The owner lets go: nothing more is sent or called back; freed once the handles close.
  void release() {
    if (released_) return;
    released_ = true;
    cancel();
    closeTcp();
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_))) {
      uv_timer_stop(&timer_);
      uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onClosed);
    }
    if (resolving_) uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_));
    maybeDelete();
  }

  uint64_t connects() const { return connects_; }

  // A one-shot fetch keeps its request's body here and frees itself after `done`.
  std::string owned_body;
  bool one_shot = false;

 private:
  struct Write {
    uv_write_t req;
    std::string bytes;
    HttpFetch* self;
  };

  static const llhttp_settings_t& settings() {
    static const llhttp_settings_t s = [] {
      llhttp_settings_t s;
      llhttp_settings_init(&s);
      s.on_body = onBody;
      s.on_message_complete = onMessageComplete;
      s.on_header_field = onHeaderField;
      s.on_header_value = onHeaderValue;
      return s;
    }();
    return s;
  }

  static HttpFetch* from(llhttp_t* p) { return static_cast<HttpFetch*>(p->data); }

  static int onBody(llhttp_t* p, const char* at, size_t len) {
    HttpFetch* self = from(p);
    if (self->result_.body.size() + len > self->max_body_) {
      self->too_large_ = true;
      return -1;
    }
    self->result_.body.append(at, len);
    return 0;
  }

  // Only Retry-After is kept, and only its first bytes: a server's headers are read
  // through (llhttp buffers nothing), so a hostile one cannot grow memory with them.
  static int onHeaderField(llhttp_t* p, const char* at, size_t len) {
    HttpFetch* self = from(p);
    if (self->in_value_) {
      self->in_value_ = false;
      self->field_.clear();
    }
    if (self->field_.size() + len <= kRetryAfterName.size()) self->field_.append(at, len);
    else self->field_ = "-";  // longer than any name kept
    return 0;
  }

  static int onHeaderValue(llhttp_t* p, const char* at, size_t len) {
    HttpFetch* self = from(p);
    self->in_value_ = true;
    if (self->field_.size() != kRetryAfterName.size()) return 0;
    for (size_t i = 0; i < kRetryAfterName.size(); ++i) {
      char c = self->field_[i];
      if (c >= 'A' && c <= 'Z') c = char(c + 32);
      if (c != kRetryAfterName[i]) return 0;
    }
    std::string& v = self->result_.retry_after;
    v.append(at, std::min(len, kMaxRetryAfter - std::min(v.size(), kMaxRetryAfter)));
    return 0;
  }

  static int onMessageComplete(llhttp_t* p) {
    from(p)->complete_ = true;
    return HPE_PAUSED;
  }

  // A new connection for the request in flight: a new transport (a TLS session is one
  // connection's), the addresses resolved anew.
  void startConnection() {
    std::string error;
    transport_ = makeTransport(url_, &error);
    if (!transport_) {
      finish(std::move(error));
      return;
    }
    addrs_.clear();
    next_addr_ = 0;
    connect_error_ = "no address";
    sockaddr_storage ss{};
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    // An address literal needs no resolver (nor a trip through libuv's thread pool).
    if (uv_ip4_addr(url_.host.c_str(), url_.port, s4) == 0 ||
        uv_ip6_addr(url_.host.c_str(), url_.port, s6) == 0) {
      addrs_.push_back(ss);
      connecting_ = true;
      connectNext();
      return;
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    resolve_.data = this;
    std::string service = std::to_string(url_.port);
    int rc =
        uv_getaddrinfo(loop_, &resolve_, onResolved, url_.host.c_str(), service.c_str(), &hints);
    if (rc != 0) {
      finish(std::string("cannot resolve ") + url_.host + ": " + uv_strerror(rc));
      return;
    }
    resolving_ = true;
  }

  // A resolution outlives a request that timed out; the next request uses its answer.
  static void onResolved(uv_getaddrinfo_t* req, int status, addrinfo* res) noexcept {
    auto* self = static_cast<HttpFetch*>(req->data);
    self->resolving_ = false;
    if (self->active_ && !self->released_ && !self->tcp_open_) {
      for (addrinfo* a = res; status == 0 && a; a = a->ai_next) {
        sockaddr_storage ss{};
        std::memcpy(&ss, a->ai_addr, std::min<size_t>(a->ai_addrlen, sizeof ss));
        self->addrs_.push_back(ss);
      }
      if (status != 0 || self->addrs_.empty()) {
        self->finish("cannot resolve " + self->url_.host + ": " +
                     (status != 0 ? uv_strerror(status) : "no address"));
      } else {
        self->connecting_ = true;
        self->connectNext();
      }
    }
    if (res) uv_freeaddrinfo(res);
    self->maybeDelete();
  }

  void connectNext() {
    if (next_addr_ >= addrs_.size()) {
      finish("cannot connect to " + url_.authority + ": " + connect_error_);
      return;
    }
    const sockaddr* sa = reinterpret_cast<const sockaddr*>(&addrs_[next_addr_++]);
    uv_tcp_init(loop_, &tcp_);
    tcp_.data = this;
    ++open_handles_;
    tcp_open_ = true;
    connect_.data = this;
    int rc = uv_tcp_connect(&connect_, &tcp_, sa, onConnect);
    if (rc != 0) {
      connect_error_ = uv_strerror(rc);
      closeTcp();
    }
  }

  static void onConnect(uv_connect_t* req, int status) noexcept {
    auto* self = static_cast<HttpFetch*>(req->data);
    if (status == UV_ECANCELED || self->closing_) return;
    if (status < 0) {
      self->connect_error_ = uv_strerror(status);
      self->closeTcp();  // its close callback tries the next address
      return;
    }
    if (!self->active_) {  // cannot happen: a request that ends closes what it opened
      self->closeTcp();
      return;
    }
    self->connecting_ = false;
    self->connected_ = true;
    ++self->connects_;
    std::string out, error;
    if (!self->transport_->start(out, error)) {
      self->finish(error);
      return;
    }
    if (!out.empty()) self->send(std::move(out));
    self->sendRequestIfReady();
    uv_read_start(reinterpret_cast<uv_stream_t*>(&self->tcp_), onAlloc, onRead);
  }

  void sendRequestIfReady() {
    if (!active_ || request_sent_ || !connected_ || !transport_->ready()) return;
    request_sent_ = true;
    if (transport_->plain()) {
      send(std::move(head_), body_);  // the body from the caller's memory
      head_ = std::string();
      return;
    }
    std::string out, error;
    if (!transport_->wrap(head_, out, error) ||
        (!body_.empty() && !transport_->wrap(body_, out, error))) {
      finish(error);
      return;
    }
    send(std::move(out));
  }

  // `bytes`, then `tail` (which must outlive the write or the connection).
  void send(std::string bytes, std::string_view tail = {}) {
    auto* w = new Write{{}, std::move(bytes), this};
    w->req.data = w;
    uv_buf_t bufs[2] = {uv_buf_init(w->bytes.data(), unsigned(w->bytes.size())),
                        uv_buf_init(const_cast<char*>(tail.data()), unsigned(tail.size()))};
    ++writes_;
    int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp_), bufs, tail.empty() ? 1 : 2,
                      onWrite);
    if (rc != 0) {
      --writes_;
      delete w;
      if (active_) finish(std::string("cannot send the request: ") + uv_strerror(rc));
      else closeTcp();
    }
  }

  static void onWrite(uv_write_t* req, int status) noexcept {
    auto* w = static_cast<Write*>(req->data);
    HttpFetch* self = w->self;
    delete w;
    --self->writes_;
    if (status < 0 && status != UV_ECANCELED) {
      if (self->active_) self->finish(std::string("cannot send the request: ") + uv_strerror(status));
      else self->closeTcp();
    }
    self->maybeDelete();
  }

  static void onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
    auto* self = static_cast<HttpFetch*>(h->data);
    *buf = uv_buf_init(self->read_buf_, sizeof self->read_buf_);
  }

  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept {
    auto* self = static_cast<HttpFetch*>(s->data);
    if (nread == 0 || self->closing_) return;
    if (!self->active_) {
      self->readWhileIdle(nread, buf);
      return;
    }
    if (nread == UV_EOF) {
      llhttp_finish(&self->parser_);
      self->no_reuse_ = true;
      self->finish(self->complete_ ? "" : "the connection closed before the response ended");
      return;
    }
    if (nread < 0) {
      self->finish(std::string("read failed: ") + uv_strerror(int(nread)));
      return;
    }
    std::string plain, back, error;
    if (!self->transport_->unwrap(std::string_view(buf->base, size_t(nread)), plain, back, error)) {
      self->finish(error);
      return;
    }
    if (!back.empty()) self->send(std::move(back));
    self->sendRequestIfReady();
    if (!plain.empty()) self->feed(plain);
  }

  // A kept connection between requests: the server closing it (an idle timeout) is seen
  // here, so that the next request opens a new one instead of failing on this one. TLS
  // records without application data (a TLS 1.3 session ticket) are taken; a byte of HTTP
  // that no request asked for ends the connection.
  void readWhileIdle(ssize_t nread, const uv_buf_t* buf) {
    if (nread < 0) {
      closeTcp();
      return;
    }
    std::string plain, back, error;
    if (!transport_->unwrap(std::string_view(buf->base, size_t(nread)), plain, back, error) ||
        !plain.empty()) {
      closeTcp();
      return;
    }
    if (!back.empty()) send(std::move(back));
  }

  void feed(std::string_view plain) {
    llhttp_errno_t err = llhttp_execute(&parser_, plain.data(), plain.size());
    if (complete_) {
      // Bytes after the response: not an answer to anything sent, so not a connection
      // to send on again.
      if (err != HPE_PAUSED || llhttp_get_error_pos(&parser_) != plain.data() + plain.size()) {
        no_reuse_ = true;
      }
      finish("");
    } else if (err != HPE_OK) {
      finish(too_large_ ? "response body over " + std::to_string(max_body_) + " bytes"
                        : std::string("invalid HTTP response: ") + llhttp_errno_name(err));
    }
  }

  static void onTimeout(uv_timer_t* t) noexcept {
    auto* self = static_cast<HttpFetch*>(t->data);
    self->finish(self->timeout_error_);
  }

  // Ends the request in flight: the connection is kept only after a complete response
  // that allows it, with nothing of the request still being written.
  void finish(std::string error) {
    if (!active_) return;
    if (sending_) {  // `done` never runs inside send(): from the timer instead
      timeout_error_ = std::move(error);
      uv_timer_start(&timer_, onTimeout, 0, 0);
      return;
    }
    active_ = false;
    connecting_ = false;
    uv_timer_stop(&timer_);
    HttpResult result = std::move(result_);
    result_ = HttpResult();
    result.error = std::move(error);
    result.status = result.error.empty() ? llhttp_get_status_code(&parser_) : 0;
    bool keep = result.error.empty() && keep_alive_ && !no_reuse_ && writes_ == 0 &&
                llhttp_should_keep_alive(&parser_);
    if (!keep) closeTcp();
    body_ = {};
    HttpDone done = std::move(done_);
    done_ = nullptr;
    if (done) done(std::move(result));  // may send the next request on this connection
    if (one_shot) release();
  }

  void closeTcp() {
    connected_ = false;
    if (!tcp_open_ || closing_) return;
    closing_ = true;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onClosed);
  }

  static void onClosed(uv_handle_t* h) noexcept {
    auto* self = static_cast<HttpFetch*>(h->data);
    --self->open_handles_;
    if (h == reinterpret_cast<uv_handle_t*>(&self->tcp_)) {
      self->tcp_open_ = false;
      self->closing_ = false;
      // A connection attempt that failed: the next address. An old connection closed
      // while a request waited for it to go: a new connection.
      if (self->active_ && !self->released_) {
        if (self->connecting_) self->connectNext();
        else if (!self->resolving_) self->startConnection();
        return;
      }
    }
    self->maybeDelete();
  }

  void maybeDelete() {
    if (released_ && open_handles_ == 0 && !resolving_ && writes_ == 0) delete this;
  }

  static constexpr std::string_view kRetryAfterName = "retry-after";
  static constexpr size_t kMaxRetryAfter = 64;  // an HTTP date is 29 characters

  uv_loop_t* loop_;
  HttpUrl url_;
  size_t max_body_;
  bool keep_alive_;
  // The connection.
  std::unique_ptr<Transport> transport_;
  uv_timer_t timer_{};
  uv_tcp_t tcp_{};
  uv_getaddrinfo_t resolve_{};
  uv_connect_t connect_{};
  std::vector<sockaddr_storage> addrs_;
  size_t next_addr_ = 0;
  std::string connect_error_ = "no address";
  uint64_t connects_ = 0;
  int open_handles_ = 0;
  int writes_ = 0;
  bool tcp_open_ = false;    // tcp_ is initialised and its close callback has not run
  bool closing_ = false;     // uv_close(tcp_) has been called
  bool connecting_ = false;  // trying addrs_ in turn
  bool connected_ = false;   // connected, not closing: requests may be sent
  bool resolving_ = false;
  bool released_ = false;
  // The request in flight.
  bool active_ = false;
  bool sending_ = false;  // inside send()
  bool request_sent_ = false;
  bool complete_ = false;
  bool too_large_ = false;
  bool no_reuse_ = false;  // the response ended the connection (EOF, extra bytes)
  bool in_value_ = false;
  HttpDone done_;
  std::string head_;
  std::string_view body_;
  std::string timeout_error_;
  std::string field_;  // the header name being read, while it may be Retry-After
  llhttp_t parser_{};
  HttpResult result_;
  char read_buf_[16384];
};

HttpFetch* startHttpRequest(uv_loop_t* loop, const HttpUrl& url, HttpRequest request,
                            uint64_t timeout_ms, size_t max_body, HttpDone done) {
  auto* fetch = new HttpFetch(loop, url, max_body, false);
  fetch->one_shot = true;
  fetch->owned_body = std::move(request.body);
  fetch->send(request.method, request.headers, fetch->owned_body, timeout_ms, std::move(done));
  return fetch;
}

HttpFetch* startHttpGet(uv_loop_t* loop, const HttpUrl& url, uint64_t timeout_ms, size_t max_body,
                        HttpDone done) {
  HttpRequest get;
  get.headers.emplace_back("Accept", "application/jwk-set+json, application/json");
  return startHttpRequest(loop, url, std::move(get), timeout_ms, max_body, std::move(done));
}

void cancelHttpGet(HttpFetch* fetch) {
  if (fetch) fetch->release();
}

HttpFetch* openHttpConnection(uv_loop_t* loop, const HttpUrl& url, size_t max_body) {
  return new HttpFetch(loop, url, max_body, true);
}

void sendHttpRequest(HttpFetch* connection, std::string_view method, const HttpHeaders& headers,
                     std::string_view body, uint64_t timeout_ms, HttpDone done) {
  connection->send(method, headers, body, timeout_ms, std::move(done));
}

void cancelHttpRequest(HttpFetch* connection) { connection->cancel(); }

void closeHttpConnection(HttpFetch* connection) {
  if (connection) connection->release();
}

uint64_t httpConnectionsOpened(const HttpFetch* connection) { return connection->connects(); }

}  // namespace gw::jwt
