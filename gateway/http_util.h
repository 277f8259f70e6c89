// Small HTTP and JSON helpers shared by the proxy, the admin endpoints and the logs.
#pragma once

#include <time.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace gw {

std::string_view reasonPhrase(int status);
// SPEC §3's error_code for a status the gateway answers with ("BAD_REQUEST", ...).
std::string_view errorCodeFor(int status);
// Appends `s` with JSON string escaping (no surrounding quotes). Well-formed UTF-8 is
// written as it is (C0/C1 controls, DEL, U+2028 and U+2029 as \uXXXX); each maximal
// subpart of ill-formed UTF-8 becomes the escape \ufffd. The output is valid UTF-8.
void appendJsonEscaped(std::string& out, std::string_view s);
// "2026-11-21T10:30:00.123Z"; writes exactly 24 characters.
void formatTimestamp(uint64_t unix_ms, char out[24]);
uint64_t wallClockMs();
inline uint64_t monotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}
// SPEC §3 error body.
std::string errorBody(std::string_view error_code, std::string_view message,
                      std::string_view request_id, uint64_t unix_ms);
class HeaderList;
// False for heads that HTTP/1.1 parsers may read differently and that llhttp's strict mode
// still lets through (SPEC §2's refusals). The views MUST point into the contiguous head
// bytes as parsed: the byte after each name is inspected. Line breaks (obs-fold, bare CR or
// LF) are not looked for in the values: the raw head must also pass rawHeadIsStrict (or
// scanStrictHead), which finds them once for the whole head.
bool headIsUnambiguous(const HeaderList& headers);
// False when the raw head bytes from `p` (the request line) to its empty line hold what
// llhttp tolerates but other parsers read differently: a bare LF or CR, a NUL, or a line
// that starts with whitespace (obs-fold, even after an empty value).
// `readable_end` (optional, >= end): the buffer's end, so that the scan may read whole
// blocks past `end` (and ignore those bytes) instead of copying the last piece.
bool rawHeadIsStrict(const char* p, const char* end, const char* readable_end = nullptr);
// The same check, resumable, for a head that arrives in pieces: scans the lines from *pos
// (a line's start; `first` is the head's first line) that are complete before `end`.
// Complete: *pos is just past the empty line that ends the head. Incomplete: *pos is the
// start of the first line not yet complete (scan again from there when more has come).
enum class HeadScan { Incomplete, Complete, Malformed };
// On the first Incomplete of a head that turns out Malformed, the vector implementation may
// already say Malformed: only the verdict on a whole head is the same.
HeadScan scanStrictHead(const char* first, const char** pos, const char* end,
                        const char* readable_end = nullptr);
// The line-by-line reference (used where SSE2 is missing): the fuzzers hold the two equal.
HeadScan scanStrictHeadByLine(const char* first, const char** pos, const char* end);
// True for headers that describe one connection and are never forwarded (RFC 9110 §7.6.1).
bool isHopByHopHeader(std::string_view name);
// Removes the hop-by-hop headers and those the Connection header names.
void removeHopByHop(HeaderList& headers);
// Calls f(token) for each comma-separated token of a header value, trimmed.
template <typename F>
void forEachToken(std::string_view value, F&& f) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view tok = value.substr(0, comma);
    while (!tok.empty() && (tok.front() == ' ' || tok.front() == '\t')) tok.remove_prefix(1);
    while (!tok.empty() && (tok.back() == ' ' || tok.back() == '\t')) tok.remove_suffix(1);
    if (!tok.empty()) f(tok);
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
}

// RFC 9110 §5.6.2's tchar: what a field name is made of.
inline bool isFieldNameChar(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c != 0 && std::string_view("!#$%&'*+-.^_`|~").find(char(c)) != std::string_view::npos);
}

// A trailer field that may be forwarded: not one that frames, routes or is hop-by-hop
// (RFC 9110 §6.5.1), and not a pseudo-header.
bool forwardableTrailer(std::string_view name);

}  // namespace gw
