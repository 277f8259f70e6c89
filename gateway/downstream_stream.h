// What an Exchange sees of the client side of its request: one request/response stream
// of a downstream connection, whatever protocol carries it.
//
// Contract:
// - Implemented by a protocol codec (today Http1ServerCodec, one request at a time per
//   connection; later one object per HTTP/2 stream). The exchange never sees a socket,
//   a parser or the wire format: no chunked framing, no Connection header, no 100
//   Continue, no keep-alive.
// - Worker thread only. A stream outlives its exchange's use of it: the codec releases
//   the exchange (Exchange::finish) only when the outermost EventScope closes.
// - Response order: sendHead once, then sendBody any number of times, then sendTrailers
//   at most once, then endResponse.
//   A response that cannot be completed ends with reset().
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "gateway/headers.h"

namespace gw {

struct TlsHandshakeInfo;

class DownstreamStream {
 public:
  virtual ~DownstreamStream() = default;

  // --- facts about the client side ---
  using Ip16 = uint8_t[16];
  virtual const Ip16& peerIp16() const = 0;  // the TCP peer, IPv4-mapped
  virtual const TlsHandshakeInfo* tlsInfo() const = 0;  // null on plaintext
  virtual size_t listenerIndex() const = 0;  // into Config::listeners; not for admin
  virtual bool admin() const = 0;            // the admin listener
  virtual std::string_view protocol() const = 0;  // "HTTP/1.0", "HTTP/1.1" (the log's field)

  // --- the response ---
  // `length_known`: the body's length is in `headers` (Content-Length) or there is none;
  // otherwise the codec frames it (HTTP/1.1: chunked; HTTP/1.0: until close). A 101
  // makes the stream a byte tunnel: body bytes pass both ways as they are.
  virtual void sendHead(int status, const HeaderList& headers, bool length_known) = 0;
  // A view, not a copy: it MUST stay valid until the next flush() returns (bytes just
  // read from the upstream, arena- or config-owned text).
  virtual void sendBody(const char* data, size_t len) = 0;
  // The response's trailer fields, before endResponse(); copied. HTTP/2 sends them as
  // trailers, HTTP/1.1 after the last chunk (dropped when the body has a length).
  virtual void sendTrailers(const HeaderList& trailers) = 0;
  virtual void endResponse() = 0;
  // Hands what was sent to the socket; what the kernel does not take at once is copied.
  virtual void flush() = 0;
  // Forgets a head sent but not flushed, so that a local reply can take its place. False
  // when part of it may have reached the client.
  virtual bool takeBackHead() = 0;
  // The response cannot be completed: the client must see it cut (HTTP/1.1 closes the
  // connection). Calls Exchange::abort().
  virtual void reset() = 0;
  // Response bytes not yet on the wire: the exchange stops reading the upstream above a
  // high watermark.
  virtual size_t queuedBytes() const = 0;
  // The rest of the request will not be read (an early answer, a refusal, a tunnel's
  // end): after this response the stream cannot carry another request.
  virtual void endAfterResponse() = 0;

  // --- the request ---
  // The request goes upstream: a client that waits before sending its body is told to
  // send it (HTTP/1.1: 100 Continue).
  virtual void requestBodyWanted() = 0;
  // While true the request head's bytes (the views in Exchange::headers) MUST NOT move:
  // a filter waits with views into them.
  virtual void holdRequestHead(bool hold) = 0;
  // Reading the client goes on; what arrives waits until the exchange can take it.
  virtual void resumeReading() = 0;
  // The filters are done with the head (continueRequest): parsing goes on.
  virtual void resumeRequest() = 0;
  // A filter answered while the head was held: a request without a body is complete.
  virtual void completeBodilessRequest() = 0;
  // An upstream took the request: a body held back while it was queued may be parsed
  // (and forwarded) from now on.
  virtual void requestBodyUnblocked() = 0;
  // Request body bytes have somewhere to go again (an upstream connection took the
  // request, or drained its queue).
  virtual void resumeRequestBody() = 0;
  virtual bool requestBodyPaused() const = 0;
  // Bytes the client sent before the tunnel opened are relayed now.
  virtual void relayPendingTunnelBytes() = 0;

  // Every entry point into the exchange from outside the codec (upstream events, filter
  // resumption, timers) is bracketed by these (see Exchange::EventScope).
  virtual void enterEvent() = 0;
  virtual void leaveEvent() = 0;
};

}  // namespace gw
