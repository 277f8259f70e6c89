#include "gateway/http_util.h"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "gateway/headers.h"

namespace gw {

std::string_view reasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: break;
  }
  if (status < 200) return "Informational";
  if (status < 300) return "Success";
  if (status < 400) return "Redirection";
  if (status < 500) return "Client Error";
  return "Server Error";
}

std::string_view errorCodeFor(int status) {
  switch (status) {
    case 400: return "BAD_REQUEST";
    case 401: return "UNAUTHORIZED";
    case 403: return "FORBIDDEN";
    case 404: return "NOT_FOUND";
    case 408: return "REQUEST_TIMEOUT";
    case 413: return "PAYLOAD_TOO_LARGE";
    case 414: return "URI_TOO_LONG";
    case 429: return "RATE_LIMITED";
    case 431: return "HEADERS_TOO_LARGE";
    case 502: return "BAD_GATEWAY";
    case 503: return "SERVICE_UNAVAILABLE";
    case 504: return "GATEWAY_TIMEOUT";
    default: return status >= 500 ? "INTERNAL_ERROR" : "BAD_REQUEST";
  }
}

namespace {

constexpr int32_t kIllFormed = -1;

// The code point of the UTF-8 sequence at p[0] (a byte >= 0x80), with `len` its bytes; or
// kIllFormed with `len` the bytes of its maximal subpart (Unicode §3.9, Table 3-7: the
// second byte's range depends on the first, which is what rules out overlong forms,
// surrogates and code points past U+10FFFF).
int32_t decodeUtf8(const unsigned char* p, size_t avail, size_t& len) {
  const unsigned char b = p[0];
  int32_t cp;
  int more;
  unsigned char lo = 0x80, hi = 0xbf;
  if (b >= 0xc2 && b <= 0xdf) {
    cp = b & 0x1f;
    more = 1;
  } else if (b >= 0xe0 && b <= 0xef) {
    cp = b & 0x0f;
    more = 2;
    if (b == 0xe0) lo = 0xa0;
    if (b == 0xed) hi = 0x9f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    cp = b & 0x07;
    more = 3;
    if (b == 0xf0) lo = 0x90;
    if (b == 0xf4) hi = 0x8f;
  } else {
    len = 1;
    return kIllFormed;
  }
  len = 1;
  for (; more > 0; --more, lo = 0x80, hi = 0xbf) {
    if (len == avail || p[len] < lo || p[len] > hi) return kIllFormed;
    cp = (cp << 6) | (p[len++] & 0x3f);
  }
  return cp;
}

// Valid JSON as it is, but a C1 control can act as a terminal escape (like ESC, DEL) and
// U+2028/U+2029 break lines in some viewers: one log line must stay one line.
bool escapedAnyway(int32_t cp) { return cp <= 0x9f || cp == 0x2028 || cp == 0x2029; }

void appendEscape(std::string& out, int32_t cp) {
  static const char kHex[] = "0123456789abcdef";
  switch (cp) {
    case '"': out += "\\\""; return;
    case '\\': out += "\\\\"; return;
    case '\n': out += "\\n"; return;
    case '\r': out += "\\r"; return;
    case '\t': out += "\\t"; return;
    // The escape, not the character: the raw line then tells this substitution from a
    // U+FFFD the client sent.
    case kIllFormed: out += "\\ufffd"; return;
    default: break;
  }
  char u[6] = {'\\', 'u', kHex[(cp >> 12) & 15], kHex[(cp >> 8) & 15], kHex[(cp >> 4) & 15],
               kHex[cp & 15]};
  out.append(u, 6);
}

}  // namespace

// Runs of bytes that need nothing are appended whole: this is on every access-log line.
void appendJsonEscaped(std::string& out, std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t copied = 0;  // s[copied, i) is still to be appended as it is
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      ++i;
      continue;
    }
    size_t len = 1;
    int32_t cp = c;
    if (c >= 0x80) {
      cp = decodeUtf8(p + i, n - i, len);
      if (cp != kIllFormed && !escapedAnyway(cp)) {
        i += len;
        continue;
      }
    }
    out.append(s.data() + copied, i - copied);
    appendEscape(out, cp);
    i += len;
    copied = i;
  }
  out.append(s.data() + copied, n - copied);
}

uint64_t wallClockMs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

void formatTimestamp(uint64_t unix_ms, char out[24]) {
  // Cache the date-time part per second per thread: gmtime_r is the costly bit.
  thread_local uint64_t cached_sec = UINT64_MAX;
  thread_local char cached[20];
  uint64_t sec = unix_ms / 1000;
  if (sec != cached_sec) {
    time_t t = time_t(sec);
    tm tmv;
    gmtime_r(&t, &tmv);
    std::snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d", tmv.tm_year + 1900,
                  tmv.tm_mon + 1, tmv.tm_mday, tmv.tm_hour, tmv.tm_min, tmv.tm_sec);
    cached_sec = sec;
  }
  std::memcpy(out, cached, 19);
  unsigned ms = unsigned(unix_ms % 1000);
  out[19] = '.';
  out[20] = char('0' + ms / 100);
  out[21] = char('0' + ms / 10 % 10);
  out[22] = char('0' + ms % 10);
  out[23] = 'Z';
}

std::string errorBody(std::string_view error_code, std::string_view message,
                      std::string_view request_id, uint64_t unix_ms) {
  std::string body;
  body.reserve(160);
  body += "{\"error_code\":\"";
  appendJsonEscaped(body, error_code);
  body += "\",\"message\":\"";
  appendJsonEscaped(body, message);
  body += "\",\"request_id\":\"";
  appendJsonEscaped(body, request_id);
  body += "\",\"timestamp\":\"";
  char ts[24];
  formatTimestamp(unix_ms, ts);
  body.append(ts, 24);
  body += "\"}";
  return body;
}

// Refusals of SPEC §2 that llhttp's strict mode lets through: whitespace between a field
// name and its colon, an empty field name, and a
// Transfer-Encoding other than exactly "chunked" (re-chunking "gzip, chunked" would drop
// the gzip coding on the way upstream). Names and values are views into the head's
// contiguous bytes, so the byte after a name is the separator that followed it.
namespace {

// A field name is a few bytes: a plain loop beats two memchr calls.
bool hasSpaceOrTab(std::string_view s) {
  for (char c : s) {
    if (c == ' ' || c == '\t') return true;
  }
  return false;
}

}  // namespace

bool headIsUnambiguous(const HeaderList& headers) {
  for (const Header& h : headers) {
    if (h.name.empty() || h.name.data()[h.name.size()] != ':' || hasSpaceOrTab(h.name)) {
      return false;
    }
    if (equalsIgnoreCase(h.name, "transfer-encoding")) {
      if (!equalsIgnoreCase(h.value, "chunked")) return false;
      // The view is trimmed; llhttp refuses a tab after "chunked" only once the body starts,
      // by when the head would be on its way upstream.
      for (const char* t = h.value.data() + h.value.size(); *t == ' ' || *t == '\t'; ++t) {
        if (*t == '\t') return false;
      }
    }
  }
  return true;
}

HeadScan scanStrictHeadByLine(const char* first, const char** pos, const char* end) {
  // llhttp lets through an LF without its CR, a CR inside a line, and a line that starts
  // with whitespace. Line by line, with memchr.
  const char* line = *pos;
  while (line < end) {
    if (line != first && (*line == ' ' || *line == '\t')) return HeadScan::Malformed;  // folded
    const char* lf = static_cast<const char*>(std::memchr(line, '\n', size_t(end - line)));
    if (!lf) break;
    if (lf == line || lf[-1] != '\r') return HeadScan::Malformed;
    if (lf - 1 > line && std::memchr(line, '\r', size_t(lf - 1 - line))) return HeadScan::Malformed;
    bool head_over = lf - line == 1 && line != first;  // "\r\n" alone
    line = lf + 1;
    if (head_over) {
      *pos = line;
      return HeadScan::Complete;
    }
  }
  *pos = line;
  return HeadScan::Incomplete;
}

#if defined(__SSE2__)
namespace {

struct ByteClasses {
  uint64_t cr = 0, lf = 0, ws = 0;  // bit i: byte i is CR, LF, SP or HT
};

inline __attribute__((always_inline)) ByteClasses classify64(const char* p) {
  const __m128i cr_byte = _mm_set1_epi8('\r');
  const __m128i lf_byte = _mm_set1_epi8('\n');
  const __m128i sp_byte = _mm_set1_epi8(' ');
  const __m128i ht_byte = _mm_set1_epi8('\t');
  ByteClasses c;
  for (int k = 0; k < 4; ++k) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * k));
    auto mask = [](__m128i eq) { return uint64_t(uint32_t(_mm_movemask_epi8(eq))); };
    c.cr |= mask(_mm_cmpeq_epi8(v, cr_byte)) << (16 * k);
    c.lf |= mask(_mm_cmpeq_epi8(v, lf_byte)) << (16 * k);
    c.ws |= mask(_mm_or_si128(_mm_cmpeq_epi8(v, sp_byte), _mm_cmpeq_epi8(v, ht_byte))) << (16 * k);
  }
  return c;
}

}  // namespace

// The same rules 64 bytes at a time: every head the gateway reads, both ways, goes through
// here, and two memchr calls per line cost more than llhttp's own pass over short lines.
// Each block gives bit masks of its CR, LF and SP/HT bytes; the two bytes before a block
// carry over as history bits.
HeadScan scanStrictHead(const char* first, const char** pos, const char* end,
                        const char* readable_end) {
  const char* start = *pos;
  // Bit 63 is the byte just before the block, bit 62 the one before it. *pos starts a
  // line, so an LF precedes it unless it is the head's first line.
  uint64_t cr_prev = 0;
  uint64_t lf_prev = start != first ? uint64_t(1) << 63 : 0;
  const char* next_line = start;  // after the last LF seen
  for (const char* p = start; p < end; p += 64) {
    size_t n = std::min<size_t>(64, size_t(end - p));
    ByteClasses c;
    uint64_t valid = ~uint64_t(0);
    if (n == 64) {
      c = classify64(p);
    } else if (readable_end && readable_end - p >= 64) {  // what follows is read, then masked
      c = classify64(p);
      valid = (uint64_t(1) << n) - 1;
      c.cr &= valid;
      c.lf &= valid;
      c.ws &= valid;
    } else {  // never read past the buffer: the padding is neither CR, LF nor whitespace
      alignas(16) char tail[64] = {};
      std::memcpy(tail, p, n);
      c = classify64(tail);
      valid = (uint64_t(1) << n) - 1;
    }
    uint64_t after_cr = (c.cr << 1) | (cr_prev >> 63);   // bit i: byte i-1 is CR
    uint64_t after_lf = (c.lf << 1) | (lf_prev >> 63);   // bit i: byte i-1 is LF
    uint64_t after_lf2 = (c.lf << 2) | (lf_prev >> 62);  // bit i: byte i-2 is LF
    uint64_t bad = (c.lf & ~after_cr)                    // an LF without its CR
                   | (c.ws & after_lf)                   // a line starting with whitespace
                   | (c.cr & ~(c.lf >> 1) & (valid >> 1))  // a CR not followed by LF
                   | ((cr_prev >> 63) & ~c.lf & 1);        // ... the previous block's last CR
    // The last byte's CR is judged with the next block (or the next read).
    uint64_t ends = c.lf & after_cr & after_lf2;  // "\r\n" straight after an LF
    if (ends) {
      unsigned at = unsigned(__builtin_ctzll(ends));
      uint64_t upto = at == 63 ? ~uint64_t(0) : (uint64_t(2) << at) - 1;
      if (bad & upto) return HeadScan::Malformed;  // what follows the head is not the head's
      *pos = p + at + 1;
      return HeadScan::Complete;
    }
    if (bad) return HeadScan::Malformed;
    if (c.lf) next_line = p + (63 - __builtin_clzll(c.lf)) + 1;
    cr_prev = c.cr;
    lf_prev = c.lf;
  }
  *pos = next_line;
  return HeadScan::Incomplete;
}
#else
HeadScan scanStrictHead(const char* first, const char** pos, const char* end, const char*) {
  return scanStrictHeadByLine(first, pos, end);
}
#endif

bool rawHeadIsStrict(const char* p, const char* end, const char* readable_end) {
  // Empty lines before the request line are skipped, as llhttp skips them.
  while (end - p >= 2 && p[0] == '\r' && p[1] == '\n') p += 2;
  const char* pos = p;
  return scanStrictHead(p, &pos, end, readable_end) == HeadScan::Complete;
}

bool isHopByHopHeader(std::string_view name) {
  // By length first: every header of every request and response passes through here, and
  // most (host, accept, user-agent…) then need one comparison or none.
  switch (name.size()) {
    case 2: return equalsIgnoreCase(name, "te");
    case 7: return equalsIgnoreCase(name, "trailer") || equalsIgnoreCase(name, "upgrade");
    case 10: return equalsIgnoreCase(name, "connection") || equalsIgnoreCase(name, "keep-alive");
    case 16: return equalsIgnoreCase(name, "proxy-connection");
    case 17: return equalsIgnoreCase(name, "transfer-encoding");
    case 18: return equalsIgnoreCase(name, "proxy-authenticate");
    case 19: return equalsIgnoreCase(name, "proxy-authorization");
    default: return false;
  }
}

void removeHopByHop(HeaderList& headers) {
  for (size_t i = 0; i < headers.size(); ++i) {
    if (equalsIgnoreCase(headers[i].name, "connection")) {
      std::string_view v = headers[i].value;
      forEachToken(v, [&](std::string_view tok) {
        if (!equalsIgnoreCase(tok, "close") && !equalsIgnoreCase(tok, "keep-alive")) {
          headers.remove(tok);
        }
      });
    }
  }
  auto& f = headers.fields();
  f.erase(std::remove_if(f.begin(), f.end(), [](const Header& h) { return isHopByHopHeader(h.name); }),
          f.end());
}

bool forwardableTrailer(std::string_view name) {
  return !name.empty() && name[0] != ':' && !isHopByHopHeader(name) &&
         !equalsIgnoreCase(name, "content-length") && !equalsIgnoreCase(name, "host") &&
         !equalsIgnoreCase(name, "content-type") && !equalsIgnoreCase(name, "authorization") &&
         !equalsIgnoreCase(name, "cookie") && !equalsIgnoreCase(name, "set-cookie");
}

}  // namespace gw
