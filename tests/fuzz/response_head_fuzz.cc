// libFuzzer target for what an upstream sends: gateway/http1/response_parser.cc (status line,
// fields, interim responses, framing, chunked and Content-Length bodies) fed through an
// InputBlock the way UpstreamConnection feeds it (reads appended, the block compacted once
// the head has been handed over).
//
// The first input byte picks the limit and whether the request was a HEAD, the second the
// size of each read; the rest is the upstream's byte stream. Beyond "no crash, no sanitizer
// report", every input is checked for:
// - What reaches the client is safe to write: a status in 100-599, field names that are
//   tokens, values without CR, LF or NUL; a head longer than the limit is never accepted.
// - A Content-Length body delivers at most that many bytes; a HEAD or 204/304 none.
// - The vector head scan (scanStrictHead) agrees with the line-by-line reference
//   (scanStrictHeadByLine) from every line start, resumed or not.
// - Split invariance: read in one piece per block and in pieces of the chosen size, the
//   same head, the same body and the same outcome (any refusal counts as one outcome: a
//   line that is both too long and malformed may be seen as either first).
// A failed check prints the input and aborts, so libFuzzer keeps it as a crash.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/buffer.h"
#include "gateway/http1/response_parser.h"
#include "gateway/http_util.h"

namespace {

using namespace gw;

std::string_view g_input;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "response_head_fuzz: %s\ninput (%zu bytes): ", what, g_input.size());
  for (unsigned char c : g_input.substr(0, 2000)) {
    if (c >= 0x20 && c < 0x7f && c != '\\') std::fputc(c, stderr);
    else std::fprintf(stderr, "\\x%02x", c);
  }
  std::fputc('\n', stderr);
  std::abort();
}

void check(bool ok, const char* what) {
  if (!ok) fail(what);
}

bool isTokenChar(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

struct Outcome {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> fields;
  std::vector<std::pair<std::string, std::string>> trailers;
  BodyFraming framing = BodyFraming::None;
  uint64_t content_length = 0;
  std::string body;
  ResponseParser::Status end = ResponseParser::Status::More;
  bool eof_complete = false;

  bool refused() const {
    return end == ResponseParser::Status::HeadTooLarge || end == ResponseParser::Status::Malformed;
  }
};

class Recorder final : public ResponseParser::Sink {
 public:
  explicit Recorder(Outcome& out) : out_(out) {}
  bool onResponseHead(UpstreamResponseHead& head) override {
    check(out_.status == 0, "two final heads for one response");
    check(head.status >= 100 && head.status <= 599, "status outside 100-599");
    out_.status = head.status;
    out_.framing = head.framing;
    out_.content_length = head.content_length;
    for (const Header& h : *head.headers) {
      check(!h.name.empty(), "empty field name");
      for (unsigned char c : h.name) check(isTokenChar(c), "field name is not a token");
      for (unsigned char c : h.value) check(c != '\r' && c != '\n' && c != 0, "CR, LF or NUL in a value");
      out_.fields.emplace_back(h.name, h.value);  // reads every byte of the views
    }
    return true;
  }
  void onResponseBody(const char* data, size_t len) override {
    check(out_.status != 0, "body before the head");
    out_.body.append(data, len);
  }
  void onResponseTrailers(HeaderList& trailers) override {
    check(out_.status != 0, "trailers before the head");
    check(out_.framing == BodyFraming::Chunked, "trailers without a chunked body");
    for (const Header& h : trailers) {
      check(!h.name.empty(), "empty trailer name");
      for (unsigned char c : h.name) check(isTokenChar(c), "trailer name is not a token");
      for (unsigned char c : h.value) check(c >= 0x20 || c == '\t', "control character in a trailer value");
      check(forwardableTrailer(h.name), "a framing or routing field passed as a trailer");
      out_.trailers.emplace_back(h.name, h.value);
    }
  }

 private:
  Outcome& out_;
};

Outcome run(std::string_view stream, size_t max_head, bool head_request, size_t read_size) {
  Outcome out;
  Recorder sink(out);
  ResponseParser parser(sink);
  parser.reset(max_head);
  parser.setHeadRequest(head_request);
  InputBlock in;
  size_t pos = 0;
  for (;;) {
    if (pos == stream.size()) {
      out.eof_complete = parser.finishAtEof();
      break;
    }
    size_t room = 0;
    char* p = in.writable(&room, max_head + kSliceSize);
    if (!p) {  // a full block the parser took nothing from: the connection's ENOBUFS
      check(!parser.headComplete(), "block full after the head");
      out.end = ResponseParser::Status::HeadTooLarge;
      break;
    }
    size_t n = std::min({room, read_size, stream.size() - pos});
    std::memcpy(p, stream.data() + pos, n);
    in.added(n);
    pos += n;
    out.end = parser.parse(in);
    if (out.end != ResponseParser::Status::More) break;
    if (parser.headComplete()) in.compact();
  }
  if (out.status != 0 && out.framing == BodyFraming::ContentLength) {
    check(out.body.size() <= out.content_length, "more body than Content-Length");
  }
  if (out.status != 0 && out.framing == BodyFraming::None) check(out.body.empty(), "body without one");
  if (head_request || out.status == 204 || out.status == 304) check(out.body.empty(), "body on a bodiless response");
  return out;
}

// From each line start of `s` (at most a few, the first ones), both scanners over the
// whole rest and over a prefix cut at `cut`.
void checkScanners(std::string_view s, size_t cut) {
  const char* first = s.data();
  const char* line = first;
  for (int starts = 0; starts < 4 && line <= s.data() + s.size(); ++starts) {
    for (const char* end : {s.data() + s.size(), std::min(s.data() + s.size(), line + cut)}) {
      const char* vpos = line;
      const char* rpos = line;
      HeadScan v = scanStrictHead(first, &vpos, end);
      HeadScan r = scanStrictHeadByLine(first, &rpos, end);
      if (r == HeadScan::Incomplete && v == HeadScan::Malformed) continue;  // seen early
      check(v == r, "the vector and line scans disagree");
      check(vpos == rpos || r == HeadScan::Malformed, "the vector and line scans stop apart");
    }
    const char* lf = static_cast<const char*>(
        std::memchr(line, '\n', size_t(s.data() + s.size() - line)));
    if (!lf) break;
    line = lf + 1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  g_input = std::string_view(reinterpret_cast<const char*>(data), size);
  static const size_t kLimits[] = {64 * 1024, 256, 40, 1024};
  size_t max_head = kLimits[data[0] & 3];
  bool head_request = (data[0] & 4) != 0;
  size_t read_size = size_t(data[1]) + 1;
  std::string_view stream = g_input.substr(2);
  checkScanners(stream, read_size);

  Outcome whole = run(stream, max_head, head_request, SIZE_MAX);
  Outcome split = run(stream, max_head, head_request, read_size);
  if (whole.refused() || split.refused()) {
    check(whole.refused() == split.refused(), "refused in one split and not the other");
    return 0;
  }
  check(whole.status == split.status && whole.fields == split.fields, "the head depends on the split");
  check(whole.trailers == split.trailers, "the trailers depend on the split");
  check(whole.end == split.end && whole.eof_complete == split.eof_complete, "the outcome depends on the split");
  check(whole.body == split.body, "the body depends on the split");
  return 0;
}
