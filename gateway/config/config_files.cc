// Checks of the files a configuration names, so that `gateway --check` catches a bad
// certificate or key set before a reload would.
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "gateway/config/config_sections.h"
#include "gateway/tls/openssl_util.h"

namespace gw::config_detail {
namespace {

// The first certificate of the file and how many it holds; null with `problem` set.
X509Ptr readFirstCertificate(const std::string& path, int* count, std::string& problem) {
  BioPtr bio = boundedFileBio(path, problem);
  if (!bio) return nullptr;
  X509Ptr first;
  *count = 0;
  while (X509Ptr cert{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
    if (!first) first = std::move(cert);
    ++*count;
  }
  // Reading until the end always leaves a "no start line" error behind.
  if (*count > 0) ERR_clear_error();
  if (!first) problem = takeOpensslError("no PEM data");
  return first;
}

PkeyPtr readPrivateKey(const std::string& path, std::string& problem) {
  BioPtr bio = boundedFileBio(path, problem);
  if (!bio) return nullptr;
  // An empty passphrase callback: an encrypted key fails here instead of prompting.
  auto no_passphrase = [](char*, int, int, void*) { return 0; };
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  if (!key) problem = takeOpensslError("no PEM data");
  return key;
}

}  // namespace

bool checkCertificates(ConfigContext& ctx, const YAML::Node& at, const std::string& path) {
  int count = 0;
  std::string problem;
  if (readFirstCertificate(path, &count, problem)) return true;
  ctx.error(at, quoteValue(path) + " holds no PEM certificate (" + problem + ")");
  return false;
}

bool checkPrivateKey(ConfigContext& ctx, const YAML::Node& at, const std::string& path) {
  std::string problem;
  if (readPrivateKey(path, problem)) return true;
  ctx.error(at, quoteValue(path) + " holds no unencrypted PEM private key (" + problem + ")");
  return false;
}

void checkKeyMatchesCertificate(ConfigContext& ctx, const YAML::Node& at,
                                const std::string& cert_path, const std::string& key_path) {
  int count = 0;
  std::string ignored;  // already reported
  X509Ptr cert = readFirstCertificate(cert_path, &count, ignored);
  PkeyPtr key = readPrivateKey(key_path, ignored);
  if (!cert || !key) return;
  if (X509_check_private_key(cert.get(), key.get()) == 1) return;
  ERR_clear_error();
  ctx.error(at, "private key " + quoteValue(key_path) + " does not match certificate " +
                    quoteValue(cert_path));
}

std::optional<std::string> readJwksFile(ConfigContext& ctx, const YAML::Node& at,
                                        const std::string& path) {
  std::string text;
  std::string problem;
  if (!readBoundedFile(path, text, problem)) {
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
