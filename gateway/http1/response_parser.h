// An HTTP/1.1 response read from an upstream, parsed as strictly as a client's request:
// an upstream's bytes are as hostile as anyone's.
//
// Contract:
// - The head is checked line by line (scanStrictHead: CRLF only, no bare CR, no folded
//   line) and its status line (three digits, 100-599) before llhttp sees it; fields must
//   be unambiguous (headIsUnambiguous). Anything else is Malformed: the response is not
//   forwarded and the connection is not reused.
// - Until its head is complete a response's bytes stay unconsumed at the front of the
//   InputBlock, so the block may grow or move under them; a head longer than the limit
//   (interim 1xx heads included) is HeadTooLarge, whatever its pieces.
// - Interim responses (1xx but 101) are skipped. The final head is handed to the Sink once;
//   its views are valid during that call only. Body bytes follow as views into the block,
//   valid until the caller consumes the next read.
// - No event loop here: the fuzzer drives it with bytes alone.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>

#include "gateway/buffer.h"
#include "gateway/headers.h"
#include "gateway/http1/http_head.h"

namespace gw {

enum class BodyFraming { None, ContentLength, Chunked, UntilClose };

struct UpstreamResponseHead {
  int status = 0;
  int http_minor = 1;
  BodyFraming framing = BodyFraming::None;
  uint64_t content_length = 0;
  bool keep_alive = true;
  // Its views are valid during onResponseHead only; the handler may take the fields
  // (swapFields) instead of copying them.
  HeaderList* headers = nullptr;
};

// The largest number of fields in a response head.
constexpr size_t kMaxResponseFields = 256;

class ResponseParser {
 public:
  class Sink {
   public:
    // False: stop here (the exchange was abandoned); parse() returns Stopped.
    virtual bool onResponseHead(UpstreamResponseHead& head) = 0;
    virtual void onResponseBody(const char* data, size_t len) = 0;
    // A chunked body's trailer section, before the response completes; views valid
    // during the call.
    virtual void onResponseTrailers(HeaderList& trailers) = 0;

   protected:
    ~Sink() = default;
  };

  enum class Status {
    More,          // all was parsed; the response goes on
    Complete,      // the response is complete; what follows it is left unconsumed
    Upgrade,       // a 101's head: what follows (unconsumed) belongs to the tunnel
    Stopped,       // the sink said stop
    HeadTooLarge,  // no complete head within the limit
    Malformed,     // not a response any HTTP/1.1 parser reads the same way
  };

  explicit ResponseParser(Sink& sink) : sink_(sink) {}
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;

  // Before each response.
  void reset(size_t max_head_bytes);
  // The request was a HEAD: the response has no body whatever it says.
  void setHeadRequest(bool head_request) { head_request_ = head_request; }
  // Parses the block's unconsumed bytes, consuming what it is done with.
  Status parse(InputBlock& in);
  // The upstream closed: true if that ends the response (a close-delimited body).
  bool finishAtEof();
  bool headComplete() const { return head_done_; }
  bool complete() const { return complete_; }
  // The upstream lets the connection carry another request after this response.
  bool keepAlive() const { return keep_alive_; }

 private:
  Status parseHead(InputBlock& in);

  static int onHeaderField(llhttp_t* p, const char* at, size_t len);
  static int onHeaderValue(llhttp_t* p, const char* at, size_t len);
  static int onHeadersComplete(llhttp_t* p);
  static int onBody(llhttp_t* p, const char* at, size_t len);
  static int onMessageComplete(llhttp_t* p);
  static int onHeaderValueComplete(llhttp_t* p);
  int trailerResult(TrailerCollector::Result result);
  static const llhttp_settings_t& settings();

  Sink& sink_;
  llhttp_t parser_{};
  HeadCollector head_;
  HeaderList headers_;
  // Trailer fields arrive after the body, over any number of reads: copied as they come.
  StringArena trailer_arena_;
  HeaderList trailers_{&trailer_arena_};
  TrailerCollector trailer_;
  const char* head_base_ = nullptr;  // the head's first byte, during its llhttp_execute
  size_t max_head_bytes_ = 0;
  size_t scanned_ = 0;  // head bytes already checked line by line
  bool head_request_ = false;
  bool head_done_ = false;
  bool complete_ = false;
  bool keep_alive_ = true;
  Status verdict_ = Status::More;  // set by a callback that stops llhttp
};

// llhttp keeps an HTTP/1.0 message with "Connection: keep-alive" alive even when a
// "close" token stands beside it (in the same field or another); close wins (RFC 9112 §9.3).
inline bool keepsAlive(const llhttp_t& p) {
  return llhttp_should_keep_alive(&p) && !(p.flags & F_CONNECTION_CLOSE);
}

}  // namespace gw
