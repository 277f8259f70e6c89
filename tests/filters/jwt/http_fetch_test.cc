#include "filters/jwt/http_fetch.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/filters/jwt/test_http_server.h"

namespace gw::jwt {
namespace {

using testing::HasSubstr;

TEST(HttpUrlTest, Parses) {
  struct Case {
    const char* url;
    bool https;
    const char* host;
    uint16_t port;
    const char* target;
    const char* authority;
  } cases[] = {
      {"http://idp.example.com/.well-known/jwks.json?x=1#frag", false, "idp.example.com", 80,
       "/.well-known/jwks.json?x=1", "idp.example.com"},
      {"HTTPS://[::1]:8443", true, "::1", 8443, "/", "[::1]:8443"},
      {"http://127.0.0.1:9100?q", false, "127.0.0.1", 9100, "/?q", "127.0.0.1:9100"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.url);
    auto u = parseHttpUrl(c.url, nullptr);
    ASSERT_TRUE(u);
    EXPECT_EQ(u->https, c.https);
    EXPECT_EQ(u->host, c.host);
    EXPECT_EQ(u->port, c.port);
    EXPECT_EQ(u->target, c.target);
    EXPECT_EQ(u->authority, c.authority);
  }
}

TEST(HttpUrlTest, Refuses) {
  for (const char* bad : {"ftp://x/", "http://", "http:///path", "http://user@host/",
                          "http://host:0/", "http://host:65536/", "http://host:/",
                          "http://host:12a/", "http://ho st/", "http://[::1/", "http://[::1]x/"}) {
    std::string error;
    EXPECT_FALSE(parseHttpUrl(bad, &error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
}

class HttpFetchTest : public testing::Test {
 protected:
  HttpFetchTest() { uv_loop_init(&loop_); }
  ~HttpFetchTest() override { uv_loop_close(&loop_); }

  HttpResult get(const std::string& url, uint64_t timeout_ms = 3000, size_t max_body = 1 << 20) {
    std::string error;
    auto parsed = parseHttpUrl(url, &error);
    EXPECT_TRUE(parsed) << error;
    HttpResult out;
    int calls = 0;
    startHttpGet(&loop_, *parsed, timeout_ms, max_body, [&](HttpResult&& r) {
      out = std::move(r);
      ++calls;
    });
    uv_run(&loop_, UV_RUN_DEFAULT);  // ends once the fetch has freed its handles
    EXPECT_EQ(calls, 1);
    return out;
  }

  uv_loop_t loop_{};
  test_util::TestHttpServer server_;
};

TEST_F(HttpFetchTest, ContentLength) {
  server_.respond(200, R"({"keys":[]})");
  HttpResult r = get(server_.url());
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"keys":[]})");
  std::string request = server_.lastRequest();
  EXPECT_THAT(request, testing::StartsWith("GET /jwks.json HTTP/1.1\r\n"));
  EXPECT_THAT(request, HasSubstr("\r\nHost: 127.0.0.1:" + std::to_string(server_.port())));
  EXPECT_THAT(request, HasSubstr("\r\nConnection: close\r\n"));
}

TEST_F(HttpFetchTest, ChunkedAndCloseDelimited) {
  server_.setRaw(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n "
      "world\r\n0\r\n\r\n");
  EXPECT_EQ(get(server_.url()).body, "hello world");
  server_.setRaw("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end");
  HttpResult r = get(server_.url());
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.body, "until the end");
}

TEST_F(HttpFetchTest, StatusIsReported) {
  server_.respond(503, "busy");
  HttpResult r = get(server_.url());
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.status, 503);
}

TEST_F(HttpFetchTest, Failures) {
  server_.setRaw("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
  EXPECT_THAT(get(server_.url()).error, HasSubstr("closed before the response ended"));
  server_.setRaw("garbage\r\n\r\n");
  EXPECT_THAT(get(server_.url()).error, HasSubstr("invalid HTTP response"));
  server_.respond(200, std::string(2000, 'x'));
  EXPECT_THAT(get(server_.url(), 3000, 1000).error, HasSubstr("over 1000 bytes"));
  server_.setSilent();
  HttpResult r = get(server_.url(), 200);
  EXPECT_THAT(r.error, HasSubstr("in time"));
  EXPECT_EQ(r.status, 0);
}

TEST_F(HttpFetchTest, ConnectionRefused) {
  int port;
  {
    test_util::TestHttpServer closed;
    port = closed.port();
  }
  HttpResult r = get("http://127.0.0.1:" + std::to_string(port) + "/");
  EXPECT_THAT(r.error, HasSubstr("cannot connect to 127.0.0.1:"));
}

TEST_F(HttpFetchTest, ResolvesNames) {
  server_.respond(200, "{}");
  // localhost may resolve to ::1 first, where nothing listens: the next address is tried.
  HttpResult r = get("http://localhost:" + std::to_string(server_.port()) + "/");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.body, "{}");
}

TEST_F(HttpFetchTest, HttpsSpeaksTlsAndReportsItsFailures) {
  // The plain test server cannot answer a ClientHello: the TLS client reports that, it
  // never falls back to plain HTTP.
  HttpResult r = get("https://127.0.0.1:" + std::to_string(server_.port()) + "/");
  EXPECT_THAT(r.error, HasSubstr("TLS"));
  EXPECT_EQ(r.status, 0);
}

TEST_F(HttpFetchTest, CancelMeansNoCallback) {
  server_.setSilent();
  auto url = parseHttpUrl(server_.url(), nullptr);
  int calls = 0;
  HttpFetch* f = startHttpGet(&loop_, *url, 5000, 1000, [&](HttpResult&&) { ++calls; });
  uv_run(&loop_, UV_RUN_NOWAIT);
  cancelHttpGet(f);
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(calls, 0);
}

}  // namespace
}  // namespace gw::jwt
