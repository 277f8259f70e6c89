// What an Exchange sees of one upstream attempt, whatever protocol carries it: an HTTP/1.1
// connection (one request at a time) or one stream of a multiplexed HTTP/2 connection.
//
// Contract:
// - Handed out by UpstreamPool::acquire() with its handler attached. The handler gets
//   exactly one terminal callback: onUpstreamComplete() or onUpstreamError(). After
//   complete it MUST call release() (or abort()); after an error it MUST NOT touch the
//   stream again once the callback returned.
// - Request order: sendHead once, sendBody any number of times, endRequest once. Body
//   bytes are views valid until the next flush() returns; what is not on the wire by
//   then is copied.
// - abort() detaches the handler at any time: HTTP/1.1 closes the connection, HTTP/2
//   resets the stream (CANCEL) and keeps the connection for the others.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gateway/buffer.h"
#include "gateway/headers.h"
#include "gateway/http1/response_parser.h"
#include "gateway/config/config.h"

namespace gw {

enum class UpstreamError {
  // The two connect errors leave the request as it was queued: nothing reached the upstream.
  ConnectFailed,    // refused, unreachable
  ConnectTimeout,
  TlsFailed,        // the TLS handshake failed (e.g. a certificate not trusted): connected,
                    // but not to an upstream we can talk to
  NoHttp2,          // `protocol: h2` over TLS, and ALPN did not choose h2
  ResponseTimeout,  // no response head within the timeout
  Reset,            // closed or reset before a complete response
  Refused,          // HTTP/2: the upstream refused the stream unprocessed (REFUSED_STREAM, or
                    // beyond a GOAWAY's last stream): safe to send again
  BadResponse,      // not a response every HTTP parser reads the same way
  HeadTooLarge,     // no complete head within limits.max_response_header_bytes
};

class UpstreamHandler {
 public:
  virtual ~UpstreamHandler() = default;
  virtual void onUpstreamHead(UpstreamResponseHead& head) = 0;
  virtual void onUpstreamBody(const char* data, size_t len) = 0;
  // The response's trailer fields (HTTP/2 trailers, HTTP/1.1 chunked trailers), before
  // onUpstreamComplete(); views valid during the call.
  virtual void onUpstreamTrailers(HeaderList& trailers) = 0;
  // The response is complete. The stream can be released now.
  virtual void onUpstreamComplete() = 0;
  // After each read was parsed: bytes handed to onUpstreamBody() are valid until return.
  virtual void onUpstreamReadDone() = 0;
  // Terminal. `reused`: the connection had served requests before (the request may be
  // sent again if nothing of the response arrived).
  virtual void onUpstreamError(UpstreamError e, bool response_started, bool reused) = 0;
  // The request bytes queued fell below the low watermark.
  virtual void onUpstreamDrained() = 0;
  // A request queued by acquire() (bulkhead full) may try again; or, with `expired`, it
  // waited longer than the connect timeout.
  virtual void onUpstreamAvailable(bool expired) = 0;
  // After a 101 the connection is a byte tunnel: raw bytes from the upstream, valid until
  // onUpstreamReadDone() returns. Its end is reported as onUpstreamError(Reset, true, ..).
  virtual void onUpstreamTunnelData(const char* data, size_t len) = 0;
};

enum class UpstreamProtocolUsed : uint8_t { Http1, H2 };

// The request's head as each protocol needs it, built once per request by the exchange
// (only the forms its upstream may speak) and sent by every attempt.
struct UpstreamRequestHead {
  // HTTP/1.1: the request line and fields but the final blank line, as views that outlive
  // every attempt; the endpoint's Host follows when host_from_endpoint.
  const Buffer* http1 = nullptr;
  bool host_from_endpoint = false;
  // HTTP/2: the pseudo-header fields first (":method", ":scheme", ":authority" unless
  // host_from_endpoint, ":path"), then the fields, names in lower case, text that outlives
  // every attempt.
  const HeaderList* h2 = nullptr;
  bool body = false;     // a body follows
  bool chunked = false;  // its length is unknown (HTTP/1.1 frames it chunked)
  bool head_request = false;
  uint64_t response_timeout_ms = 0;  // 0: none
};

class UpstreamStream {
 public:
  virtual UpstreamProtocolUsed protocol() const = 0;
  // Queues the head; sent when the connection is up.
  virtual void sendHead(const UpstreamRequestHead& head) = 0;
  virtual void sendBody(const char* data, size_t len) = 0;
  // The request is complete (with its trailers, if any; views copied now): the response
  // timeout runs from here. A client slow to send its body is not the upstream's fault.
  virtual void endRequest(const HeaderList* trailers) = 0;
  // Sends what is queued; safe while connecting (sent once connected).
  virtual void flush() = 0;
  // Request bytes not yet on the wire.
  virtual size_t pendingBytes() const = 0;
  // After ConnectFailed/ConnectTimeout/Refused: moves the body bytes queued (not the head,
  // not any framing) to `to`, for the next attempt, whatever its protocol. False when some
  // already went out: the body cannot be sent again whole.
  virtual bool takeUnsentBody(Buffer& to) = 0;
  // The next attempt queues them after its head, framed as its protocol frames a body.
  virtual void resendBody(Buffer& from) = 0;
  virtual void pauseReading() = 0;
  virtual void resumeReading() = 0;
  virtual bool reused() const = 0;
  virtual const SocketAddress& endpoint() const = 0;
  virtual size_t endpointIndex() const = 0;
  // The response is complete and the request was all sent: back to the pool.
  virtual void release() = 0;
  // Detaches the handler (the downstream went away or gave up).
  virtual void abort() = 0;

 protected:
  ~UpstreamStream() = default;
};

}  // namespace gw
