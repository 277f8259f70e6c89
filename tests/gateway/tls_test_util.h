// A throw-away PKI for TLS tests and benchmarks, made with the OpenSSL API at run time
// (nothing private is committed), and helpers that connect a client and a server
// TlsSession in memory.
//
// TestPki::get() builds once per process, into a temporary directory removed at exit:
//   root CA -> intermediate CA -> server certificates (their files hold leaf + chain)
//   root CA -> client certificate;  a second, unrelated "evil" CA for refusals.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "gateway/buffer.h"
#include "gateway/config/config.h"
#include "gateway/tls/openssl_util.h"
#include "gateway/tls/tls_context.h"
#include "gateway/tls/tls_session.h"

namespace gw::tls_test {

enum class KeyKind { EcdsaP256, Rsa2048, Rsa1024 };

struct Issued {
  PkeyPtr key;
  X509Ptr cert;
};

inline PkeyPtr makeKey(KeyKind kind) {
  switch (kind) {
    case KeyKind::EcdsaP256:
      return PkeyPtr(EVP_EC_gen("P-256"));
    case KeyKind::Rsa2048:
      return PkeyPtr(EVP_RSA_gen(2048));
    case KeyKind::Rsa1024:
      return PkeyPtr(EVP_RSA_gen(1024));
  }
  return nullptr;
}

inline void addExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer ? issuer : cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) throw std::runtime_error("bad extension " + value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// `sans` in OpenSSL's syntax ("DNS:a.test,IP:127.0.0.1"), empty for none. A null
// issuer makes a self-signed CA.
inline Issued issue(KeyKind kind, const std::string& common_name, const Issued* issuer,
                    const std::string& sans, bool ca, bool client = false) {
  static long serial = 1;
  Issued out{makeKey(kind), X509Ptr(X509_new())};
  X509* cert = out.cert.get();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 7 * 24 * 3600);
  X509_set_pubkey(cert, out.key.get());
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Gateway Tests"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509* issuer_cert = issuer ? issuer->cert.get() : nullptr;
  X509_set_issuer_name(cert, issuer_cert ? X509_get_subject_name(issuer_cert) : name);
  addExtension(cert, issuer_cert, NID_subject_key_identifier, "hash");
  if (ca) {
    addExtension(cert, issuer_cert, NID_basic_constraints, "critical,CA:TRUE");
    addExtension(cert, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    addExtension(cert, issuer_cert, NID_basic_constraints, "critical,CA:FALSE");
    addExtension(cert, issuer_cert, NID_ext_key_usage, client ? "clientAuth" : "serverAuth");
  }
  if (issuer_cert) addExtension(cert, issuer_cert, NID_authority_key_identifier, "keyid:always");
  if (!sans.empty()) addExtension(cert, issuer_cert, NID_subject_alt_name, sans);
  EVP_PKEY* signer = issuer ? issuer->key.get() : out.key.get();
  if (X509_sign(cert, signer, EVP_sha256()) == 0) throw std::runtime_error("X509_sign failed");
  return out;
}

inline std::string pemOf(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, size_t(len));
}

inline std::string pemOf(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, size_t(len));
}

class TestPki {
 public:
  static const TestPki& get() {
    static TestPki pki;
    return pki;
  }

  // Paths of the files.
  std::string root_ca, evil_ca;
  TlsCertificate default_ecdsa;  // default.test, localhost, IP 127.0.0.1
  TlsCertificate default_rsa;    // the same names, an RSA key
  TlsCertificate api;            // api.example.com (exact)
  TlsCertificate wildcard;       // *.wild.test
  TlsCertificate cn_only;        // no SAN, CN legacy.test
  TlsCertificate evil;           // default.test, signed by the evil CA
  TlsCertificate weak_rsa;       // RSA 1024: refused at security level 2
  TlsCertificate client;         // client.test, for mTLS
  TlsCertificate evil_client;    // the same from the evil CA
  std::string garbage;           // not PEM at all

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  ~TestPki() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

 private:
  TestPki() {
    std::string pattern = (std::filesystem::temp_directory_path() / "gwtlsXXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    Issued root = issue(KeyKind::EcdsaP256, "Gateway Test Root CA", nullptr, "", true);
    Issued intermediate = issue(KeyKind::EcdsaP256, "Gateway Test Intermediate", &root, "", true);
    Issued evil_root = issue(KeyKind::EcdsaP256, "Evil CA", nullptr, "", true);
    root_ca = write("root-ca.crt", pemOf(root.cert.get()));
    evil_ca = write("evil-ca.crt", pemOf(evil_root.cert.get()));
    const std::string chain = pemOf(intermediate.cert.get());
    const std::string default_names = "DNS:default.test,DNS:localhost,IP:127.0.0.1";
    default_ecdsa = server("default-ecdsa", KeyKind::EcdsaP256, "default.test", default_names,
                           intermediate, chain);
    default_rsa = server("default-rsa", KeyKind::Rsa2048, "default.test", default_names,
                         intermediate, chain);
    api = server("api", KeyKind::EcdsaP256, "api.example.com", "DNS:api.example.com",
                 intermediate, chain);
    wildcard = server("wildcard", KeyKind::EcdsaP256, "wild.test", "DNS:*.wild.test",
                      intermediate, chain);
    cn_only = server("cn-only", KeyKind::EcdsaP256, "legacy.test", "", intermediate, chain);
    evil = server("evil", KeyKind::EcdsaP256, "default.test", default_names, evil_root, "");
    weak_rsa = server("weak-rsa", KeyKind::Rsa1024, "weak.test", "DNS:weak.test", intermediate,
                      chain);
    client = clientCert("client", root);
    evil_client = clientCert("evil-client", evil_root);
    garbage = write("garbage.pem", "this is not a certificate\n");
  }

  std::string write(const std::string& name, const std::string& content) const {
    std::ofstream(dir_ / name, std::ios::binary) << content;
    return path(name);
  }

  TlsCertificate server(const std::string& file, KeyKind kind, const std::string& cn,
                        const std::string& sans, const Issued& issuer,
                        const std::string& chain) const {
    Issued leaf = issue(kind, cn, &issuer, sans, false);
    return {write(file + ".crt", pemOf(leaf.cert.get()) + chain),
            write(file + ".key", pemOf(leaf.key.get()))};
  }

  TlsCertificate clientCert(const std::string& file, const Issued& issuer) const {
    Issued leaf = issue(KeyKind::EcdsaP256, "client.test", &issuer, "DNS:client.test", false, true);
    return {write(file + ".crt", pemOf(leaf.cert.get())),
            write(file + ".key", pemOf(leaf.key.get()))};
  }

  std::filesystem::path dir_;
};

// ---------------------------------------------------------------- in-memory pairs

constexpr size_t kSinkLimit = 1 << 20;

// Moves everything `from` has to send into `to`. Returns the bytes moved.
inline size_t transfer(TlsSession& from, TlsSession& to, InputBlock& to_plaintext,
                       size_t limit = kSinkLimit) {
  size_t moved = 0;
  while (from.wantsWrite()) {
    iovec iov;
    from.output().peek(&iov, 1);
    to.feed(static_cast<const char*>(iov.iov_base), iov.iov_len, to_plaintext, limit);
    from.output().drain(iov.iov_len);
    moved += iov.iov_len;
  }
  return moved;
}

// A client and a server session wired back to back, each with its plaintext sink.
struct Pair {
  Pair(std::shared_ptr<const TlsServerContext> server_ctx,
       std::shared_ptr<const TlsClientContext> client_ctx,
       const std::string& endpoint = "default.test:443")
      : server(std::move(server_ctx)), client(std::move(client_ctx), endpoint) {}

  // Runs the conversation until neither side has anything to say.
  void pump() {
    client.start();
    while (client.wantsWrite() || server.wantsWrite()) {
      transfer(client, server, server_in);
      transfer(server, client, client_in);
    }
  }
  bool established() const {
    return server.state() == TlsState::Established && client.state() == TlsState::Established;
  }
  static std::string take(InputBlock& in) {
    std::string out(in.data() ? in.data() + in.consumed() : "", in.unconsumed());
    in.consume(in.unconsumed());
    in.compact();
    return out;
  }

  TlsSession server;
  TlsSession client;
  InputBlock server_in;
  InputBlock client_in;
};

inline ListenerTls listenerTls(std::vector<TlsCertificate> certificates,
                               std::string min_version = "TLSv1.2", std::string client_ca = "") {
  ListenerTls tls;
  tls.certificates = std::move(certificates);
  tls.min_version = std::move(min_version);
  tls.client_ca = std::move(client_ca);
  return tls;
}

inline UpstreamTls upstreamTls(std::string ca, std::string sni = "",
                               TlsCertificate client = {}) {
  UpstreamTls tls;
  tls.ca = std::move(ca);
  tls.sni = std::move(sni);
  tls.cert_file = client.cert_file;
  tls.key_file = client.key_file;
  return tls;
}

}  // namespace gw::tls_test
