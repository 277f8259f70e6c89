// The request-head checks of SPEC §2 ("Requests that HTTP/1.1 parsers disagree on are
// refused with 400") as DownstreamConnection::onHeadersComplete applies them: llhttp in
// strict mode (no lenient flag), the head collected by HeadCollector as offsets into one
// contiguous block, then headIsUnambiguous() on the collected fields and rawHeadIsStrict()
// on the bytes received so far from the start of the request. Each raw request is parsed
// in one piece and byte by byte (spans then arrive in many callbacks; the raw scan sees
// only what has arrived), and both must agree.

#include <gtest/gtest.h>
#include <llhttp.h>

#include <cctype>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/headers.h"
#include "gateway/http1/http_head.h"
#include "gateway/http_util.h"

namespace gw {
namespace {

struct Parsed {
  bool head_complete = false;
  bool message_complete = false;
  bool parse_error = false;
  bool head_ambiguous = false;
  std::string url;
  std::vector<std::pair<std::string, std::string>> fields;

  // What the gateway answers: 400 for a parse error or an ambiguous head.
  bool refused() const { return parse_error || head_ambiguous; }
};

struct Harness {
  llhttp_t parser;
  const char* base = nullptr;
  const char* received_end = nullptr;  // the end of what was handed to llhttp so far
  HeadCollector head;
  Parsed out;

  static Harness* of(llhttp_t* p) { return static_cast<Harness*>(p->data); }

  static const llhttp_settings_t& settings() {
    static const llhttp_settings_t s = [] {
      llhttp_settings_t s;
      llhttp_settings_init(&s);
      s.on_url = [](llhttp_t* p, const char* at, size_t len) {
        of(p)->head.onFirstLine(of(p)->base, at, len);
        return 0;
      };
      s.on_header_field = [](llhttp_t* p, const char* at, size_t len) {
        of(p)->head.onField(of(p)->base, at, len);
        return 0;
      };
      s.on_header_value = [](llhttp_t* p, const char* at, size_t len) {
        of(p)->head.onValue(of(p)->base, at, len);
        return 0;
      };
      s.on_headers_complete = [](llhttp_t* p) {
        Harness& h = *of(p);
        h.out.head_complete = true;
        HeaderList headers;
        h.head.toHeaders(h.base, headers);
        h.out.url = std::string(h.head.firstLine(h.base));
        for (const Header& f : headers) h.out.fields.emplace_back(f.name, f.value);
        // As DownstreamConnection::onHeadersComplete: HTTP/1.0 and 1.1 only.
        h.out.head_ambiguous = p->http_major != 1 || p->http_minor > 1 ||
                               !headIsUnambiguous(headers) ||
                               !rawHeadIsStrict(h.base, h.received_end);
        return 0;
      };
      s.on_message_complete = [](llhttp_t* p) {
        of(p)->out.message_complete = true;
        return int(HPE_PAUSED);  // one message, as the gateway does
      };
      return s;
    }();
    return s;
  }

  // Feeds `raw` in pieces of `step` bytes (0: all at once).
  Parsed run(const std::string& raw, size_t step) {
    llhttp_init(&parser, HTTP_REQUEST, &settings());
    parser.data = this;
    base = raw.data();
    head.reset();
    out = {};
    size_t pos = 0;
    while (pos < raw.size()) {
      size_t n = step == 0 ? raw.size() - pos : std::min(step, raw.size() - pos);
      received_end = raw.data() + pos + n;
      llhttp_errno_t err = llhttp_execute(&parser, raw.data() + pos, n);
      if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) break;
      if (err != HPE_OK) {
        out.parse_error = true;
        break;
      }
      pos += n;
    }
    return out;
  }
};

Parsed parse(const std::string& raw, size_t step = 0) {
  Harness h;
  return h.run(raw, step);
}

struct SmuggleCase {
  std::string_view label;
  std::string_view raw;
  bool refused;
};

// Names the case in failure messages instead of dumping its bytes.
void PrintTo(const SmuggleCase& c, std::ostream* os) { *os << c.label; }

class HeadCheckTest : public ::testing::TestWithParam<SmuggleCase> {};

TEST_P(HeadCheckTest, RefusedExactlyWhenAmbiguous) {
  const SmuggleCase& c = GetParam();
  const std::string raw(c.raw);
  Parsed whole = parse(raw);
  EXPECT_EQ(whole.refused(), c.refused)
      << c.label << ": parse_error=" << whole.parse_error
      << " head_ambiguous=" << whole.head_ambiguous;
  if (!whole.refused()) {
    EXPECT_TRUE(whole.message_complete) << c.label;
  }
  Parsed bytewise = parse(raw, 1);
  EXPECT_EQ(bytewise.refused(), whole.refused()) << c.label << " (fed byte by byte)";
  EXPECT_EQ(bytewise.fields, whole.fields) << c.label << " (fed byte by byte)";
  EXPECT_EQ(bytewise.url, whole.url) << c.label << " (fed byte by byte)";
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(
    Spec, HeadCheckTest,
    ::testing::Values(
        // Accepted.
        SmuggleCase{"plain_get", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", false},
        SmuggleCase{"http10_without_host", "GET /x HTTP/1.0\r\n\r\n", false},
        SmuggleCase{"post_content_length", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", false},
        SmuggleCase{"post_chunked", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false},
        SmuggleCase{"empty_header_value", "GET /x HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-B: c\r\n\r\n", false},
        SmuggleCase{"value_with_trailing_space", "GET /x HTTP/1.1\r\nHost: a\r\nX-A: b \t\r\n\r\n", false},
        SmuggleCase{"same_content_length_twice_is_still_refused_by_llhttp",
                    "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", true},
        // CL.TE, TE.CL and TE.TE.
        SmuggleCase{"cl_te", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", true},
        SmuggleCase{"te_cl", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", true},
        SmuggleCase{"te_te_gzip_first", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", true},
        SmuggleCase{"te_te_chunked_twice", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", true},
        SmuggleCase{"te_x_chunked", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", true},
        SmuggleCase{"te_chunked_then_gzip", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", true},
        SmuggleCase{"te_gzip_chunked_list", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", true},
        SmuggleCase{"te_tab_prefix", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n", false},
        SmuggleCase{"te_space_before_colon", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", true},
        SmuggleCase{"differing_content_lengths", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", true},
        SmuggleCase{"content_length_list", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd", true},
        SmuggleCase{"content_length_plus_sign", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", true},
        SmuggleCase{"content_length_negative", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", true},
        // Obsolete line folding.
        SmuggleCase{"obs_fold", "GET /x HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n  two\r\n\r\n", true},
        SmuggleCase{"obs_fold_tab", "GET /x HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n\ttwo\r\n\r\n", true},
        SmuggleCase{"obs_fold_after_empty_value", "GET /x HTTP/1.1\r\nHost: a\r\nX-Folded:\r\n two\r\n\r\n", true},
        SmuggleCase{"obs_fold_after_blank_value", "GET /x HTTP/1.1\r\nHost: a\r\nX-Folded:   \r\n two\r\n\r\n", true},
        SmuggleCase{"obs_fold_blank_continuation", "GET /x HTTP/1.1\r\nHost: a\r\nX-Folded:\r\n \r\n\r\n", true},
        SmuggleCase{"obs_fold_content_length", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 5\r\n\r\nhello", true},
        SmuggleCase{"obs_fold_transfer_encoding", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", true},
        SmuggleCase{"obs_fold_host", "GET /x HTTP/1.1\r\nHost:\r\n evil.example\r\n\r\n", true},
        SmuggleCase{"folded_first_header_line", "GET /x HTTP/1.1\r\n Host: a\r\n\r\n", true},
        SmuggleCase{"obs_fold_after_two_leading_empty_lines", "\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\nX-Folded:\r\n two\r\n\r\n", true},
        // Bare LF, NUL, whitespace before the colon.
        SmuggleCase{"bare_lf_everywhere", "GET /x HTTP/1.1\nHost: a\n\n", true},
        SmuggleCase{"bare_lf_in_head", "GET /x HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n", true},
        SmuggleCase{"bare_lf_after_request_line", "GET /x HTTP/1.1\nHost: a\r\n\r\n", true},
        SmuggleCase{"bare_lf_ends_the_head", "GET /x HTTP/1.1\r\nHost: a\r\n\n", true},
        SmuggleCase{"leading_empty_line_then_bare_lf", "\r\nGET /x HTTP/1.1\nHost: a\r\n\r\n", true},
        SmuggleCase{"two_leading_empty_lines_then_bare_lf", "\r\n\r\nGET /x HTTP/1.1\nHost: a\r\n\r\n", true},
        SmuggleCase{"lone_cr_ends_the_head", "GET /x HTTP/1.1\r\nHost: a\r\n\rX", true},
        // llhttp 8.1.0 ends the head at CR + any byte (CVE-2023-30589): here its body is
        // "\r\n\r\nabc", while a reader of CRLF lines sees a header line "\rX".
        SmuggleCase{"lone_cr_ends_the_head_before_crlf_lines", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\rX\r\n\r\nabc", true},
        SmuggleCase{"lone_cr_inside_a_value", "GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n", true},
        SmuggleCase{"nul_in_value", std::string_view("GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\0002\r\n\r\n", 37), true},
        SmuggleCase{"nul_in_name", std::string_view("GET /x HTTP/1.1\r\nHost: a\r\nX\000A: 1\r\n\r\n", 34), true},
        SmuggleCase{"space_before_colon", "GET /x HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", true},
        SmuggleCase{"tab_before_colon", "GET /x HTTP/1.1\r\nHost: a\r\nX-A\t: 1\r\n\r\n", true},
        SmuggleCase{"empty_field_name", "GET /x HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", true},
        // Bodies.
        SmuggleCase{"bad_chunk_size", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", true},
        SmuggleCase{"chunk_size_bare_lf", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", true},
        SmuggleCase{"chunk_size_overflow", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", true},
        SmuggleCase{"chunk_size_with_space", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", true},
        SmuggleCase{"chunk_data_longer_than_size", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", true},
        SmuggleCase{"chunk_extension", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n", false},
        // Request line.
        SmuggleCase{"http2_preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true},
        SmuggleCase{"lowercase_method", "get /x HTTP/1.1\r\nHost: a\r\n\r\n", true},
        SmuggleCase{"space_in_target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", true},
        SmuggleCase{"version_garbage", "GET /x HTTP/1.x\r\nHost: a\r\n\r\n", true}),
    [](const ::testing::TestParamInfo<SmuggleCase>& info) { return std::string(info.param.label); });
// clang-format on

// llhttp decides that a Transfer-Encoding it did not read as chunked is an error only after
// on_headers_complete has returned, and by then the gateway has routed the request and
// sent its head upstream (without a body). So the head check itself must refuse every
// Transfer-Encoding that llhttp will not take as chunked.
TEST(HeadFramingTest, TransferEncodingLlhttpDoesNotTakeAsChunkedIsRefusedAtTheHead) {
  for (std::string_view value : {"chunked\t", "chunked \t", "chunked\t "}) {
    const std::string raw = "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " +
                            std::string(value) + "\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    Parsed p = parse(raw);
    ASSERT_TRUE(p.head_complete) << "'" << value << "'";
    EXPECT_TRUE(p.head_ambiguous) << "Transfer-Encoding '" << value
                                  << "' passes the head check; llhttp refuses it only later";
  }
  // A trailing space is fine: llhttp reads the coding as chunked.
  Parsed sp = parse("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n0\r\n\r\n");
  EXPECT_FALSE(sp.refused());
  EXPECT_TRUE(sp.message_complete);
}

TEST(HeadCollectorTest, CollectsFieldsAsViewsWhateverTheSplit) {
  const std::string raw =
      "GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\nX-Empty:\r\nX-Trail: v \t\r\n"
      "Accept: */*\r\n\r\n";
  const std::vector<std::pair<std::string, std::string>> want = {
      {"Host", "example.com"}, {"X-Empty", ""}, {"X-Trail", "v"}, {"Accept", "*/*"}};
  for (size_t step : {size_t(0), size_t(1), size_t(2), size_t(3), size_t(7), size_t(16)}) {
    Parsed p = parse(raw, step);
    ASSERT_TRUE(p.message_complete) << "step " << step;
    EXPECT_EQ(p.url, "/path?q=1") << "step " << step;
    EXPECT_EQ(p.fields, want) << "step " << step;
    EXPECT_FALSE(p.head_ambiguous) << "step " << step;
  }
}

TEST(HeadCollectorTest, ResetForgetsThePreviousHead) {
  const std::string first = "GET /a HTTP/1.1\r\nA: 1\r\n\r\n";
  const std::string second = "GET /bb HTTP/1.1\r\nB: 2\r\nC: 3\r\n\r\n";
  Harness h;
  Parsed one = h.run(first, 0);
  Parsed two = h.run(second, 0);
  EXPECT_EQ(one.fields.size(), 1u);
  EXPECT_EQ(two.url, "/bb");
  ASSERT_EQ(two.fields.size(), 2u);
  EXPECT_EQ(two.fields[0].first, "B");
  EXPECT_EQ(two.fields[1].second, "3");
}

// scanStrictHead is what the response parser runs as an upstream's head arrives read by
// read: resuming from where it stopped must reach the verdict the whole head gets.
TEST(StrictHeadScanTest, ResumedScanAgreesWithTheWholeHead) {
  const std::string heads[] = {
      "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\nbody",
      "HTTP/1.1 200 OK\r\nA: 1\r\n b\r\n\r\n",     // folded
      "HTTP/1.1 200 OK\rX: 1\r\n\r\n",             // bare CR
      "HTTP/1.1 200 OK\r\nA: 1\n\r\n",             // bare LF
      "HTTP/1.1 204 No Content\r\n\r\n",
  };
  for (const std::string& h : heads) {
    const char* first = h.data();
    const char* whole_pos = first;
    HeadScan whole = scanStrictHead(first, &whole_pos, h.data() + h.size());
    for (size_t step = 1; step <= h.size(); ++step) {
      const char* pos = first;
      HeadScan scan = HeadScan::Incomplete;
      for (size_t have = step; scan == HeadScan::Incomplete; have += step) {
        scan = scanStrictHead(first, &pos, first + std::min(have, h.size()));
        if (have >= h.size()) break;
      }
      EXPECT_EQ(scan, whole) << h << " in steps of " << step;
      if (whole == HeadScan::Complete) {
        EXPECT_EQ(pos, whole_pos) << h;
      }
    }
  }
}

TEST(StrictHeadScanTest, IncompleteStopsAtTheLineNotYetEnded) {
  std::string h = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2";
  const char* pos = h.data();
  EXPECT_EQ(scanStrictHead(h.data(), &pos, h.data() + h.size()), HeadScan::Incomplete);
  EXPECT_EQ(std::string_view(pos), "B: 2");
}

}  // namespace
}  // namespace gw
