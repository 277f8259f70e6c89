// A tiny blocking HTTP server on 127.0.0.1 for the JWKS fetch tests: one thread, one
// connection at a time, answers every request with the response set last.
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
  int requests() const { return requests_.load(); }
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
      std::string request;
      char buf[4096];
      while (request.find("\r\n\r\n") == std::string::npos) {
        pollfd cp{c, POLLIN, 0};
        if (::poll(&cp, 1, 1000) <= 0) break;
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        request.append(buf, size_t(n));
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
      } else {
        ::send(c, raw.data(), raw.size(), MSG_NOSIGNAL);
      }
      ::close(c);
    }
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  mutable std::mutex mutex_;
  std::string raw_ = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
  std::string last_request_;
  bool silent_ = false;
};

}  // namespace gw::test_util
