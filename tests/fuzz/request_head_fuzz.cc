// libFuzzer target for the request-head path of DownstreamConnection: llhttp in strict
// mode with the same callbacks (spans collected by HeadCollector as offsets into one
// contiguous block, one message at a time, pausing at message end), then what
// onHeadersComplete() does with the head: headIsUnambiguous and rawHeadIsStrict, the
// client address, the request target, path normalisation and routing over a fixed route
// table.
//
// Beyond "no crash, no sanitizer report", every input is checked for:
// - Split invariance: fed whole, in three pieces cut at input-derived offsets, and (small
//   inputs) byte by byte, the parser and the collector must produce the same messages.
// - SPEC §2: a head the gateway accepts must read the same under a plain RFC 9112 reading
//   (CRLF line ends only, no NUL, no obs-fold, no whitespace before a colon) with the same
//   fields, and its framing headers must agree with llhttp's flags.
// - The contracts of parseRequestTarget, normalizePath, resolveClientIp and the router
//   (the route chosen is the first whose conditions hold, checked by a plain re-reading of
//   the table).
// A failed check prints the input and aborts, so libFuzzer keeps it as a crash.
// REQUEST_HEAD_FUZZ_IGNORE (see ignored()) lets an exploratory run go past known findings.

#include <llhttp.h>
#include <re2/re2.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/client_ip.h"
#include "gateway/config/config.h"
#include "gateway/headers.h"
#include "gateway/http1/http_head.h"
#include "gateway/http_util.h"
#include "gateway/path.h"
#include "gateway/router.h"

namespace {

using namespace gw;

std::string_view g_input;  // the whole input, for failure reports

void printEscaped(std::string_view s) {
  for (unsigned char c : s) {
    if (c == '\r') {
      std::fputs("\\r", stderr);
    } else if (c == '\n') {
      std::fputs("\\n", stderr);
    } else if (c >= 0x20 && c < 0x7f && c != '\\') {
      std::fputc(c, stderr);
    } else {
      std::fprintf(stderr, "\\x%02x", c);
    }
  }
}

[[noreturn]] void fail(const char* what, int line, std::string_view detail) {
  std::fprintf(stderr, "request_head_fuzz.cc:%d: check failed: %s\n", line, what);
  if (!detail.empty()) {
    std::fputs("detail: ", stderr);
    printEscaped(detail);
    std::fputc('\n', stderr);
  }
  std::fprintf(stderr, "input (%zu bytes): ", g_input.size());
  printEscaped(g_input);
  std::fputc('\n', stderr);
  std::abort();
}

#define FUZZ_CHECK(cond, detail)                    \
  do {                                              \
    if (!(cond)) fail(#cond, __LINE__, (detail));   \
  } while (0)

using Fields = std::vector<std::pair<std::string, std::string>>;

std::string describe(const Fields& fields) {
  std::string out;
  for (const auto& [n, v] : fields) out += "[" + n + "]=[" + v + "] ";
  return out;
}

bool isTchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

std::string_view trimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// ---------------------------------------------------------------------------------------
// The head as RFC 9112 and SPEC §2 want it read, written plainly: lines end in CRLF, no
// NUL or lone CR, no obs-fold, `name ":" OWS value OWS` with a token name. The request
// line is read leniently (runs of SP between its parts): only its target is compared.

struct Reference {
  std::string violation;  // empty: a clean head
  std::string target;
  Fields fields;
};

Reference referenceHead(std::string_view msg) {
  Reference ref;
  size_t pos = 0;
  // Empty lines before the request line are ignored (RFC 9112 §2.2); llhttp skips any CR
  // and LF there, and so does this reading: the head starts at the request line.
  while (pos < msg.size() && (msg[pos] == '\n' || msg[pos] == '\r')) ++pos;
  auto readLine = [&](std::string_view& line) {
    size_t eol = msg.find_first_of("\r\n", pos);
    if (eol == std::string_view::npos) {
      ref.violation = "the head has no end";
      return false;
    }
    if (msg[eol] == '\n') {
      ref.violation = "bare LF at offset " + std::to_string(eol);
      return false;
    }
    if (eol + 1 >= msg.size() || msg[eol + 1] != '\n') {
      ref.violation = "lone CR at offset " + std::to_string(eol);
      return false;
    }
    line = msg.substr(pos, eol - pos);
    pos = eol + 2;
    if (line.find('\0') != std::string_view::npos) {
      ref.violation = "NUL";
      return false;
    }
    return true;
  };

  std::string_view line;
  if (!readLine(line)) return ref;
  size_t sp1 = line.find(' ');
  std::string_view method = line.substr(0, sp1);
  if (sp1 == std::string_view::npos || method.empty()) {
    ref.violation = "request line without a method";
    return ref;
  }
  for (unsigned char c : method) {
    if (!isTchar(c)) {
      ref.violation = "method is not a token";
      return ref;
    }
  }
  size_t t0 = line.find_first_not_of(' ', sp1);
  size_t t1 = t0 == std::string_view::npos ? t0 : line.find(' ', t0);
  if (t1 == std::string_view::npos) {
    ref.violation = "request line without a version";
    return ref;
  }
  ref.target = std::string(line.substr(t0, t1 - t0));
  size_t v0 = line.find_first_not_of(' ', t1);
  std::string_view version = v0 == std::string_view::npos ? "" : line.substr(v0);
  if (version.size() != 8 || !version.starts_with("HTTP/") || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
    ref.violation = "bad version";
    return ref;
  }

  for (;;) {
    if (!readLine(line)) return ref;
    if (line.empty()) return ref;  // end of the head
    if (line[0] == ' ' || line[0] == '\t') {
      ref.violation = "obs-fold";
      return ref;
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      ref.violation = "field line without a colon";
      return ref;
    }
    std::string_view name = line.substr(0, colon);
    if (name.empty()) {
      ref.violation = "empty field name";
      return ref;
    }
    for (unsigned char c : name) {
      if (!isTchar(c)) {
        ref.violation = "field name is not a token (whitespace before the colon?)";
        return ref;
      }
    }
    ref.fields.emplace_back(name, trimOws(line.substr(colon + 1)));
  }
}

// REQUEST_HEAD_FUZZ_IGNORE="bare LF,lone CR,obs-fold,TE not chunked" skips the findings
// whose description starts with those words:
// for exploring past a known, not yet fixed finding. Unset (ctest, `make fuzz`): all count.
bool ignored(const std::string& violation) {
  static const std::string list = [] {
    const char* env = std::getenv("REQUEST_HEAD_FUZZ_IGNORE");
    return std::string(env ? env : "");
  }();
  size_t start = 0;
  while (start < list.size()) {
    size_t comma = list.find(',', start);
    std::string item = list.substr(start, comma == std::string::npos ? comma : comma - start);
    if (!item.empty() && violation.compare(0, item.size(), item) == 0) return true;
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return false;
}

// ---------------------------------------------------------------------------------------
// A fixed route table and its plain re-reading.

struct Routes {
  std::vector<RouteConfig> configs;
  std::unique_ptr<Router> router;
  std::unique_ptr<RE2> items;

  Routes() {
    auto add = [&](std::string name, RouteMatch match) {
      RouteConfig r;
      r.name = std::move(name);
      r.match = std::move(match);
      configs.push_back(std::move(r));
    };
    add("exact", {.path = "/exact", .methods = {"GET", "HEAD"}});
    add("wild", {.host = "*.Example.com", .path_prefix = "/api/"});
    RE2::Options options;
    options.set_log_errors(false);
    auto regex = std::make_shared<const RE2>("/items/[0-9]+(/[a-z]*)?", options);
    add("regex", {.path_regex = "/items/[0-9]+(/[a-z]*)?", .regex = regex});
    add("header", {.path_prefix = "/h", .headers = {{"x-route", "yes"}}});
    add("v6", {.host = "::1", .path_prefix = "/v6"});
    add("named-host", {.host = "Example.ORG.", .path_prefix = "/host"});
    add("default", {.path_prefix = "/"});
    router = std::make_unique<Router>(configs);
    items = std::make_unique<RE2>("/items/[0-9]+(/[a-z]*)?", options);
  }

  static std::string lowerHost(std::string_view host) {
    if (host.starts_with('[')) {
      size_t close = host.find(']');
      if (close != std::string_view::npos) host = host.substr(0, close + 1);
    } else {
      host = host.substr(0, host.find(':'));
    }
    if (host.ends_with('.')) host.remove_suffix(1);
    std::string out(host);
    for (char& c : out) {
      if (c >= 'A' && c <= 'Z') c = char(c + 32);
    }
    return out;
  }

  std::string_view reference(std::string_view host, std::string_view path,
                             std::string_view method, const HeaderList& headers) const {
    std::string h = lowerHost(host);
    if (path == "/exact" && (method == "GET" || method == "HEAD")) return "exact";
    if (path.starts_with("/api/") && h.size() > 12 && h.ends_with(".example.com")) return "wild";
    if (RE2::FullMatch(path, *items)) return "regex";
    if (path.starts_with("/h")) {
      size_t yes = 0, all = 0;
      for (const Header& f : headers) {
        if (!equalsIgnoreCase(f.name, "X-Route")) continue;
        ++all;
        yes += f.value == "yes";
      }
      if (all > 0 && yes == all) return "header";
    }
    if (h == "[::1]" && path.starts_with("/v6")) return "v6";
    if (h == "example.org" && path.starts_with("/host")) return "named-host";
    if (path.starts_with("/")) return "default";
    return "";
  }
};

const Routes& routes() {
  static const Routes* r = new Routes();
  return *r;
}

const std::vector<Cidr>& trustedProxies() {
  static const std::vector<Cidr>* t = [] {
    auto* v = new std::vector<Cidr>();
    for (const char* c : {"10.0.0.0/8", "fd00::/8"}) v->push_back(*parseCidr(c));
    return v;
  }();
  return *t;
}

bool within(std::string_view part, std::string_view whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

// ---------------------------------------------------------------------------------------
// One connection's worth of parsing.

struct Message {
  int err = HPE_OK;   // what llhttp_execute returned last; HPE_OK: input ran out
  size_t end = 0;     // absolute offset where parsing of this message stopped
  bool head_complete = false;
  bool message_complete = false;
  std::string url;
  Fields fields;
  unsigned flags = 0;
  uint64_t content_length = 0;
  std::string body;
  std::string verdict;  // what the gateway answers: "400 ...", "route NAME PATH"

  bool operator==(const Message&) const = default;
};

std::string describe(const Message& m) {
  return "err=" + std::to_string(m.err) + " end=" + std::to_string(m.end) +
         " head=" + std::to_string(m.head_complete) + " done=" + std::to_string(m.message_complete) +
         " url=[" + m.url + "] flags=" + std::to_string(m.flags) + " cl=" +
         std::to_string(m.content_length) + " body=" + std::to_string(m.body.size()) +
         " verdict=[" + m.verdict + "] fields: " + describe(m.fields);
}

class Connection {
 public:
  explicit Connection(std::string_view input) : input_(input), headers_(&arena_) {}

  // Parses every message of the input, cutting the bytes at `cuts` (absolute offsets,
  // ascending) and, when `bytewise`, into single bytes.
  std::vector<Message> run(const std::vector<size_t>& cuts, bool bytewise) {
    std::vector<Message> out;
    size_t pos = 0;
    for (int n = 0; n < 8 && pos < input_.size(); ++n) {
      msg_ = &out.emplace_back();
      msg_start_ = pos;
      llhttp_init(&parser_, HTTP_REQUEST, &settings());
      parser_.data = this;
      head_.reset();
      headers_.clear();
      arena_.reset();
      size_t at = pos;
      bool stopped = false;
      while (at < input_.size()) {
        size_t end = input_.size();
        if (bytewise) end = at + 1;
        for (size_t c : cuts) {
          if (c > at && c < end) end = c;
        }
        received_end_ = end;
        llhttp_errno_t err = llhttp_execute(&parser_, input_.data() + at, end - at);
        if (err != HPE_OK) {
          const char* stop = llhttp_get_error_pos(&parser_);
          FUZZ_CHECK(stop >= input_.data() + at && stop <= input_.data() + end, "error position");
          msg_->err = err;
          msg_->end = size_t(stop - input_.data());
          stopped = true;
          break;
        }
        at = end;
      }
      if (!stopped) {
        msg_->end = input_.size();
        break;  // the input ended inside this message
      }
      // The next pipelined request follows a complete, routed one; anything else closes.
      if (msg_->err != HPE_PAUSED || !msg_->message_complete ||
          !msg_->verdict.starts_with("route ")) {
        break;
      }
      FUZZ_CHECK(msg_->end > pos, "a message that consumed nothing");
      pos = msg_->end;
    }
    return out;
  }

 private:
  static Connection& of(llhttp_t* p) { return *static_cast<Connection*>(p->data); }

  static const llhttp_settings_t& settings() {
    static const llhttp_settings_t s = [] {
      llhttp_settings_t s;
      llhttp_settings_init(&s);  // lenient flags stay off: strict mode, as the gateway
      s.on_url = [](llhttp_t* p, const char* at, size_t len) {
        of(p).head_.onFirstLine(of(p).input_.data(), at, len);
        return 0;
      };
      s.on_header_field = [](llhttp_t* p, const char* at, size_t len) {
        of(p).head_.onField(of(p).input_.data(), at, len);
        return 0;
      };
      s.on_header_value = [](llhttp_t* p, const char* at, size_t len) {
        of(p).head_.onValue(of(p).input_.data(), at, len);
        return 0;
      };
      s.on_headers_complete = [](llhttp_t* p) { return of(p).onHeadersComplete(); };
      s.on_body = [](llhttp_t* p, const char* at, size_t len) {
        of(p).msg_->body.append(at, len);
        return 0;
      };
      s.on_message_complete = [](llhttp_t* p) {
        of(p).msg_->message_complete = true;
        return int(HPE_PAUSED);  // one request at a time, as the gateway
      };
      return s;
    }();
    return s;
  }

  int reject(const char* why) {
    msg_->verdict = std::string("400 ") + why;
    return HPE_PAUSED;  // the gateway answers and closes the connection
  }

  int onHeadersComplete() {
    Message& m = *msg_;
    llhttp_t& p = parser_;
    m.head_complete = true;
    const char* base = input_.data();
    head_.toHeaders(base, headers_);
    m.url = std::string(head_.firstLine(base));
    for (const Header& h : headers_) m.fields.emplace_back(h.name, h.value);
    m.flags = p.flags;
    m.content_length = p.content_length;
    for (const Header& h : headers_) {
      FUZZ_CHECK(within(h.name, input_) && within(h.value, input_), "views outside the input");
    }
    // As DownstreamConnection: the raw scan sees the request's bytes received so far.
    if (p.http_major != 1 || p.http_minor > 1 || !headIsUnambiguous(headers_) ||
        !rawHeadIsStrict(base + msg_start_, base + received_end_)) {
      return reject("malformed");
    }

    // Accepted as unambiguous: a plain reading must see the same head.
    Reference ref = referenceHead(input_.substr(msg_start_));
    if (!ref.violation.empty() && ignored(ref.violation)) return reject("malformed");  // ignored on request: as a refusal
    FUZZ_CHECK(ref.violation.empty(), ref.violation);
    FUZZ_CHECK(ref.target == m.url, "llhttp url [" + m.url + "] reference [" + ref.target + "]");
    FUZZ_CHECK(ref.fields == m.fields,
               "collected " + describe(m.fields) + " reference " + describe(ref.fields));
    if (!checkFraming(m)) return reject("malformed");  // ignored on request: as a refusal

    std::string_view method = llhttp_method_name(static_cast<llhttp_method_t>(p.method));
    bool http10 = p.http_minor == 0;
    if (p.method == HTTP_CONNECT) return reject("connect");
    bool websocket = false;
    if (p.upgrade) {
      forEachToken(headers_.get("upgrade"), [&](std::string_view t) {
        FUZZ_CHECK(!t.empty() && t == trimOws(t) && t.find(',') == std::string_view::npos,
                   std::string(t));
        websocket |= equalsIgnoreCase(t, "websocket");
      });
      if (!websocket) p.upgrade = 0;  // as the gateway: answered in HTTP/1.1
      if (websocket && ((p.flags & F_CHUNKED) || p.content_length > 0)) {
        return reject("upgrade with a body");
      }
    }

    checkClientIp();

    RequestTarget target;
    std::string_view url = head_.firstLine(base);  // a view into the input, as the gateway's
    if (!parseRequestTarget(url, method, target) || target.asterisk) return reject("target");
    // (The path of "http://host" is a constant "/", not a view.)
    FUZZ_CHECK(within(target.query, input_) && within(target.authority, input_), "target views");
    path_.clear();
    if (normalizePath(target.path, path_) != PathResult::Ok) return reject("path");
    FUZZ_CHECK(!path_.empty() && path_[0] == '/' && path_.size() <= target.path.size() + 1, path_);

    bool has_host = false;
    std::string_view host = headers_.get("host", &has_host);
    if (!target.authority.empty()) host = target.authority;
    if (!http10 && !has_host) return reject("no host");
    if (headers_.count("host") > 1) return reject("two hosts");
    if ((has_host || !target.authority.empty()) && !isValidAuthority(host)) return reject("host");

    const Routes& r = routes();
    const RouteConfig* route = r.router->match(host, path_, method, headers_);
    FUZZ_CHECK(route != nullptr, "no route although the default matches every path");
    std::string_view want = r.reference(host, path_, method, headers_);
    FUZZ_CHECK(route->name == want, "router chose " + route->name + ", the table says " +
                                         std::string(want) + " for host [" + std::string(host) +
                                         "] path [" + path_ + "]");
    if (route->name == "wild") {
      std::string stripped;
      FUZZ_CHECK(applyStripPrefix(path_, "/api", stripped) && stripped.starts_with('/'), stripped);
    }
    m.verdict = "route " + route->name + " " + path_;
    return 0;
  }

  // The framing llhttp decided on must be the one the headers state. False: a known
  // disagreement the caller was told to ignore.
  bool checkFraming(const Message& m) {
    size_t cl = 0, te = 0;
    std::string_view cl_value;
    for (const auto& [name, value] : m.fields) {
      if (equalsIgnoreCase(name, "content-length")) {
        ++cl;
        cl_value = value;
      }
      if (equalsIgnoreCase(name, "transfer-encoding")) {
        ++te;
        FUZZ_CHECK(equalsIgnoreCase(value, "chunked"), value);
      }
    }
    std::string what = describe(m);
    bool chunked = (m.flags & F_CHUNKED) != 0;
    bool has_cl = (m.flags & F_CONTENT_LENGTH) != 0;
    // llhttp reports a Transfer-Encoding it did not take as chunked only after
    // on_headers_complete returned: by then the gateway has routed and proxied.
    if (chunked != (te > 0) && ignored("TE not chunked")) return false;
    FUZZ_CHECK(chunked == (te > 0), "TE not chunked: flag vs Transfer-Encoding fields: " + what);
    FUZZ_CHECK(!(chunked && has_cl) && !(te > 0 && cl > 0), "both framings accepted: " + what);
    FUZZ_CHECK(has_cl == (cl > 0), "content-length flag vs fields: " + what);
    FUZZ_CHECK(cl <= 1, "several Content-Length fields accepted: " + what);
    if (cl == 1) {
      FUZZ_CHECK(!cl_value.empty(), what);
      uint64_t n = 0;
      bool overflow = false;
      for (char c : cl_value) {
        FUZZ_CHECK(c >= '0' && c <= '9', "Content-Length not digits: " + what);
        overflow |= __builtin_mul_overflow(n, 10, &n) || __builtin_add_overflow(n, c - '0', &n);
      }
      FUZZ_CHECK(!overflow && n == m.content_length, "Content-Length value vs llhttp: " + what);
    }
    return true;
  }

  void checkClientIp() {
    static const std::string_view kPeers[] = {"10.0.0.1", "203.0.113.9"};
    std::string_view xff = headers_.get("x-forwarded-for");
    for (std::string_view peer : kPeers) {
      uint8_t peer16[16];
      FUZZ_CHECK(parseIp16(peer, peer16), peer);
      uint8_t ip16[16];
      std::string_view ip = resolveClientIp(trustedProxies(), peer, peer16, xff, ip16);
      FUZZ_CHECK(within(ip, peer) || within(ip, xff), "client address is not a view of its input");
      uint8_t again[16];
      FUZZ_CHECK(parseIp16(ip, again) && std::memcmp(again, ip16, 16) == 0, ip);
      if (!isTrusted(trustedProxies(), peer16)) FUZZ_CHECK(ip == peer, ip);
    }
  }

  std::string_view input_;
  llhttp_t parser_;
  HeadCollector head_;
  StringArena arena_;
  HeaderList headers_;
  std::string path_;
  Message* msg_ = nullptr;
  size_t msg_start_ = 0;
  size_t received_end_ = 0;  // end of the bytes handed to llhttp so far
};

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

void compare(const std::vector<Message>& a, const std::vector<Message>& b, const char* how) {
  if (a == b) return;
  std::string detail = std::string(how) + ": whole gives " + std::to_string(a.size()) +
                       " messages, split " + std::to_string(b.size());
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (a[i] == b[i]) continue;
    detail += "; message " + std::to_string(i) + " whole {" + describe(a[i]) + "} split {" +
              describe(b[i]) + "}";
    break;
  }
  fail("parsing depends on how the bytes arrive", __LINE__, detail);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  g_input = input;
  Connection whole_conn(input);
  std::vector<Message> whole = whole_conn.run({}, false);

  uint64_t h = fnv1a(input);
  size_t c1 = size ? size_t(h % (size + 1)) : 0;
  size_t c2 = size ? size_t((h >> 32) % (size + 1)) : 0;
  if (c1 > c2) std::swap(c1, c2);
  Connection split_conn(input);
  compare(whole, split_conn.run({c1, c2}, false), "three pieces");
  if (size <= 200) {
    Connection bytes_conn(input);
    compare(whole, bytes_conn.run({}, true), "byte by byte");
  }
  return 0;
}
