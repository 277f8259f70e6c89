// Request-target parsing and path normalisation (SPEC §2 "Routing").
//
// Contract:
// - parseRequestTarget() splits the raw target llhttp hands over into views of it; it
//   copies nothing, so the views live as long as the input.
// - normalizePath() produces the one spelling of a path that routing, strip_prefix and the
//   upstream all see, so that they cannot disagree about which resource is meant.
// - Neither allocates beyond growing the caller's reused output string.
#pragma once

#include <string>
#include <string_view>

namespace gw {

struct RequestTarget {
  // The raw path: starts with '/', or is "*" for the asterisk-form (asterisk is then
  // true). Not normalised: pass it to normalizePath().
  std::string_view path;
  std::string_view query;      // after the '?', without it
  std::string_view authority;  // absolute-form only: "host[:port]"; the caller's Host
  bool has_query = false;      // a '?' was present, even with an empty query
  bool asterisk = false;       // "OPTIONS *": applies to the server, not to a route
};

// Accepts the origin-form ("/a/b?x"), the absolute-form ("http://host/a?x", scheme http
// or https; an empty path becomes "/") and, for OPTIONS only, the asterisk-form ("*").
// Refuses, returning false (the caller answers 400): the authority-form (CONNECT is not
// proxied), any other scheme, userinfo in the authority (RFC 9110 §4.2.4 says to treat
// it as an error: "http://trusted@evil/" is a phishing device), a fragment, and any byte
// that is not visible ASCII. On failure `out` is unspecified.
bool parseRequestTarget(std::string_view target, std::string_view method, RequestTarget& out);

// Whether `authority` is a plausible "host[:port]": non-empty, made only of RFC 3986
// reg-name/IP-literal characters and ':', without userinfo or %-encoding. The rule
// parseRequestTarget() applies to the absolute-form; apply it to the Host header too
// (RFC 9112 §3.2: 400 for an invalid Host), so "a@b.example.com" cannot reach the router.
bool isValidAuthority(std::string_view authority);

enum class PathResult {
  Ok,
  Invalid,      // a bad %-sequence or a byte that has no business in a path: 400
  EscapesRoot,  // a ".." climbs above "/": 400
};

// Normalises a raw origin-form path (which must start with '/') into `out`:
// - %XX of an unreserved character (ALPHA DIGIT - . _ ~) is decoded; any other %XX is
//   kept, with upper-case hex digits, so "%2f" stays a data byte ("%2F") and never
//   becomes a separator;
// - "." and ".." segments are resolved after decoding (so "%2e%2e" is ".."), "//" runs
//   are merged, and a trailing slash is kept ("/a/b/" and "/a/b/.." end in '/').
// Refuses a truncated or non-hex %-sequence, control bytes, space, DEL, bytes >= 0x80,
// '?', '#' and '\' (some upstreams read '\' as '/', which would reopen traversal).
// The result is never longer than `raw`. On failure `out` is unspecified.
PathResult normalizePath(std::string_view raw, std::string& out);

// strip_prefix: "/partners" turns "/partners/x" into "/x" and "/partners" into "/". The
// prefix is only removed at a segment boundary (where it ends in '/' or the path goes on
// with '/' or ends), so "/partnersx" is left alone. Returns whether it stripped; `out`
// always receives the path to forward.
bool applyStripPrefix(std::string_view path, std::string_view prefix, std::string& out);

}  // namespace gw
