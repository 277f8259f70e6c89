#include "gateway/http1/response_parser.h"

#include <algorithm>

#include "gateway/http_util.h"

namespace gw {

namespace {

ResponseParser* self(llhttp_t* p) { return static_cast<ResponseParser*>(p->data); }

bool isDigit(char c) { return c >= '0' && c <= '9'; }

// "HTTP/1.1 200 OK\r\n": llhttp checks the version, but takes any number of digits for the
// status (RFC 9112 §4 says three) and any value; a status outside 100-599 means nothing a
// client could act on.
bool validStatusLine(const char* p, size_t len) {
  return len >= 13 && p[8] == ' ' && p[9] >= '1' && p[9] <= '5' && isDigit(p[10]) &&
         isDigit(p[11]) && (p[12] == ' ' || p[12] == '\r');
}

}  // namespace

void ResponseParser::reset(size_t max_head_bytes) {
  llhttp_init(&parser_, HTTP_RESPONSE, &settings());
  parser_.data = this;
  head_.reset();
  headers_.clear();
  if (trailer_.seen()) {  // rare: only after a response that had trailers
    trailers_.clear();
    trailer_arena_.reset();
    trailer_.reset();
  }
  head_base_ = nullptr;
  max_head_bytes_ = max_head_bytes;
  scanned_ = 0;
  head_request_ = false;
  head_done_ = false;
  complete_ = false;
  keep_alive_ = true;
  verdict_ = Status::More;
}

ResponseParser::Status ResponseParser::parse(InputBlock& in) {
  if (!head_done_) {
    Status s = parseHead(in);
    if (s != Status::More || !head_done_) return s;
  }
  if (complete_) return Status::Complete;
  const char* start = in.data() + in.consumed();
  size_t len = in.unconsumed();
  if (len == 0) return Status::More;
  llhttp_errno_t err = llhttp_execute(&parser_, start, len);
  if (err == HPE_OK) {
    in.consume(len);
    return Status::More;
  }
  if (err == HPE_PAUSED && complete_) {
    in.consume(size_t(llhttp_get_error_pos(&parser_) - start));
    return Status::Complete;
  }
  return Status::Malformed;  // a bad chunk size, a body longer than announced…
}

ResponseParser::Status ResponseParser::parseHead(InputBlock& in) {
  // One head per pass: interim responses (100, 103) come before the final one.
  while (!head_done_) {
    const char* first = in.data() + in.consumed();
    const char* pos = first + scanned_;
    HeadScan scan = scanStrictHead(first, &pos, in.data() + in.length(), in.data() + in.capacity());
    if (scan == HeadScan::Malformed) return Status::Malformed;
    size_t head_len = size_t(pos - first);
    if (scan == HeadScan::Incomplete) {
      scanned_ = head_len;
      return in.unconsumed() > max_head_bytes_ ? Status::HeadTooLarge : Status::More;
    }
    if (head_len > max_head_bytes_) return Status::HeadTooLarge;
    if (!validStatusLine(first, head_len)) return Status::Malformed;
    head_.reset();
    headers_.clear();
    head_base_ = first;
    // Exactly the head: the body, if any, is parsed once the head's bytes are consumed.
    llhttp_errno_t err = llhttp_execute(&parser_, first, head_len);
    head_base_ = nullptr;
    in.consume(head_len);
    scanned_ = 0;
    if (verdict_ != Status::More) return verdict_;
    if (err == HPE_PAUSED_UPGRADE && head_done_) return Status::Upgrade;
    if (err == HPE_PAUSED && complete_) return Status::Complete;
    if (err != HPE_OK) return Status::Malformed;
  }
  return Status::More;
}

bool ResponseParser::finishAtEof() {
  if (!head_done_ || complete_) return complete_;
  llhttp_errno_t err = llhttp_finish(&parser_);
  return (err == HPE_OK || err == HPE_PAUSED) && complete_;
}

int ResponseParser::onHeaderField(llhttp_t* p, const char* at, size_t len) {
  ResponseParser* r = self(p);
  if (r->head_done_) return r->trailerResult(r->trailer_.onName(at, len, r->max_head_bytes_));
  r->head_.onField(r->head_base_, at, len);
  if (r->head_.fieldCount() <= kMaxResponseFields) return 0;
  r->verdict_ = Status::HeadTooLarge;
  return -1;
}

int ResponseParser::onHeaderValue(llhttp_t* p, const char* at, size_t len) {
  ResponseParser* r = self(p);
  if (r->head_done_) return r->trailerResult(r->trailer_.onValue(at, len, r->max_head_bytes_));
  r->head_.onValue(r->head_base_, at, len);
  return 0;
}

int ResponseParser::onHeaderValueComplete(llhttp_t* p) {
  ResponseParser* r = self(p);
  if (!r->head_done_) return 0;
  return r->trailerResult(r->trailer_.onFieldComplete(r->trailers_, kMaxResponseFields));
}

int ResponseParser::trailerResult(TrailerCollector::Result result) {
  if (result == TrailerCollector::Result::Ok) return 0;
  verdict_ = result == TrailerCollector::Result::TooLarge ? Status::HeadTooLarge : Status::Malformed;
  return -1;
}

int ResponseParser::onHeadersComplete(llhttp_t* p) {
  ResponseParser* r = self(p);
  int status = p->status_code;
  if (status < 200 && status != 101) {
    // Interim: the final response follows on the same connection. The gateway answers
    // 100-continue to clients itself. An interim response has no body whatever its fields
    // say (RFC 9110 §15.2); llhttp would read one after a Transfer-Encoding.
    r->head_.reset();
    return 1;
  }
  r->head_.toHeaders(r->head_base_, r->headers_);
  if (!headIsUnambiguous(r->headers_)) {
    r->verdict_ = Status::Malformed;
    return -1;
  }
  r->head_done_ = true;
  r->keep_alive_ = keepsAlive(*p);
  UpstreamResponseHead head;
  head.status = status;
  head.http_minor = p->http_minor;
  head.headers = &r->headers_;
  head.keep_alive = r->keep_alive_;
  bool no_body = r->head_request_ || status == 101 || status == 204 || status == 304;
  if (no_body) {
    head.framing = BodyFraming::None;
  } else if (p->flags & F_CHUNKED) {
    head.framing = BodyFraming::Chunked;
  } else if (p->flags & F_CONTENT_LENGTH) {
    head.framing = BodyFraming::ContentLength;
    head.content_length = p->content_length;
  } else {
    head.framing = BodyFraming::UntilClose;
  }
  if (!r->sink_.onResponseHead(head)) {
    r->verdict_ = Status::Stopped;
    return -1;
  }
  return no_body ? 1 : 0;
}

int ResponseParser::onBody(llhttp_t* p, const char* at, size_t len) {
  self(p)->sink_.onResponseBody(at, len);
  return 0;
}

int ResponseParser::onMessageComplete(llhttp_t* p) {
  ResponseParser* r = self(p);
  if (!r->head_done_) return 0;                       // an interim response
  if (p->upgrade && p->status_code == 101) return 0;  // llhttp pauses for the upgrade next
  if (!r->trailers_.empty()) r->sink_.onResponseTrailers(r->trailers_);
  r->complete_ = true;
  return HPE_PAUSED;
}

const llhttp_settings_t& ResponseParser::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_header_field = onHeaderField;
    s.on_header_value = onHeaderValue;
    s.on_headers_complete = onHeadersComplete;
    s.on_body = onBody;
    s.on_message_complete = onMessageComplete;
    s.on_header_value_complete = onHeaderValueComplete;
    return s;
  }();
  return s;
}

}  // namespace gw
