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

class HttpFetch {
 public:
  HttpFetch(uv_loop_t* loop, HttpUrl url, HttpRequest request, size_t max_body, HttpDone done,
            std::unique_ptr<Transport> transport)
      : loop_(loop),
        url_(std::move(url)),
        request_(std::move(request)),
        max_body_(max_body),
        done_(std::move(done)),
        transport_(std::move(transport)) {
    llhttp_init(&parser_, HTTP_RESPONSE, &settings());
    parser_.data = this;
  }

  // `done` never runs before begin() has returned: failures found here are reported
  // from the timer, so the caller never sees its callback re-entered.
  void begin(uint64_t timeout_ms, std::string transport_error) {
    uv_timer_init(loop_, &timer_);
    timer_.data = this;
    ++open_handles_;
    if (!transport_) {
      failSoon(std::move(transport_error));
      return;
    }
    uv_timer_start(&timer_, onTimeout, timeout_ms, 0);
    sockaddr_storage ss{};
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    // An address literal needs no resolver (nor a trip through libuv's thread pool).
    if (uv_ip4_addr(url_.host.c_str(), url_.port, s4) == 0 ||
        uv_ip6_addr(url_.host.c_str(), url_.port, s6) == 0) {
      addrs_.push_back(ss);
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
      failSoon(std::string("cannot resolve ") + url_.host + ": " + uv_strerror(rc));
      return;
    }
    resolving_ = true;
  }

  void cancel() {
    done_ = nullptr;
    finish("cancelled");
  }

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

  static void onResolved(uv_getaddrinfo_t* req, int status, addrinfo* res) noexcept {
    auto* self = static_cast<HttpFetch*>(req->data);
    self->resolving_ = false;
    if (!self->finished_) {
      for (addrinfo* a = res; status == 0 && a; a = a->ai_next) {
        sockaddr_storage ss{};
        std::memcpy(&ss, a->ai_addr, std::min<size_t>(a->ai_addrlen, sizeof ss));
        self->addrs_.push_back(ss);
      }
      if (status != 0 || self->addrs_.empty()) {
        self->finish("cannot resolve " + self->url_.host + ": " +
                     (status != 0 ? uv_strerror(status) : "no address"));
      } else {
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
    if (status == UV_ECANCELED || self->finished_) return;
    if (status < 0) {
      self->connect_error_ = uv_strerror(status);
      self->closeTcp();  // its close callback tries the next address
      return;
    }
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
    if (request_sent_ || finished_ || !transport_->ready()) return;
    request_sent_ = true;
    std::string request = request_.method + " " + url_.target + " HTTP/1.1\r\nHost: " +
                          url_.authority + "\r\nUser-Agent: gateway/" GATEWAY_VERSION
                          "\r\nConnection: close\r\n";
    for (const auto& [name, value] : request_.headers) request += name + ": " + value + "\r\n";
    if (request_.method != "GET") request += "Content-Length: " + std::to_string(request_.body.size()) + "\r\n";
    request += "\r\n";
    request += request_.body;
    request_.body = std::string();  // the batch is not kept twice while the answer is awaited
    std::string out, error;
    if (!transport_->wrap(request, out, error)) {
      finish(error);
      return;
    }
    send(std::move(out));
  }

  void send(std::string bytes) {
    auto* w = new Write{{}, std::move(bytes), this};
    w->req.data = w;
    uv_buf_t buf = uv_buf_init(w->bytes.data(), unsigned(w->bytes.size()));
    ++writes_;
    int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1, onWrite);
    if (rc != 0) {
      --writes_;
      delete w;
      finish(std::string("cannot send the request: ") + uv_strerror(rc));
    }
  }

  static void onWrite(uv_write_t* req, int status) noexcept {
    auto* w = static_cast<Write*>(req->data);
    HttpFetch* self = w->self;
    delete w;
    --self->writes_;
    if (status < 0 && status != UV_ECANCELED && !self->finished_) {
      self->finish(std::string("cannot send the request: ") + uv_strerror(status));
    }
    self->maybeDelete();
  }

  static void onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
    auto* self = static_cast<HttpFetch*>(h->data);
    *buf = uv_buf_init(self->read_buf_, sizeof self->read_buf_);
  }

  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept {
    auto* self = static_cast<HttpFetch*>(s->data);
    if (self->finished_) return;
    if (nread == UV_EOF) {
      llhttp_finish(&self->parser_);
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

  void feed(std::string_view plain) {
    llhttp_errno_t err = llhttp_execute(&parser_, plain.data(), plain.size());
    if (complete_) {
      finish("");
    } else if (err != HPE_OK) {
      finish(too_large_ ? "response body over " + std::to_string(max_body_) + " bytes"
                        : std::string("invalid HTTP response: ") + llhttp_errno_name(err));
    }
  }

  void failSoon(std::string error) {
    timeout_error_ = std::move(error);
    uv_timer_start(&timer_, onTimeout, 0, 0);
  }

  static void onTimeout(uv_timer_t* t) noexcept {
    auto* self = static_cast<HttpFetch*>(t->data);
    self->finish(self->timeout_error_);
  }

  void finish(std::string error) {
    if (finished_) return;
    finished_ = true;
    result_.error = std::move(error);
    if (result_.error.empty()) {
      result_.status = llhttp_get_status_code(&parser_);
    } else {
      result_.status = 0;
    }
    if (open_handles_ > 0 && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_))) {
      uv_timer_stop(&timer_);
      uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onClosed);
    }
    closeTcp();
    if (resolving_) uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_));
    HttpDone done = std::move(done_);
    done_ = nullptr;
    if (done) done(std::move(result_));
    maybeDelete();
  }

  void closeTcp() {
    if (!tcp_open_ || uv_is_closing(reinterpret_cast<uv_handle_t*>(&tcp_))) return;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onClosed);
  }

  static void onClosed(uv_handle_t* h) noexcept {
    auto* self = static_cast<HttpFetch*>(h->data);
    --self->open_handles_;
    if (h == reinterpret_cast<uv_handle_t*>(&self->tcp_)) {
      self->tcp_open_ = false;
      if (!self->finished_) {
        self->connectNext();
        return;
      }
    }
    self->maybeDelete();
  }

  void maybeDelete() {
    if (finished_ && open_handles_ == 0 && !resolving_ && writes_ == 0) delete this;
  }

  static constexpr std::string_view kRetryAfterName = "retry-after";
  static constexpr size_t kMaxRetryAfter = 64;  // an HTTP date is 29 characters

  uv_loop_t* loop_;
  HttpUrl url_;
  HttpRequest request_;
  size_t max_body_;
  HttpDone done_;
  std::unique_ptr<Transport> transport_;
  uv_timer_t timer_{};
  uv_tcp_t tcp_{};
  uv_getaddrinfo_t resolve_{};
  uv_connect_t connect_{};
  std::vector<sockaddr_storage> addrs_;
  size_t next_addr_ = 0;
  std::string connect_error_ = "no address";
  std::string timeout_error_ = "no complete response in time";
  int open_handles_ = 0;
  int writes_ = 0;
  bool tcp_open_ = false;
  bool resolving_ = false;
  bool finished_ = false;
  bool request_sent_ = false;
  bool complete_ = false;
  bool too_large_ = false;
  bool in_value_ = false;
  std::string field_;  // the header name being read, while it may be Retry-After
  llhttp_t parser_{};
  HttpResult result_;
  char read_buf_[16384];
};

HttpFetch* startHttpRequest(uv_loop_t* loop, const HttpUrl& url, HttpRequest request,
                            uint64_t timeout_ms, size_t max_body, HttpDone done) {
  std::string error;
  std::unique_ptr<Transport> transport = makeTransport(url, &error);
  auto* fetch = new HttpFetch(loop, url, std::move(request), max_body, std::move(done),
                              std::move(transport));
  fetch->begin(timeout_ms, std::move(error));
  return fetch;
}

HttpFetch* startHttpGet(uv_loop_t* loop, const HttpUrl& url, uint64_t timeout_ms, size_t max_body,
                        HttpDone done) {
  HttpRequest get;
  get.headers.emplace_back("Accept", "application/jwk-set+json, application/json");
  return startHttpRequest(loop, url, std::move(get), timeout_ms, max_body, std::move(done));
}

void cancelHttpGet(HttpFetch* fetch) {
  if (fetch) fetch->cancel();
}

}  // namespace gw::jwt
