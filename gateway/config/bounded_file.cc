#include "gateway/config/bounded_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace gw {
namespace {

std::string tooLargeError() {
  return "larger than the " + std::to_string(kMaxConfigFileBytes >> 20) + " MiB limit";
}

const char* fileKind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "neither a file nor a directory";
}

}  // namespace

// O_NONBLOCK: opening a FIFO that has no writer would block (a `--check` or a reload
// hanging for ever); it is refused by fstat() on the open fd instead, so what is checked
// is what gets read. O_NOCTTY: a terminal named by mistake must not become the process's
// controlling terminal.
int openBoundedFile(const std::string& path, std::string& error) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    error = std::strerror(errno);
    return -1;
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    error = std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    error = std::string("not a regular file (") + fileKind(st.st_mode) + ")";
  } else if (static_cast<uint64_t>(st.st_size) > kMaxConfigFileBytes) {
    error = tooLargeError();
  } else {
    return fd;
  }
  close(fd);
  return -1;
}

bool readBoundedFile(const std::string& path, std::string& out, std::string& error) {
  out.clear();
  int fd = openBoundedFile(path, error);
  if (fd < 0) return false;
  char buffer[16384];
  for (;;) {
    // One byte past the limit at most: enough to tell a file that grew since fstat(), or
    // that reports no size (/proc), from one that fits.
    size_t want = std::min(sizeof(buffer), size_t(kMaxConfigFileBytes + 1 - out.size()));
    ssize_t n = ::read(fd, buffer, want);
    if (n == 0) break;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = std::strerror(errno);
      out.clear();
      close(fd);
      return false;
    }
    out.append(buffer, static_cast<size_t>(n));
    if (out.size() > kMaxConfigFileBytes) {
      error = tooLargeError();
      out.clear();
      close(fd);
      return false;
    }
  }
  close(fd);
  return true;
}

}  // namespace gw
