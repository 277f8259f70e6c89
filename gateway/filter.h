// The filter interface: the one header every filter includes.
//
// Contract:
// - A Filter object is built once per route per configuration load and is immutable
//   (all phases are const). It may be used by every worker thread at once, so it MUST
//   NOT keep per-request state in itself; per-request state lives in RequestContext.
//   Per-worker mutable state (caches, connections) is reached through
//   RequestContext::worker_state().
// - The chain runs in the fixed order of SPEC §2 (FilterOrder), whatever the order in
//   the file. A filter that answers a request itself calls ctx.sendLocalReply() and
//   returns StopReplied; the core then runs the response phase of every filter that
//   had run its request phase, plus the filters that act on every response
//   (runsOnEveryResponse(), e.g. security_headers), so the gateway's own answers are
//   decorated too.
// - StopWait: the filter started an asynchronous operation (Redis, JWKS fetch) and
//   MUST later call exactly one of ctx.continueRequest() or ctx.sendLocalReply() on the
//   same worker thread. Until then the request is parked; if the client goes away the
//   core calls onAbandon() instead, and the filter MUST NOT touch the context after it.
// - Phases MUST NOT throw and MUST NOT block.
// - The request HeaderList holds views into the connection's input block: they are valid
//   during the request phase only (the block is reused once the body flows). Whatever a
//   later phase needs (an Origin, a claim) MUST be copied into ctx.arena.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "gateway/headers.h"

struct uv_loop_s;  // uv.h's uv_loop_t, without pulling libuv into every filter

namespace gw {

struct RouteConfig;
struct Config;

// Base class of every filter's parsed configuration (filters/<name>/<name>_config.h).
class FilterConfig {
 public:
  virtual ~FilterConfig() = default;
};

// Position in the chain: SPEC §2's numbered list.
enum class FilterOrder : uint8_t {
  RequestId = 1,
  IpAccess = 2,
  Cors = 3,
  BodyLimit = 4,
  RateLimitBeforeAuth = 5,
  Auth = 6,
  RateLimitAfterAuth = 7,
  SecurityHeaders = 9,
};

enum class FilterStatus { Continue, StopReplied, StopWait };

// What a filter sees of the response about to be sent: the upstream's, or the
// gateway's own (local reply). Filters edit `headers` in place.
struct ResponseHead {
  int status = 0;
  HeaderList headers;
  bool local_reply = false;  // made by the gateway, not the upstream

  void clear() {
    status = 0;
    headers.clear();
    local_reply = false;
  }
};

class RequestContext;

// Per-worker state a filter keeps across requests (a token cache, a Redis connection).
// When the worker stops, shutdown() MUST close every libuv handle the state owns (the
// loop ends only when none is left); the handles' memory MUST stay valid until their
// close callbacks ran, which may be after the state object is destroyed.
class WorkerState {
 public:
  virtual ~WorkerState() = default;
  virtual void shutdown() {}
};

// What a filter may use of the worker that runs its request. Worker thread only.
class WorkerServices {
 public:
  virtual ~WorkerServices() = default;
  virtual ::uv_loop_s* loop() = 0;
  virtual uint32_t workerIndex() const = 0;
  // The state registered under `key` (created by `make` on first use). It lives as long as
  // the worker, across configuration reloads, so key it by what identifies it in the
  // configuration (e.g. "jwt-cache:main"), not by a pointer into one snapshot.
  virtual WorkerState& state(std::string_view key,
                             std::unique_ptr<WorkerState> (*make)(WorkerServices&)) = 0;
  // 128 random bits from the worker's generator (seeded from the kernel).
  virtual void random128(uint64_t out[2]) = 0;
};

class Filter {
 public:
  virtual ~Filter() = default;
  virtual FilterOrder order() const = 0;
  virtual std::string_view name() const = 0;

  virtual FilterStatus onRequestHeaders(RequestContext&, HeaderList& request_headers) const {
    return FilterStatus::Continue;
  }
  virtual void onResponseHeaders(RequestContext&, ResponseHead&) const {}
  virtual void onLog(const RequestContext&) const {}
  virtual void onAbandon(RequestContext&) const {}
  // True for filters whose response phase applies to every response, even one the
  // gateway produced before reaching this filter's request phase.
  virtual bool runsOnEveryResponse() const { return false; }
};

// The core's side of a request, as filters see it. Implemented by the proxy
// (gateway/exchange.h: one per request, whatever codec carried it) and by tests' fakes.
class RequestDriver {
 public:
  virtual ~RequestDriver() = default;
  // The SPEC §3 JSON error.
  virtual void sendLocalReply(int status, std::string_view error_code,
                              std::string_view message) = 0;
  // Any other answer of the gateway's own (a CORS preflight's 204, a redirect). `body`
  // MUST outlive the request (config- or arena-owned); headers come from the filters'
  // response phase and RequestContext::response_headers_to_add.
  virtual void sendResponse(int status, std::string_view content_type, std::string_view body) = 0;
  virtual void continueRequest() = 0;
  // A fresh request id (UUIDv7), arena-owned.
  virtual std::string_view generateRequestId() = 0;
};

// What authentication established about the caller, for the filters after it (rate
// limits keyed by claim) and the log.
class Identity {
 public:
  virtual ~Identity() = default;
  // A claim as text: a string claim as it is, a number or boolean in its JSON form,
  // empty when absent. The view lives as long as the Identity.
  virtual std::string_view claim(std::string_view name) const = 0;
};

// Small per-request scratch a filter may use to carry state from its request phase to
// its response/log phases, indexed by FilterOrder.
struct FilterScratch {
  uint64_t value = 0;
  std::string_view text;  // arena- or config-owned
};

// Everything a filter may read or set about the request in flight.
class RequestContext {
 public:
  // --- set by the core before the chain runs ---
  const Config* config = nullptr;
  const RouteConfig* route = nullptr;
  std::string_view method;
  std::string_view path;    // normalised, without the query
  std::string_view query;   // without '?'; empty if none
  std::string_view host;    // Host header (or :authority), port included as sent
  std::string_view client_ip;  // textual, the real client (trusted_proxies applied)
  uint8_t client_ip16[16]{};   // same, IPv4-mapped form for CIDR checks
  std::string_view peer_ip;    // the TCP peer
  bool tls = false;            // the downstream connection is TLS
  bool forwarded_https = false;  // a trusted proxy said X-Forwarded-Proto: https
  uint64_t now_ms = 0;         // wall clock at request start, milliseconds since epoch
  uint64_t monotonic_ns = 0;   // steady clock at request start

  // --- set by filters ---
  std::string_view request_id;  // arena-owned; the core generates one if still empty
  std::string_view user;        // authenticated subject / API-key name, for logs and limits
  std::shared_ptr<const Identity> identity;  // set by jwt (claims) or api_key
  uint64_t max_body_bytes = 0;  // body_limit sets it; initialised from limits.max_body_bytes
  // Headers added to the response whatever it is (e.g. RateLimit-*, X-Request-ID).
  HeaderList response_headers_to_add;

  StringArena* arena = nullptr;
  WorkerServices* worker = nullptr;
  FilterScratch scratch[10];

  RequestDriver* driver = nullptr;

  void sendLocalReply(int status, std::string_view error_code, std::string_view message) {
    driver->sendLocalReply(status, error_code, message);
  }
  void sendResponse(int status, std::string_view content_type = {}, std::string_view body = {}) {
    driver->sendResponse(status, content_type, body);
  }
  void continueRequest() { driver->continueRequest(); }

  // Back to a new request's state, keeping what belongs to the slot rather than to the
  // request: the arena and driver pointers, and response_headers_to_add's capacity (so a
  // pooled request allocates no vector). The caller resets the arena itself.
  void recycle() {
    StringArena* slot_arena = arena;
    RequestDriver* slot_driver = driver;
    HeaderList keep = std::move(response_headers_to_add);
    keep.clear();
    *this = RequestContext();
    response_headers_to_add = std::move(keep);
    arena = slot_arena;
    driver = slot_driver;
  }

  FilterScratch& scratchFor(FilterOrder o) { return scratch[static_cast<int>(o)]; }
  const FilterScratch& scratchFor(FilterOrder o) const { return scratch[static_cast<int>(o)]; }
};

}  // namespace gw
