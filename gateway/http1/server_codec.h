// The HTTP/1.1 server codec: turns a connection's bytes into one Exchange at a time, and
// each exchange's response back into HTTP/1.1 bytes.
//
// Contract:
// - Hosted by its transport (DownstreamConnection), which owns the socket, the TLS link,
//   the input block, the deadlines and the writes; the codec owns what HTTP/1.1 means:
//   llhttp (strict, limits enforced in its callbacks with HPE_USER), the head checks
//   (400/414/431), the request target and Host, chunked bodies both ways, keep-alive and
//   Connection, 100 Continue, HTTP/1.0's close-delimited responses, and the raw bytes of
//   a tunnel after a 101.
// - Requests are handled strictly one at a time: the parser pauses after each complete
//   request, so pipelined requests wait in the input block and are answered in order.
// - It is the DownstreamStream of the request in flight. Its per-request state and the
//   exchange come from the worker's pool as one Http1Request when a request's first byte
//   arrives, and go back when the response has been written (finishRequest) or the
//   connection closed (releaseRequest).
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <string_view>

#include "gateway/buffer.h"
#include "gateway/downstream_stream.h"
#include "gateway/exchange.h"
#include "gateway/http1/http_head.h"
#include "gateway/output_slot.h"

namespace gw {

class DownstreamConnection;

// One request on an HTTP/1.1 connection: its protocol-neutral exchange plus what the
// codec keeps per request. Pooled per worker as one object, so that an idle connection
// holds neither and steady traffic allocates nothing once the pool is warm.
struct Http1Request {
  void recycle();  // back to the pool: as new

  Exchange exchange;
  llhttp_t parser{};
  HeadCollector head;
  TrailerCollector trailer;  // the chunked body's trailer section
  OutputSlot output;  // to the client
  size_t parsed = 0;      // head bytes parsed so far (they stay unconsumed in the block)
  int reject_status = 0;  // set by parser callbacks that refuse the request
  uint64_t chunk_extension_bytes = 0;
  bool keep_alive = true;  // the client's connection can carry another request
  bool http10 = false;
  bool expect_continue = false;
  bool chunked_response = false;
  bool trailers_sent = false;  // the last chunk and trailer fields are queued
  bool response_flushed = false;  // the head was handed to the socket: it cannot be taken back
};

class Http1ServerCodec final : public DownstreamStream {
 public:
  explicit Http1ServerCodec(DownstreamConnection& conn) : conn_(conn) {}

  // --- driven by the transport ---
  // Parses what waits in the input block (a request is begun at its first byte).
  void processInput();
  Http1Request* request() { return req_; }
  const Http1Request* request() const { return req_; }
  Exchange* exchange() { return req_ ? &req_->exchange : nullptr; }
  const Exchange* exchange() const { return req_ ? &req_->exchange : nullptr; }
  // A request body is being read: the transport reads it in bulk.
  bool readingBody() const;
  // Whether the request in progress is still answered once the client half-closes.
  bool answersAfterEof() const;
  // body_read runs while a body is read, reset by each piece of it.
  void watchBody();
  // The gateway's own refusal, through the exchange (counted, answered).
  void reject(int status, std::string_view message) { req_->exchange.reject(status, message); }
  // The response has been written: releases the request. Returns whether the connection
  // carries another; *linger: closing at once would reset client bytes still unread.
  bool finishRequest(bool* linger);
  void abortRequest();
  // The connection closed under a request (its write cancelled): released without answer.
  void releaseRequest();

  // DownstreamStream
  const Ip16& peerIp16() const override;
  const TlsHandshakeInfo* tlsInfo() const override;
  size_t listenerIndex() const override;
  bool admin() const override;
  std::string_view protocol() const override;
  void sendHead(int status, const HeaderList& headers, bool length_known) override;
  void sendBody(const char* data, size_t len) override;
  void sendTrailers(const HeaderList& trailers) override;
  void endResponse() override;
  void flush() override;
  bool takeBackHead() override;
  void reset() override;
  size_t queuedBytes() const override;
  void endAfterResponse() override { close_after_response_ = true; }
  void requestBodyWanted() override;
  void holdRequestHead(bool hold) override;
  void resumeReading() override;
  void resumeRequest() override;
  void completeBodilessRequest() override;
  void requestBodyUnblocked() override;
  void resumeRequestBody() override;
  bool requestBodyPaused() const override;
  void relayPendingTunnelBytes() override;
  void enterEvent() override;
  void leaveEvent() override;

 private:
  void beginRequest();
  int onHeadersComplete();
  int headDone();
  void protocolError(llhttp_errno_t err);
  InputBlock& in();
  // Where the current request's head starts: its bytes are not consumed until it is
  // complete, so this is the block's consumed position.
  const char* headBase();

  static int onUrl(llhttp_t* p, const char* at, size_t len);
  static int onHeaderField(llhttp_t* p, const char* at, size_t len);
  static int onHeaderValue(llhttp_t* p, const char* at, size_t len);
  static int onHeaderValueComplete(llhttp_t* p);
  int onTrailer(TrailerCollector::Result result);
  size_t maxTrailerBytes() const;
  static int onHeadersCompleteCb(llhttp_t* p);
  static int onBody(llhttp_t* p, const char* at, size_t len);
  static int onMessageComplete(llhttp_t* p);
  static int onChunkExtension(llhttp_t* p, const char* at, size_t len);
  static const llhttp_settings_t& parserSettings();

  DownstreamConnection& conn_;
  Http1Request* req_ = nullptr;
  bool close_after_response_ = false;  // the connection carries no further request
};

}  // namespace gw
