// A minimal non-blocking HTTP/1.1 client on a libuv loop: what the JWKS fetcher (GET) and
// the trace exporter (POST) need (one request per connection, a bounded body, one deadline
// for everything), built on the gateway's own parts (libuv, llhttp) rather than a blocking
// library.
//
// Contract:
// - startHttpGet() and cancelHttpGet() are called on the loop's thread; `done` runs there,
//   exactly once, unless cancel() came first. The object frees itself afterwards.
// - Bytes pass through a Transport between the socket and HTTP. http:// uses the plain
//   one; https:// needs a TLS Transport (an SSL object on memory BIOs implements the same
//   four calls), which the gateway does not have yet: such URLs fail with a clear error.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gw::jwt {

struct HttpUrl {
  bool https = false;
  std::string host;  // without IPv6 brackets
  uint16_t port = 0;
  std::string target;     // path and query; "/" at least
  std::string authority;  // the Host header: host[:port] as written
};

// http://host[:port]/path?query and https://...; no userinfo, no fragment.
std::optional<HttpUrl> parseHttpUrl(std::string_view url, std::string* error);

struct HttpResult {
  int status = 0;  // 0 when no complete response arrived
  std::string body;
  std::string error;  // empty when a complete response arrived
  std::string retry_after;  // the response's Retry-After, if short enough to be one
};

// What startHttpRequest sends besides the request line, Host, User-Agent and Connection.
struct HttpRequest {
  std::string method = "GET";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // sent with a Content-Length when the method is not GET
};

// The byte path between the socket and HTTP.
class Transport {
 public:
  virtual ~Transport() = default;
  // Connected: bytes to send first (a TLS ClientHello), possibly none.
  virtual bool start(std::string& to_socket, std::string& error) = 0;
  // Application bytes may flow (a TLS handshake has completed).
  virtual bool ready() const = 0;
  virtual bool wrap(std::string_view plain, std::string& to_socket, std::string& error) = 0;
  // Socket bytes in; application bytes out, and bytes to send back (handshake, alerts).
  virtual bool unwrap(std::string_view from_socket, std::string& plain, std::string& to_socket,
                      std::string& error) = 0;
};

// The Transport for `url`, or null with `error` set (https:// for now).
std::unique_ptr<Transport> makeTransport(const HttpUrl& url, std::string* error);

// One GET in flight; opaque.
class HttpFetch;
using HttpDone = std::function<void(HttpResult&&)>;

// Resolves, connects (each resolved address in turn), sends the request, reads the
// response. Fails on a body over `max_body` bytes and when `timeout_ms` passes first.
HttpFetch* startHttpRequest(uv_loop_t* loop, const HttpUrl& url, HttpRequest request,
                            uint64_t timeout_ms, size_t max_body, HttpDone done);
// A GET asking for a JWK set.
HttpFetch* startHttpGet(uv_loop_t* loop, const HttpUrl& url, uint64_t timeout_ms, size_t max_body,
                        HttpDone done);
// No `done` after this; the fetch frees itself once its handles have closed.
void cancelHttpGet(HttpFetch* fetch);

}  // namespace gw::jwt
