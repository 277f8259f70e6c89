// A minimal non-blocking HTTP/1.1 client on a libuv loop: what the JWKS fetcher (GET, one
// request per connection) and the trace exporter (POSTs over one kept-alive connection)
// need: a bounded body, one deadline per request, built on the gateway's own parts
// (libuv, llhttp) rather than a blocking library.
//
// Contract:
// - Every call is made on the loop's thread; `done` runs there, exactly once per request,
//   unless the request was cancelled first, and never before the call that started the
//   request has returned.
// - startHttpRequest()/startHttpGet(): one request on a connection of its own
//   (`Connection: close`); the object frees itself after `done` or cancelHttpGet().
// - openHttpConnection(): a connection kept between requests (one request at a time),
//   until closeHttpConnection(). It connects when the first request is sent and again
//   after the connection was lost: the server closed it (seen while idle, or a response
//   that does not allow keep-alive), a request failed or timed out. A request on a
//   connection the server closed at the same moment fails with status 0 like any other
//   connection failure (not resent: the caller decides about retries).
// - Bytes pass through a Transport between the socket and HTTP: the plain one for
//   http://, a TLS client session on memory BIOs for https:// (a new one per connection).
//   On the plain one a request body goes to the socket from the caller's memory.
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

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// What startHttpRequest sends besides the request line, Host, User-Agent and Connection.
struct HttpRequest {
  std::string method = "GET";
  HttpHeaders headers;
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
  // wrap() only copies: a body may be written to the socket from where it is.
  virtual bool plain() const { return false; }
  virtual bool wrap(std::string_view plain, std::string& to_socket, std::string& error) = 0;
  // Socket bytes in; application bytes out, and bytes to send back (handshake, alerts).
  virtual bool unwrap(std::string_view from_socket, std::string& plain, std::string& to_socket,
                      std::string& error) = 0;
};

// The Transport for `url`, or null with `error` set (a TLS context that cannot be built).
std::unique_ptr<Transport> makeTransport(const HttpUrl& url, std::string* error);

// A connection and its request in flight; opaque.
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

// A kept-alive connection to `url`'s origin (see the contract above); nothing is sent
// before the first sendHttpRequest().
HttpFetch* openHttpConnection(uv_loop_t* loop, const HttpUrl& url, size_t max_body);
// `method` `url.target` with `headers`, and `body` with a Content-Length unless the method
// is GET. `body` is not copied: it must stay as it is until `done` has run or
// cancelHttpRequest() was called. One request at a time.
void sendHttpRequest(HttpFetch* connection, std::string_view method, const HttpHeaders& headers,
                     std::string_view body, uint64_t timeout_ms, HttpDone done);
// The request in flight, if any, ends without `done`; the connection is closed.
void cancelHttpRequest(HttpFetch* connection);
// Cancels what is in flight and frees the connection once its handles have closed.
void closeHttpConnection(HttpFetch* connection);
// TCP connections established so far (a kept-alive one counts once).
uint64_t httpConnectionsOpened(const HttpFetch* connection);

}  // namespace gw::jwt
