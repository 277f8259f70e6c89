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

namespace gw::jwt {
namespace {

// The trace exporter's way: one connection kept for request after request.
class HttpConnectionTest : public HttpFetchTest {
 protected:
  HttpConnectionTest() {
    url_ = *parseHttpUrl(server_.url("/v1/traces"), nullptr);
    connection_ = openHttpConnection(&loop_, url_, 1000);
  }
  ~HttpConnectionTest() override {
    closeHttpConnection(connection_);
    uv_run(&loop_, UV_RUN_DEFAULT);
  }

  HttpResult post(std::string_view body, uint64_t timeout_ms = 3000) {
    HttpResult out;
    bool finished = false;
    sendHttpRequest(connection_, "POST", {{"Content-Type", "application/x-protobuf"}}, body,
                    timeout_ms, [&](HttpResult&& r) {
                      out = std::move(r);
                      finished = true;
                    });
    while (!finished) uv_run(&loop_, UV_RUN_ONCE);
    return out;
  }

  HttpUrl url_;
  HttpFetch* connection_ = nullptr;
};

TEST_F(HttpConnectionTest, OneConnectionServesRequestAfterRequest) {
  server_.setKeepAlive(100);
  server_.setRaw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  for (int i = 0; i < 5; ++i) {
    std::string body(100000 + i, char('a' + i));
    HttpResult r = post(body);
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "ok");
    std::string request = server_.lastRequest();
    EXPECT_THAT(request, testing::StartsWith("POST /v1/traces HTTP/1.1\r\n"));
    EXPECT_THAT(request, HasSubstr("\r\nContent-Length: " + std::to_string(body.size()) + "\r\n"));
    EXPECT_THAT(request, testing::Not(HasSubstr("Connection:")));
    EXPECT_THAT(request, testing::EndsWith("\r\n\r\n" + body));
  }
  EXPECT_EQ(server_.requests(), 5);
  EXPECT_EQ(server_.connections(), 1);
  EXPECT_EQ(httpConnectionsOpened(connection_), 1u);
}

TEST_F(HttpConnectionTest, AConnectionTheServerClosedIsReplaced) {
  // Closed after each answer, without saying so: seen while idle, replaced at the next
  // request; then closed by `Connection: close`, and by bytes that answer nothing.
  server_.setRaw("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(post("x").status, 200);
    for (int spin = 0; spin < 25; ++spin) {  // the server's FIN, read while idle
      uv_run(&loop_, UV_RUN_NOWAIT);
      usleep(2000);
    }
  }
  server_.setKeepAlive(100);
  server_.setRaw("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(post("x").status, 200);
  EXPECT_EQ(post("x").status, 200);
  server_.setRaw("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(post("x").status, 204);
  EXPECT_EQ(post("x").status, 204);
  EXPECT_EQ(server_.requests(), 7);
  EXPECT_EQ(server_.connections(), 7);
  EXPECT_EQ(httpConnectionsOpened(connection_), 7u);
}

TEST_F(HttpConnectionTest, AFailedRequestLeavesTheConnectionUsable) {
  server_.setKeepAlive(100);
  server_.setSilent();
  HttpResult r = post("x", 200);
  EXPECT_THAT(r.error, HasSubstr("in time"));
  EXPECT_EQ(r.status, 0);
  server_.setRaw("HTTP/1.1 503 Busy\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n");
  r = post("x");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.retry_after, "3");
  EXPECT_EQ(post("x").status, 503);
  EXPECT_EQ(server_.connections(), 2);  // the timed-out one, then one for both 503s
}

TEST_F(HttpConnectionTest, ARefusedConnectionIsTriedAgainAtTheNextRequest) {
  int port;
  {
    test_util::TestHttpServer closed;
    port = closed.port();
  }
  closeHttpConnection(connection_);
  auto refused = parseHttpUrl("http://127.0.0.1:" + std::to_string(port) + "/", nullptr);
  connection_ = openHttpConnection(&loop_, *refused, 1000);
  EXPECT_THAT(post("x").error, HasSubstr("cannot connect"));
  EXPECT_THAT(post("x").error, HasSubstr("cannot connect"));
  EXPECT_EQ(httpConnectionsOpened(connection_), 0u);
}

TEST_F(HttpConnectionTest, CancelAndCloseMeanNoCallback) {
  server_.setKeepAlive(100);
  server_.setSilent();
  int calls = 0;
  sendHttpRequest(connection_, "POST", {}, "x", 5000, [&](HttpResult&&) { ++calls; });
  uv_run(&loop_, UV_RUN_NOWAIT);
  cancelHttpRequest(connection_);
  sendHttpRequest(connection_, "POST", {}, "y", 5000, [&](HttpResult&&) { ++calls; });
  uv_run(&loop_, UV_RUN_NOWAIT);
  closeHttpConnection(connection_);
  connection_ = nullptr;
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(calls, 0);
}

}  // namespace
}  // namespace gw::jwt
