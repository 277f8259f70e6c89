// A tiny blocking HTTP server on 127.0.0.1 for the HTTP client tests: one thread, one
// connection at a time, answers every request with the response set last. A connection
// serves one request, or up to setKeepAlive()'s number (request bodies are read by their
// Content-Length).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>

namespace gw::test_util {

class TestHttpServer {
 public:
  TestHttpServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    ::listen(fd_, 16);
    socklen_t len = sizeof sa;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~TestHttpServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }

  uint16_t port() const { return port_; }
  std::string url(const std::string& path = "/jwks.json") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  // A complete response with Content-Length.
  void respond(int status, const std::string& body) {
    setRaw("HTTP/1.1 " + std::to_string(status) +
           " X\r\nContent-Type: application/json\r\n"
           "Content-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  }
  void setRaw(std::string raw) {
    std::lock_guard<std::mutex> lock(mutex_);
    raw_ = std::move(raw);
    silent_ = false;
  }
  // Reads requests but never answers them.
  void setSilent() {
    std::lock_guard<std::mutex> lock(mutex_);
    silent_ = true;
  }
  // Requests served on one connection before it is closed (after the last answer).
  void setKeepAlive(int requests_per_connection) { per_connection_ = requests_per_connection; }
  int requests() const { return requests_.load(); }
  int connections() const { return connections_.load(); }
  std::string lastRequest() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_request_;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      ++connections_;
      std::string pending;
      for (int served = 0; served < per_connection_.load() && !stop_; ++served) {
        if (!serveOne(c, pending)) break;
      }
      ::close(c);
    }
  }

  // One request of connection `c` (`pending`: bytes read past the previous one); false
  // when the client went away first.
  bool serveOne(int c, std::string& pending) {
    std::string request = std::move(pending);
    pending.clear();
    char buf[4096];
    auto fill = [&](size_t want) {
      while (want == 0 ? request.find("\r\n\r\n") == std::string::npos : request.size() < want) {
        pollfd cp{c, POLLIN, 0};
        if (::poll(&cp, 1, 1000) <= 0) return false;
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) return false;
        request.append(buf, size_t(n));
      }
      return true;
    };
    if (!fill(0) && request.empty()) return false;
    size_t head_end = request.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      size_t length = 0;
      size_t at = request.find("\r\nContent-Length: ");
      if (at != std::string::npos && at < head_end) length = std::stoul(request.substr(at + 18));
      fill(head_end + 4 + length);
      if (request.size() > head_end + 4 + length) {
        pending = request.substr(head_end + 4 + length);
        request.resize(head_end + 4 + length);
      }
    }
    std::string raw;
    bool silent;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      last_request_ = request;
      raw = raw_;
      silent = silent_;
    }
    ++requests_;
    if (silent) {
      // Hold the connection until the client gives up (or the server stops).
      pollfd cp{c, POLLIN, 0};
      while (!stop_ && ::poll(&cp, 1, 20) == 0) {
      }
      return false;
    }
    ::send(c, raw.data(), raw.size(), MSG_NOSIGNAL);
    return true;
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::atomic<int> connections_{0};
  std::atomic<int> per_connection_{1};
  mutable std::mutex mutex_;
  std::string raw_ = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
  std::string last_request_;
  bool silent_ = false;
};

}  // namespace gw::test_util
