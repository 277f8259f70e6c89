#include "gateway/exchange.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

#include "gateway/access_log.h"
#include "gateway/admin/admin.h"
#include "gateway/client_ip.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/path.h"
#include "gateway/router.h"
#include "gateway/server.h"
#include "gateway/tls/tls_session.h"
#include "gateway/worker.h"

namespace gw {

Exchange::Exchange() {
  response.headers.setArena(&arena);
  ctx.arena = &arena;
  ctx.driver = this;
  ctx.response_headers_to_add.setArena(&arena);
}

void Exchange::reset() {
  headers.clear();
  response.clear();
  ctx.recycle();  // ctx.worker is set again by begin()
  arena.reset();
  path_buf.clear();
  upgrade_value = {};
  request_framing = BodyFraming::None;
  content_length = 0;
  head_method = head_complete = request_complete = response_started = response_complete = false;
  upgrade = tunnel = waiting_filter = false;
  upstream = nullptr;
  upstream_name = upstream_endpoint = {};
  status = 0;
  error_code = {};
  start_ns = upstream_start_ns = upstream_end_ns = 0;
  bytes_in = bytes_out = 0;
  trace.reset();
  stream_ = nullptr;
  generation_ = nullptr;
  aborted_ = false;
  filters_run_ = 0;
  upstream_head_.clear();
  upstream_fields_.clear();
  request_trailers.clear();
  upstream_request_ = {};
  host_from_endpoint_ = false;
  held_body_.clear();
  grpc = false;
  grpc_status = {};
  refused_status_ = 0;
  grpc_timeout_ms_ = 0;
  refusals_ = 0;
  waiting_upstream_ = retried_ = attempt_open_ = breaker_trial_ = false;
  attempts_ = 0;
  endpoint_index_ = SIZE_MAX;
  retry_timer_ = nullptr;
  body_bytes_ = 0;
}

void Exchange::begin(DownstreamStream& stream, Worker& worker) {
  stream_ = &stream;
  worker_ = &worker;
  admin_ = stream.admin();
  ctx.worker = &worker;
  // Known before the head is parsed: answers to early refusals carry them too (HSTS,
  // the log's tls and client_ip fields).
  ctx.tls = stream.tlsInfo() != nullptr;
  ctx.peer_ip = {peer_ip_text_, formatIp16(stream.peerIp16(), peer_ip_text_)};
  ctx.client_ip = ctx.peer_ip;
  start_ns = monotonicNs();
  ctx.monotonic_ns = start_ns;
  ctx.now_ms = wallClockMs();
  generation_ = worker.pinGeneration();
  if (!admin_) metrics::local().add(metrics::Id::RequestsInFlight, {}, 1);
}

void Exchange::identifyClient() {
  const Config& cfg = *generation_->runtime->config;
  ctx.config = &cfg;
  ctx.max_body_bytes = cfg.limits.max_body_bytes;
  const DownstreamStream::Ip16& peer16 = stream_->peerIp16();
  std::string_view xff = headers.get("x-forwarded-for");
  if (!cfg.trusted_proxies.empty() && headers.count("x-forwarded-for") > 1) {
    // Several fields are one list (RFC 9110 §5.3): the right-most hop is in the last one.
    std::string joined;
    for (const Header& h : headers) {
      if (!equalsIgnoreCase(h.name, "x-forwarded-for")) continue;
      if (!joined.empty()) joined += ", ";
      joined += h.value;
    }
    xff = arena.copy(joined);
  }
  ctx.client_ip = resolveClientIp(cfg.trusted_proxies, ctx.peer_ip, peer16, xff, ctx.client_ip16);
  // Keep what the log and the upstream request need past the head in the arena: the
  // codec's bytes of it may be reused as soon as the body starts flowing.
  if (ctx.client_ip.data() != ctx.peer_ip.data()) ctx.client_ip = arena.copy(ctx.client_ip);
  if (!cfg.trusted_proxies.empty() && isTrusted(cfg.trusted_proxies, peer16)) {
    ctx.forwarded_https = equalsIgnoreCase(headers.get("x-forwarded-proto"), "https");
  }
}

bool Exchange::acceptTarget(std::string_view raw, RequestTarget& target) {
  if (!parseRequestTarget(raw, ctx.method, target) || target.asterisk ||
      normalizePath(target.path, path_buf) != PathResult::Ok) {
    return false;
  }
  ctx.path = path_buf;
  ctx.query = arena.copy(target.query);
  return true;
}

void Exchange::onRequestHead(const RequestTarget& target, bool websocket) {
  const Config& cfg = *ctx.config;
  size_t listener = stream_->listenerIndex();
  // Not when a trusted proxy says the client already speaks https: behind a load balancer
  // that terminates TLS, redirecting would loop.
  if (!admin_ && listener < cfg.listeners.size() &&
      cfg.listeners[listener].redirect_https && !ctx.forwarded_https) {
    redirectToHttps(target);
    return;
  }
  // The verified client certificate (mTLS) is the gateway's word, never the client's.
  headers.remove("x-client-cert-subject");
  const TlsHandshakeInfo* tls = stream_->tlsInfo();
  if (tls && !tls->peer_subject.empty()) headers.addRef("X-Client-Cert-Subject", tls->peer_subject);
  if (admin_) {
    answerAdmin();
    return;
  }
  removeHopByHop(headers);
  if (grpcRequest()) {
    bool found = false;
    std::string_view timeout = headers.get("grpc-timeout", &found);
    if (found) grpc_timeout_ms_ = parseGrpcTimeout(timeout);
  }
  if (cfg.tracing) trace.begin(*cfg.tracing, headers, *worker_, arena, stream_->protocol(), ctx.host);
  route(websocket);
}

void Exchange::route(bool websocket) {
  const Runtime& rt = *generation_->runtime;
  ctx.route = nullptr;
  if (ctx.method == "OPTIONS" && headers.has("origin")) {
    // A CORS preflight asks about the request that will follow: the route that request
    // takes answers it with its CORS policy, so a route limited to POST still answers its
    // own preflights. Only a route with `cors` will: one without would forward an OPTIONS
    // its `methods` do not allow.
    bool preflight = false;
    std::string_view requested = headers.get("access-control-request-method", &preflight);
    const RouteConfig* target =
        preflight ? rt.router->match(ctx.host, ctx.path, requested, headers) : nullptr;
    if (target && std::any_of(target->chain.begin(), target->chain.end(), [](const auto& f) {
          return f->order() == FilterOrder::Cors;
        })) {
      ctx.route = target;
    }
  }
  if (!ctx.route) ctx.route = rt.router->match(ctx.host, ctx.path, ctx.method, headers);
  if (!ctx.route) {
    // The default request_id still takes the client's id, so the 404 body carries it.
    for (const auto& f : ctx.config->default_chain) {
      if (f->order() != FilterOrder::RequestId) break;
      f->onRequestHeaders(ctx, headers);
      ++filters_run_;
    }
    reject(404, "No route for this request");
    return;
  }
  upstream_name = ctx.route->upstream;
  if (websocket && !ctx.route->websocket) {
    reject(400, "WebSocket upgrade is not enabled on this route");
    return;
  }
  upgrade = websocket;
  runRequestFilters();
}

void Exchange::redirectToHttps(const RequestTarget& target) {
  uint16_t port = 443;
  for (const ListenerConfig& l : ctx.config->listeners) {
    if (!l.tls) continue;
    const sockaddr* sa = l.address.sa();
    port = sa->sa_family == AF_INET6 ? ntohs(reinterpret_cast<const sockaddr_in6*>(sa)->sin6_port)
                                     : ntohs(reinterpret_cast<const sockaddr_in*>(sa)->sin_port);
    break;
  }
  std::string location = "https://";
  location += stripPort(ctx.host);
  if (port != 443) location += ":" + std::to_string(port);
  location.append(target.path);  // as received: the https side normalises it again
  if (target.has_query) {
    location += '?';
    location.append(target.query);
  }
  ctx.response_headers_to_add.add("Location", location);
  respond(308, "", "", {});
}

void Exchange::runRequestFilters() {
  const auto& chain = ctx.route->chain;
  bool body_checked = false;
  for (size_t i = filters_run_; i < chain.size(); ++i) {
    if (!body_checked && chain[i]->order() > FilterOrder::BodyLimit) {
      body_checked = true;
      if (content_length > ctx.max_body_bytes) {
        stream_->endAfterResponse();
        reject(413, "Request body too large");
        return;
      }
    }
    filters_run_ = i + 1;
    FilterStatus s = chain[i]->onRequestHeaders(ctx, headers);
    if (s == FilterStatus::StopReplied) return;
    if (s == FilterStatus::StopWait) {
      waiting_filter = true;
      stream_->holdRequestHead(true);
      return;
    }
  }
  if (!body_checked && content_length > ctx.max_body_bytes) {
    stream_->endAfterResponse();
    reject(413, "Request body too large");
    return;
  }
  proxyRequest();
}

void Exchange::continueRequest() {
  EventScope scope(this);
  if (!waiting_filter || aborted_) return;
  waiting_filter = false;
  stream_->holdRequestHead(false);
  stream_->resumeReading();
  runRequestFilters();
  if (aborted_ || response_started || waiting_filter) return;
  stream_->resumeRequest();
}

// ---------------------------------------------------------------------------------------
// Answers

void Exchange::runResponseFilters() {
  const std::vector<std::shared_ptr<const Filter>>* chain = nullptr;
  if (ctx.route) {
    chain = &ctx.route->chain;
  } else if (ctx.config) {
    chain = &ctx.config->default_chain;
  }
  if (chain) {
    for (size_t i = chain->size(); i-- > 0;) {
      const Filter& f = *(*chain)[i];
      if (i < filters_run_ || f.runsOnEveryResponse()) f.onResponseHeaders(ctx, response);
    }
  }
  for (const Header& h : ctx.response_headers_to_add) response.headers.addRef(h.name, h.value);
}

void Exchange::sendResponseHead(int code, bool length_known) {
  response_started = true;
  status = code;
  stream_->sendHead(code, response.headers, length_known);
}

std::string_view Exchange::generateRequestId() { return worker_->newRequestId(arena); }

void Exchange::sendResponse(int code, std::string_view content_type, std::string_view body) {
  EventScope scope(this);
  if (aborted_ || response_started) return;
  if (upstream) {
    upstream->abort();
    upstream = nullptr;
  }
  waiting_filter = false;
  stream_->holdRequestHead(false);
  respond(code, content_type, body, {});
}

void Exchange::respond(int code, std::string_view content_type, std::string_view body,
                       std::string_view error, const HeaderPairs* extra_headers) {
  response.status = code;
  response.local_reply = true;
  response.headers.clear();
  response.headers.addRef("Date", worker_->httpDate());
  if (!content_type.empty()) response.headers.addRef("Content-Type", content_type);
  if (extra_headers) {
    for (const auto& [name, value] : *extra_headers) response.headers.add(name, value);
  }
  if (code != 204 && code != 304 && code >= 200) {
    char len[24];
    auto res = std::to_chars(len, len + sizeof len, body.size());
    response.headers.add("Content-Length", std::string_view(len, size_t(res.ptr - len)));
  }
  error_code = error;
  runResponseFilters();
  // The unread body makes the stream unusable for another request.
  if (!request_complete && request_framing != BodyFraming::None) stream_->endAfterResponse();
  sendResponseHead(code, true);
  if (!head_method) stream_->sendBody(body.data(), body.size());
  response_complete = true;
  stream_->endResponse();
  stream_->flush();
}

void Exchange::reject(int code, std::string_view message) {
  static const uint16_t kReasons[] = {
      metrics::labelId("bad_request"),      metrics::labelId("no_route"),
      metrics::labelId("timeout"),          metrics::labelId("body_too_large"),
      metrics::labelId("uri_too_long"),     metrics::labelId("headers_too_large"),
      metrics::labelId("upstream_error"),   metrics::labelId("upstream_unavailable"),
      metrics::labelId("upstream_timeout")};
  size_t reason = 0;
  switch (code) {
    case 404: reason = 1; break;
    case 408: reason = 2; break;
    case 413: reason = 3; break;
    case 414: reason = 4; break;
    case 431: reason = 5; break;
    case 502: reason = 6; break;
    case 503: reason = 7; break;
    case 504: reason = 8; break;
    default: break;
  }
  if (!admin_) {
    uint16_t route_label = ctx.route ? ctx.route->metrics_label : 0;
    metrics::local().add(metrics::Id::RequestRejected, {route_label, kReasons[reason], 0});
  }
  // After a malformed request nothing more on this stream can be trusted.
  if (code == 400) stream_->endAfterResponse();
  sendLocalReply(code, errorCodeFor(code), message);
}

bool Exchange::grpcRequest() {
  // SPEC §8: an HTTP/2 request with content-type application/grpc, +proto, ;charset…
  if (!grpc && stream_->protocol() == "HTTP/2") {
    std::string_view type = headers.get("content-type");
    grpc = type.size() >= 16 && equalsIgnoreCase(type.substr(0, 16), "application/grpc") &&
           (type.size() == 16 || type[16] == '+' || type[16] == ';');
  }
  return grpc;
}

namespace {

// SPEC §8's mapping of the gateway's own HTTP answers to gRPC status codes.
std::string_view grpcStatusFor(int http_status) {
  switch (http_status) {
    case 400: return "13";  // INTERNAL
    case 401: return "16";  // UNAUTHENTICATED
    case 403: return "7";   // PERMISSION_DENIED
    case 404: return "12";  // UNIMPLEMENTED
    case 413:
    case 429:
    case 431: return "8";   // RESOURCE_EXHAUSTED
    case 502:
    case 503: return "14";  // UNAVAILABLE
    case 504: return "4";   // DEADLINE_EXCEEDED
    default: return "2";    // UNKNOWN
  }
}

}  // namespace

uint64_t parseGrpcTimeout(std::string_view v) {
  // "TimeoutValue TimeoutUnit": at most 8 digits, then H, M, S, m, u or n (gRPC over
  // HTTP/2). Anything else is no deadline at all, as gRPC servers read it. Rounded up to a
  // millisecond: a deadline must not pass early.
  if (v.size() < 2 || v.size() > 9) return 0;
  uint64_t n = 0;
  for (size_t i = 0; i + 1 < v.size(); ++i) {
    if (v[i] < '0' || v[i] > '9') return 0;
    n = n * 10 + uint64_t(v[i] - '0');
  }
  uint64_t ms;
  switch (v.back()) {
    case 'H': ms = n * 3600000; break;
    case 'M': ms = n * 60000; break;
    case 'S': ms = n * 1000; break;
    case 'm': ms = n; break;
    case 'u': ms = (n + 999) / 1000; break;
    case 'n': ms = (n + 999999) / 1000000; break;
    default: return 0;
  }
  return ms == 0 ? 1 : ms;
}

void Exchange::respondGrpc(int code, std::string_view error, std::string_view message) {
  // A trailers-only response (one HEADERS frame with END_STREAM): HTTP 200, the status in
  // grpc-status, the message percent-encoded in grpc-message (gRPC over HTTP/2).
  response.status = 200;
  response.local_reply = true;
  response.headers.clear();
  response.headers.addRef("date", worker_->httpDate());
  response.headers.addRef("content-type", "application/grpc");
  grpc_status = grpcStatusFor(code);
  response.headers.addRef("grpc-status", grpc_status);
  size_t n = 0;
  char* encoded = arena.allocate(message.size() * 3);
  static const char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : message) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      encoded[n++] = char(c);
    } else {
      encoded[n++] = '%';
      encoded[n++] = kHex[c >> 4];
      encoded[n++] = kHex[c & 15];
    }
  }
  response.headers.addRef("grpc-message", {encoded, n});
  error_code = error;
  refused_status_ = code;
  runResponseFilters();
  if (!response.headers.has("x-request-id")) response.headers.addRef("x-request-id", ctx.request_id);
  if (!request_complete && request_framing != BodyFraming::None) stream_->endAfterResponse();
  sendResponseHead(200, true);
  response_complete = true;
  stream_->endResponse();
  stream_->flush();
}

void Exchange::sendLocalReply(int code, std::string_view error, std::string_view message) {
  EventScope scope(this);
  if (aborted_) return;
  if (response_started) {
    // Part of a response may already be on the wire: the only honest signal left is a
    // reset. Else it is the head of an upstream response that failed before any of it
    // left: taken back, and answered instead.
    if (tunnel || !stream_->takeBackHead()) {
      stream_->reset();
      return;
    }
    response_started = false;
  }
  // The answer may come while the request waits for an upstream (a chunked body passing
  // the limit in the bulkhead queue or in a retry's backoff): nothing may wake it later.
  detachUpstream();
  if (waiting_filter && request_framing == BodyFraming::None && !request_complete) {
    stream_->completeBodilessRequest();
  }
  waiting_filter = false;
  stream_->holdRequestHead(false);
  if (ctx.request_id.empty()) ctx.request_id = worker_->newRequestId(arena);
  if (!ctx.config) ctx.config = generation_->runtime->config.get();
  if (grpcRequest()) {
    respondGrpc(code, error, message);
    return;
  }
  std::string body = errorBody(error, message, ctx.request_id, wallClockMs());
  respond(code, "application/json", arena.copy(body), error);
}

void Exchange::answerAdmin() {
  if (ctx.request_id.empty()) ctx.request_id = worker_->newRequestId(arena);
  AdminResponse res = handleAdmin(worker_->server(), ctx.method, ctx.path, ctx.request_id);
  std::string_view body = arena.copy(res.body);
  std::string_view type = arena.copy(res.content_type);
  respond(res.status, type, body, res.status >= 400 ? errorCodeFor(res.status) : "", &res.headers);
}

// ---------------------------------------------------------------------------------------
// End

void Exchange::abort() {
  if (waiting_filter && ctx.route && filters_run_ > 0) {
    // The filter's asynchronous call must not resume a request that is gone.
    waiting_filter = false;
    stream_->holdRequestHead(false);
    ctx.route->chain[filters_run_ - 1]->onAbandon(ctx);
  }
  aborted_ = true;
  detachUpstream();
  if (status == 0) status = 499;  // nginx's "client closed request", for the log
}

void Exchange::finish() {
  recordMetrics();
  if (!admin_ && (head_complete || status != 0)) {
    // A request no filter and no answer of the gateway's gave an id needs one only for
    // the access log: generated here, not for every request.
    if (ctx.request_id.empty() && log::accessLogEnabled()) {
      ctx.request_id = worker_->newRequestId(arena);
    }
    writeAccessLog(*worker_, *this);
    if (trace.sampled) tracing::exportServerSpan(*this);
  }
  worker_->unpinGeneration(generation_);
  generation_ = nullptr;
}

void Exchange::recordMetrics() {
  if (admin_) return;
  metrics::MetricStore& m = metrics::local();
  m.add(metrics::Id::RequestsInFlight, {}, -1);
  if (status == 0) return;
  uint16_t route_label = ctx.route ? ctx.route->metrics_label : 0;
  m.add(metrics::Id::RequestsTotal, {route_label, metrics::methodLabel(ctx.method), metrics::statusLabel(status),
                                     metrics::protocolLabel(stream_->protocol())});
  uint64_t now_ns = monotonicNs();
  m.observe(metrics::Id::RequestDuration, {route_label, 0, 0}, now_ns - start_ns);
  if (grpc) {
    m.add(metrics::Id::GrpcResponses,
          {route_label, metrics::grpcStatusLabel(grpc_status), 0});
  }
  // The gateway's own refusals (error_code set) count as errors on /status: an operator
  // watching a route wants to see 401s and 429s, not only the upstream's 5xx. A gRPC
  // refusal is an HTTP 200: its HTTP-equivalent status counts.
  int refused_status = refused_status_ ? refused_status_ : status;
  bool refused = !error_code.empty() && refused_status >= 400;
  m.windows().record(route_label, now_ns,
                     {now_ns - start_ns, status >= 500 || refused, refused_status == 429 && refused});
}

}  // namespace gw
