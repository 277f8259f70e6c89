#include "gateway/router.h"

#include <gtest/gtest.h>
#include <re2/re2.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace gw {
namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

RouteConfig makeRoute(std::string name, RouteMatch match) {
  RouteConfig r;
  r.name = std::move(name);
  r.match = std::move(match);
  return r;
}

struct Request {
  std::string host;
  std::string path;
  std::string method = "GET";
  Headers headers = {};
};

struct RouteCase {
  Request request;
  std::string expected;  // route name; empty: no route
};

// Runs every case against one route table and names the failing request.
void expectRoutes(const std::vector<RouteConfig>& routes, const std::vector<RouteCase>& cases) {
  Router router(routes);
  for (const RouteCase& c : cases) {
    const Request& q = c.request;
    HeaderList headers;
    for (const auto& [name, value] : q.headers) headers.addRef(name, value);
    const RouteConfig* got = router.match(q.host, q.path, q.method, headers);
    std::string got_name = got ? got->name : "";
    EXPECT_EQ(got_name, c.expected) << q.method << " " << q.host << q.path;
  }
}

// The routes of reference.yaml, in its order.
std::vector<RouteConfig> referenceRoutes() {
  return {
      makeRoute("register", {.path_prefix = "/api/register", .methods = {"POST"}}),
      makeRoute("admin", {.path_regex = "/api/admin(/.*)?"}),
      makeRoute("me", {.path_prefix = "/api/me"}),
      makeRoute("partners", {.path_prefix = "/partners/"}),
      makeRoute("uploads", {.path_prefix = "/api/uploads"}),
      makeRoute("default", {.path_prefix = "/"}),
  };
}

TEST(Router, ReferenceRoutes) {
  expectRoutes(referenceRoutes(), {
      {{"gw", "/api/register", "POST"}, "register"},
      {{"gw", "/api/register/x", "POST"}, "register"},
      {{"gw", "/api/register", "GET"}, "default"},  // wrong method falls through
      {{"gw", "/api/admin"}, "admin"},
      {{"gw", "/api/admin/"}, "admin"},
      {{"gw", "/api/admin/users/1"}, "admin"},
      {{"gw", "/api/administrator"}, "default"},  // full match, not a prefix search
      {{"gw", "/api/adminx"}, "default"},
      {{"gw", "/x/api/admin"}, "default"},        // full match is anchored at the start too
      {{"gw", "/api/admin%2Fusers"}, "default"},
      {{"gw", "/api/me"}, "me"},
      {{"gw", "/api/meta"}, "me"},  // path_prefix is a plain string prefix
      {{"gw", "/partners/x"}, "partners"},
      {{"gw", "/partners"}, "default"},
      {{"gw", "/api/uploads/f"}, "uploads"},
      {{"gw", "/"}, "default"},
      {{"", "/anything"}, "default"},
  });
}

TEST(Router, FirstMatchingRouteWins) {
  std::vector<RouteConfig> routes = {
      makeRoute("broad", {.path_prefix = "/api"}),
      makeRoute("narrow", {.path_prefix = "/api/v2"}),  // shadowed: order, not specificity
      makeRoute("exact", {.path = "/status"}),
      makeRoute("status-prefix", {.path_prefix = "/status"}),
  };
  expectRoutes(routes, {
      {{"h", "/api/v2/x"}, "broad"},
      {{"h", "/apix"}, "broad"},
      {{"h", "/status"}, "exact"},
      {{"h", "/status/"}, "status-prefix"},  // exact means exact
      {{"h", "/statusz"}, "status-prefix"},
      {{"h", "/"}, ""},
      {{"h", "/Api"}, ""},  // paths are case-sensitive
  });
}

TEST(Router, EveryConditionMustHold) {
  std::vector<RouteConfig> routes = {
      makeRoute("all", {.host = "api.example.com",
                        .path_prefix = "/v1/",
                        .path_regex = "/v1/[a-z]+",
                        .methods = {"PUT"},
                        .headers = {{"x-tenant", "acme"}}}),
  };
  Request ok{"api.example.com", "/v1/items", "PUT", {{"X-Tenant", "acme"}}};
  auto with = [&](auto change) {
    Request q = ok;
    change(q);
    return q;
  };
  expectRoutes(routes, {
      {ok, "all"},
      {with([](Request& q) { q.host = "web.example.com"; }), ""},
      {with([](Request& q) { q.path = "/v2/items"; }), ""},
      {with([](Request& q) { q.path = "/v1/items2"; }), ""},
      {with([](Request& q) { q.method = "GET"; }), ""},
      {with([](Request& q) { q.headers = {}; }), ""},
      {with([](Request& q) { q.headers = {{"x-tenant", "other"}}; }), ""},
  });
}

TEST(Router, Hosts) {
  std::vector<RouteConfig> routes = {
      makeRoute("wild", {.host = "*.example.com"}),
      makeRoute("apex", {.host = "Example.COM"}),
      makeRoute("v6", {.host = "::1"}),
      makeRoute("v6-bracketed", {.host = "[fe80::1]"}),
      makeRoute("fqdn", {.host = "fqdn.test."}),
      makeRoute("star", {.host = "*", .path = "/star"}),
  };
  expectRoutes(routes, {
      {{"a.example.com", "/"}, "wild"},
      {{"a.b.example.com", "/"}, "wild"},
      {{"A.Example.Com", "/"}, "wild"},
      {{"a.example.com:8080", "/"}, "wild"},
      {{"a.example.com.", "/"}, "wild"},
      {{"example.com", "/"}, "apex"},  // the wildcard never takes the apex
      {{"EXAMPLE.com:443", "/"}, "apex"},
      {{"example.com.", "/"}, "apex"},
      {{".example.com", "/"}, ""},
      {{"badexample.com", "/"}, ""},  // not a label boundary
      {{"example.com.evil.net", "/"}, ""},
      {{"example.co", "/"}, ""},
      {{"[::1]", "/"}, "v6"},
      {{"[::1]:8080", "/"}, "v6"},
      {{"[FE80::1]:80", "/"}, "v6-bracketed"},
      {{"[::2]:8080", "/"}, ""},
      {{"[::1", "/"}, ""},  // unterminated literal: no port to strip, nothing matches
      {{"fqdn.test", "/"}, "fqdn"},
      {{"fqdn.test:1", "/"}, "fqdn"},
      {{"", "/"}, ""},  // no Host: only host-less routes
      {{"", "/star"}, "star"},
      {{"anything", "/star"}, "star"},
  });
}

TEST(Router, Methods) {
  std::vector<RouteConfig> routes = {
      makeRoute("read", {.methods = {"GET", "HEAD"}}),
      makeRoute("any", {}),
  };
  expectRoutes(routes, {
      {{"h", "/", "GET"}, "read"},
      {{"h", "/", "HEAD"}, "read"},
      {{"h", "/", "POST"}, "any"},
      {{"h", "/", "get"}, "any"},  // methods are case-sensitive
      {{"h", "/", "GETX"}, "any"},
  });
}

TEST(Router, Headers) {
  std::vector<RouteConfig> routes = {
      makeRoute("both", {.headers = {{"x-canary", "1"}, {"X-Tenant", "acme"}}}),
      makeRoute("canary", {.headers = {{"x-canary", "1"}}}),
      makeRoute("any", {}),
  };
  expectRoutes(routes, {
      {{"h", "/", "GET", {{"x-canary", "1"}, {"x-tenant", "acme"}}}, "both"},
      {{"h", "/", "GET", {{"X-TENANT", "acme"}, {"X-Canary", "1"}}}, "both"},
      {{"h", "/", "GET", {{"x-canary", "1"}}}, "canary"},
      {{"h", "/", "GET", {{"x-canary", "1"}, {"x-tenant", "Acme"}}}, "canary"},  // exact value
      {{"h", "/", "GET", {{"x-canary", "1 "}}}, "any"},
      {{"h", "/", "GET", {{"x-canary", ""}}}, "any"},
      {{"h", "/", "GET", {{"x-canary", "1"}, {"x-canary", "1"}}}, "canary"},
      // Duplicates that disagree never match: the upstream might read either one.
      {{"h", "/", "GET", {{"x-canary", "1"}, {"x-canary", "0"}}}, "any"},
      {{"h", "/", "GET", {{"x-canary", "0"}, {"x-canary", "1"}}}, "any"},
      {{"h", "/", "GET", {{"x-canaryx", "1"}}}, "any"},
      {{"h", "/", "GET", {}}, "any"},
  });
}

TEST(Router, RegexIsAFullMatch) {
  std::vector<RouteConfig> routes = {
      makeRoute("admin", {.path_regex = "/api/admin(/.*)?"}),
      makeRoute("ids", {.path_regex = "/users/[0-9]+"}),
      makeRoute("alt", {.path_regex = "/a|/b"}),  // alternation binds inside the anchors
  };
  expectRoutes(routes, {
      {{"h", "/api/admin"}, "admin"},
      {{"h", "/api/admin/x/y"}, "admin"},
      {{"h", "/api/administrator"}, ""},
      {{"h", "/api/admin2"}, ""},
      {{"h", "/users/42"}, "ids"},
      {{"h", "/users/42/"}, ""},
      {{"h", "/users/42x"}, ""},
      {{"h", "/a"}, "alt"},
      {{"h", "/b"}, "alt"},
      {{"h", "/ab"}, ""},
      {{"h", "/b/c"}, ""},
  });
}

TEST(Router, UsesTheLoadersCompiledRegex) {
  std::vector<RouteConfig> routes = {makeRoute("r", {.path_regex = "ignored"})};
  routes[0].match.regex = std::make_shared<const RE2>("/compiled");
  expectRoutes(routes, {{{"h", "/compiled"}, "r"}, {{"h", "ignored"}, ""}});
}

TEST(Router, RejectsWhatItCannotMatch) {
  for (RouteMatch m : std::vector<RouteMatch>{
           {.path_regex = "/a("},
           {.host = "example.com:8080"},
           {.host = "a.*.com"},
           {.host = "*example.com"},
       }) {
    std::vector<RouteConfig> routes = {makeRoute("bad", m)};
    EXPECT_THROW(Router{routes}, std::invalid_argument) << m.host << m.path_regex;
  }
}

TEST(Router, EmptyTableMatchesNothing) {
  expectRoutes({}, {{{"h", "/"}, ""}});
}

TEST(StripPort, Forms) {
  EXPECT_EQ(stripPort("example.com"), "example.com");
  EXPECT_EQ(stripPort("example.com:8080"), "example.com");
  EXPECT_EQ(stripPort("example.com:"), "example.com");
  EXPECT_EQ(stripPort("[::1]:443"), "[::1]");
  EXPECT_EQ(stripPort("[::1]"), "[::1]");
  EXPECT_EQ(stripPort("[::1"), "[::1");
  EXPECT_EQ(stripPort(""), "");
}

}  // namespace
}  // namespace gw
