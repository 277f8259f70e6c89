// Helpers for configuration tests: a scratch directory to run in, and the files a
// configuration names (a self-signed certificate made with OpenSSL at run time, a JWKS,
// an API key list).
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "gateway/config/config_loader.h"

namespace gw::test_util {

// A fresh directory that is the working directory for the object's life.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "gwcfgXXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
    previous_ = std::filesystem::current_path();
    std::filesystem::current_path(path_);
  }
  ~ScratchDir() {
    std::filesystem::current_path(previous_);
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Writes `content` at `relative`, creating its directories.
  void write(const std::string& relative, const std::string& content) const {
    std::filesystem::path file = path_ / relative;
    std::filesystem::create_directories(file.parent_path());
    std::ofstream(file, std::ios::binary) << content;
  }

 private:
  std::filesystem::path path_;
  std::filesystem::path previous_;
};

// A self-signed P-256 certificate and its key, PEM-encoded.
inline std::pair<std::string, std::string> makeSelfSigned(const std::string& common_name) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509_set_issuer_name(cert, name);
  X509_sign(cert, key, EVP_sha256());
  auto pem = [](auto write) {
    BIO* bio = BIO_new(BIO_s_mem());
    write(bio);
    char* data = nullptr;
    long length = BIO_get_mem_data(bio, &data);
    std::string out(data, static_cast<size_t>(length));
    BIO_free(bio);
    return out;
  };
  std::string cert_pem = pem([&](BIO* b) { PEM_write_bio_X509(b, cert); });
  std::string key_pem =
      pem([&](BIO* b) { PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr); });
  X509_free(cert);
  EVP_PKEY_free(key);
  return {cert_pem, key_pem};
}

// Usable keys (the loader checks them): RFC 7515 A.3's P-256 public key and a 256-bit
// HMAC secret, so that both public-key and HS* providers find one.
inline constexpr const char* kJwks =
    R"({"keys":[{"kty":"EC","crv":"P-256","kid":"ec1",)"
    R"("x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",)"
    R"("y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},)"
    R"({"kty":"oct","kid":"k1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ"}]})";
// sha256("partner-one-key") and sha256("partner-two-key") need not be real: the format
// is what the loader checks.
inline constexpr const char* kApiKeys =
    "# name sha256\n"
    "partner-one 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
    "\n"
    "partner-two FEDCBA9876543210FEDCBA9876543210FEDCBA9876543210FEDCBA9876543210\n";

// Writes the files reference.yaml names into the current directory.
inline void writeReferenceFiles(const ScratchDir& dir) {
  auto [cert, key] = makeSelfSigned("localhost");
  dir.write("conf/tls/server.crt", cert);
  dir.write("conf/tls/server.key", key);
  dir.write("conf/jwks.json", kJwks);
  dir.write("conf/api-keys.txt", kApiKeys);
}

// The formatted errors of loading `yaml` as "test.yaml".
inline std::vector<std::string> errorsOf(const std::string& yaml) {
  std::vector<std::string> out;
  for (const auto& e : loadConfigString(yaml, "test.yaml").errors) out.push_back(e.format());
  return out;
}

// A valid configuration to append sections to (each test adds what it exercises).
inline constexpr const char* kMinimal =
    "listeners:\n"
    "  - name: http\n"
    "    address: 127.0.0.1:8080\n"
    "upstreams:\n"
    "  - name: api\n"
    "    endpoints: [127.0.0.1:9000]\n";

}  // namespace gw::test_util
