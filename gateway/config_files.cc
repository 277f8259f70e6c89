// Checks of the files a configuration names, so that `gateway --check` catches a bad
// certificate or key set before a reload would.
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "gateway/config_sections.h"

namespace gw::config_detail {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// OpenSSL's reason for the last failure, and a clean queue for whoever comes next.
std::string opensslReason() {
  unsigned long code = ERR_peek_last_error();
  const char* reason = code ? ERR_reason_error_string(code) : nullptr;
  std::string out = reason ? reason : "no PEM data";
  ERR_clear_error();
  return out;
}

X509Ptr readFirstCertificate(const std::string& path, int* count) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return nullptr;
  X509Ptr first;
  *count = 0;
  while (X509Ptr cert{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
    if (!first) first = std::move(cert);
    ++*count;
  }
  // Reading until the end always leaves a "no start line" error behind.
  if (*count > 0) ERR_clear_error();
  return first;
}

PkeyPtr readPrivateKey(const std::string& path) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return nullptr;
  // An empty passphrase callback: an encrypted key fails here instead of prompting.
  auto no_passphrase = [](char*, int, int, void*) { return 0; };
  return PkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
}

}  // namespace

bool checkCertificates(ConfigContext& ctx, const YAML::Node& at, const std::string& path) {
  int count = 0;
  if (readFirstCertificate(path, &count)) return true;
  ctx.error(at, quoteValue(path) + " holds no PEM certificate (" + opensslReason() + ")");
  return false;
}

bool checkPrivateKey(ConfigContext& ctx, const YAML::Node& at, const std::string& path) {
  if (readPrivateKey(path)) return true;
  ctx.error(at, quoteValue(path) + " holds no unencrypted PEM private key (" + opensslReason() + ")");
  return false;
}

void checkKeyMatchesCertificate(ConfigContext& ctx, const YAML::Node& at,
                                const std::string& cert_path, const std::string& key_path) {
  int count = 0;
  X509Ptr cert = readFirstCertificate(cert_path, &count);
  PkeyPtr key = readPrivateKey(key_path);
  if (!cert || !key) return;  // already reported
  if (X509_check_private_key(cert.get(), key.get()) == 1) return;
  ERR_clear_error();
  ctx.error(at, "private key " + quoteValue(key_path) + " does not match certificate " +
                    quoteValue(cert_path));
}

std::optional<std::string> readJwksFile(ConfigContext& ctx, const YAML::Node& at,
                                        const std::string& path) {
  std::string text;
  std::string problem;
  if (!readWholeFile(path, text, problem)) {
    ctx.error(at, "cannot read JWKS file " + quoteValue(path) + ": " + problem);
    return std::nullopt;
  }
  auto fail = [&](const std::string& why) {
    ctx.error(at, "JWKS file " + quoteValue(path) + ": " + why);
    return std::nullopt;
  };
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return fail("not valid JSON");
  if (!doc.is_object() || !doc.contains("keys") || !doc["keys"].is_array()) {
    return fail("expected a JSON object with a \"keys\" array");
  }
  const auto& keys = doc["keys"];
  if (keys.empty()) return fail("the \"keys\" array is empty");
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!keys[i].is_object() || !keys[i].contains("kty") || !keys[i]["kty"].is_string()) {
      return fail("key " + std::to_string(i) + " has no \"kty\"");
    }
  }
  return text;
}

}  // namespace gw::config_detail
