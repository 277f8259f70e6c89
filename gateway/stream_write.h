// Writing a Buffer to a libuv stream: one writev attempt straight away (most responses
// and requests leave in that single syscall, external segments without a copy), and
// only the rest queued with uv_write after copying what is external.
#pragma once

#include <uv.h>

#include "gateway/buffer.h"

namespace gw {

enum class WriteResult { Done, Pending, Failed };

// Precondition: no write in flight (*in_flight == 0). On Pending, *in_flight holds the
// bytes handed to uv_write; the callback must drain that many from `buf`.
inline WriteResult writeBuffer(uv_stream_t* stream, uv_write_t* req, Buffer& buf,
                               size_t* in_flight, uv_write_cb cb) {
  if (*in_flight > 0) {
    // Bytes appended behind a write in flight may still point into the sender's input
    // block, which is reused as soon as this returns.
    buf.internalize();
    return WriteResult::Pending;
  }
  if (buf.empty()) return WriteResult::Done;
  constexpr size_t kMaxIov = 64;
  iovec iov[kMaxIov];
  size_t n = buf.peek(iov, kMaxIov);
  int written = uv_try_write(stream, reinterpret_cast<uv_buf_t*>(iov), unsigned(n));
  if (written > 0) {
    buf.drain(size_t(written));
  } else if (written < 0 && written != UV_EAGAIN) {
    return WriteResult::Failed;
  }
  if (buf.empty()) return WriteResult::Done;
  buf.internalize();
  n = buf.peek(iov, kMaxIov);
  size_t bytes = 0;
  for (size_t i = 0; i < n; ++i) bytes += iov[i].iov_len;
  if (uv_write(req, stream, reinterpret_cast<uv_buf_t*>(iov), unsigned(n), cb) != 0) {
    return WriteResult::Failed;
  }
  *in_flight = bytes;
  return WriteResult::Pending;
}

}  // namespace gw
