#include "gateway/http_util.h"

#include <time.h>

#include <cstdio>
#include <cstring>

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

void appendJsonEscaped(std::string& out, std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else if (c >= 0x80) {
          // Request data is not guaranteed UTF-8; escape raw bytes so every line stays
          // valid JSON (U+0080..U+00FF stand for the bytes).
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += char(c);
        }
    }
  }
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

// Refusals of SPEC §2 that llhttp's strict mode lets through: obs-fold (a value holding a
// line break), whitespace between a field name and its colon, an empty field name, and a
// Transfer-Encoding other than exactly "chunked" (re-chunking "gzip, chunked" would drop
// the gzip coding on the way upstream). Names and values are views into the head's
// contiguous bytes, so the byte after a name is the separator that followed it.
namespace {

// Two memchr scans: std::string_view::find_first_of searches its set once per character
// of the text, which made this check ~5% of a request carrying a 300-byte bearer token.
bool containsEither(std::string_view s, char a, char b) {
  return !s.empty() && (std::memchr(s.data(), a, s.size()) || std::memchr(s.data(), b, s.size()));
}

}  // namespace

bool headIsUnambiguous(const HeaderList& headers) {
  for (const Header& h : headers) {
    if (h.name.empty() || h.name.data()[h.name.size()] != ':' || containsEither(h.name, ' ', '\t')) {
      return false;
    }
    if (containsEither(h.value, '\r', '\n')) return false;
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

HeadScan scanStrictHead(const char* first, const char** pos, const char* end) {
  // llhttp lets through an LF without its CR, a CR inside a line, and a line that starts
  // with whitespace. Line by line, with memchr.
  const char* line = *pos;
  while (line < end) {
    if (line != first && (*line == ' ' || *line == '\t')) return HeadScan::Malformed;  // folded
    const char* lf = static_cast<const char*>(std::memchr(line, '\n', size_t(end - line)));
    if (!lf) break;
    if (lf == line || lf[-1] != '\r') return HeadScan::Malformed;
    if (lf - 1 > line && std::memchr(line, '\r', size_t(lf - 1 - line))) return HeadScan::Malformed;
    bool empty = lf - line == 1;
    const char* next = lf + 1;
    if (empty && line != first) {  // "\r\n" alone: the head is over
      *pos = next;
      return HeadScan::Complete;
    }
    line = next;
  }
  *pos = line;
  return HeadScan::Incomplete;
}

bool rawHeadIsStrict(const char* p, const char* end) {
  // Empty lines before the request line are skipped, as llhttp skips them.
  while (end - p >= 2 && p[0] == '\r' && p[1] == '\n') p += 2;
  const char* pos = p;
  return scanStrictHead(p, &pos, end) == HeadScan::Complete;
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

}  // namespace gw
