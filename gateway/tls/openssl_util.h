// Owning pointers for OpenSSL objects, a readable form of its error queue, and the one way
// the gateway reads a PEM file.
//
// Contract: header-only; each alias frees with the matching OpenSSL function, so an
// object handed to a call that takes ownership (the set0/add0 family) must be release()d.
#pragma once

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include "gateway/config/bounded_file.h"

namespace gw {

template <class T, void (*Free)(T*)>
struct OpensslFree {
  void operator()(T* p) const noexcept { Free(p); }
};
template <class T, void (*Free)(T*)>
using OpensslPtr = std::unique_ptr<T, OpensslFree<T, Free>>;

inline void freeX509Stack(STACK_OF(X509) * s) { sk_X509_pop_free(s, X509_free); }
inline void freeX509NameStack(STACK_OF(X509_NAME) * s) { sk_X509_NAME_pop_free(s, X509_NAME_free); }
inline void freeBio(BIO* b) { BIO_free(b); }

using BioPtr = OpensslPtr<BIO, freeBio>;
using X509Ptr = OpensslPtr<X509, X509_free>;
using X509StackPtr = OpensslPtr<STACK_OF(X509), freeX509Stack>;
using X509NameStackPtr = OpensslPtr<STACK_OF(X509_NAME), freeX509NameStack>;
using X509StorePtr = OpensslPtr<X509_STORE, X509_STORE_free>;
using PkeyPtr = OpensslPtr<EVP_PKEY, EVP_PKEY_free>;
using SslCtxPtr = OpensslPtr<SSL_CTX, SSL_CTX_free>;
using SslPtr = OpensslPtr<SSL, SSL_free>;
using SslSessionPtr = OpensslPtr<SSL_SESSION, SSL_SESSION_free>;

// The reason of the most recent error on this thread's queue ("ee key too small"), or
// `fallback` when the queue is empty. Clears the queue: OpenSSL's I/O calls require an
// empty queue to report their own errors reliably, so nobody may leave one behind.
inline std::string takeOpensslError(const char* fallback = "unknown OpenSSL error") {
  unsigned long code = ERR_peek_last_error();
  const char* reason = code ? ERR_reason_error_string(code) : nullptr;
  std::string out = reason ? reason : fallback;
  ERR_clear_error();
  return out;
}

// A memory BIO holding the file at `path`, read by readBoundedFile(): BIO_new_file() would
// read a device or a FIFO named in the configuration for ever. Null with `error` set.
inline BioPtr boundedFileBio(const std::string& path, std::string& error) {
  std::string text;
  if (!readBoundedFile(path, text, error)) return nullptr;
  BioPtr bio(BIO_new(BIO_s_mem()));
  // EOF reads as the end of the data, not as "retry later" as for a memory BIO being filled.
  if (bio) BIO_set_mem_eof_return(bio.get(), 0);
  if (!bio || BIO_write(bio.get(), text.data(), static_cast<int>(text.size())) !=
                  static_cast<int>(text.size())) {
    bio.reset();
    error = takeOpensslError("out of memory");
  }
  // Key files pass through here: leave no copy of the key behind in freed memory.
  OPENSSL_cleanse(text.data(), text.size());
  return bio;
}

}  // namespace gw
