#include "repo/crypto.h"

#include <openssl/core_names.h>
#include <cstring>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

namespace continuum::repo {

namespace {

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
struct MacCtxFree {
  void operator()(EVP_MAC_CTX* c) const { EVP_MAC_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;
using MacCtx = std::unique_ptr<EVP_MAC_CTX, MacCtxFree>;

Status GcmSeal(EVP_CIPHER_CTX* ctx, const uint8_t* key, std::span<const uint8_t> aad,
               std::span<const uint8_t> plaintext, std::vector<uint8_t>* out) {
  if (plaintext.size() > (1u << 30)) return InvalidArgument("encrypt: object larger than 1 GiB");
  // A fresh random nonce per encryption: see "Encryption" in repository.md.
  uint8_t nonce[kNonceBytes];
  CONTINUUM_RETURN_IF_ERROR(RandomBytes(nonce));
  int len = 0;
  // The AAD is consumed before *out grows: callers pass a prefix of *out as AAD.
  if (EVP_EncryptInit_ex(ctx, key ? EVP_aes_256_gcm() : nullptr, nullptr, key, nonce) != 1 ||
      (!aad.empty() && EVP_EncryptUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1)) {
    return Internal("encrypt: openssl aes-256-gcm failed");
  }
  size_t base = out->size();
  out->resize(base + kNonceBytes + plaintext.size() + kTagBytes);
  std::memcpy(out->data() + base, nonce, kNonceBytes);
  uint8_t* ct = out->data() + base + kNonceBytes;
  bool ok = EVP_EncryptUpdate(ctx, ct, &len, plaintext.data(), static_cast<int>(plaintext.size())) == 1 &&
            EVP_EncryptFinal_ex(ctx, ct + len, &len) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagBytes, ct + plaintext.size()) == 1;
  if (!ok) {
    out->resize(base);
    return Internal("encrypt: openssl aes-256-gcm failed");
  }
  return Status::Ok();
}

// Decrypts into `out`, which must hold exactly the plaintext (sealed minus overhead).
Status GcmOpenTo(EVP_CIPHER_CTX* ctx, const uint8_t* key, std::span<const uint8_t> aad,
                 std::span<const uint8_t> sealed, std::span<uint8_t> out) {
  if (sealed.size() < kSealOverhead) return DataLoss("sealed object shorter than nonce and tag");
  if (sealed.size() > (1u << 30) + kSealOverhead) return DataLoss("sealed object larger than 1 GiB");
  const uint8_t* nonce = sealed.data();
  size_t ct_len = sealed.size() - kSealOverhead;
  if (out.size() != ct_len) return Internal("decrypt: output buffer does not match the sealed length");
  const uint8_t* ct = nonce + kNonceBytes;
  // The tag is copied because EVP_CTRL_GCM_SET_TAG takes a non-const pointer.
  uint8_t tag[kTagBytes];
  std::memcpy(tag, ct + ct_len, kTagBytes);
  int len = 0;
  bool ok = EVP_DecryptInit_ex(ctx, key ? EVP_aes_256_gcm() : nullptr, nullptr, key, nonce) == 1 &&
            (aad.empty() || EVP_DecryptUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size())) == 1) &&
            EVP_DecryptUpdate(ctx, out.data(), &len, ct, static_cast<int>(ct_len)) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kTagBytes, tag) == 1 &&
            EVP_DecryptFinal_ex(ctx, out.data() + len, &len) == 1;
  if (!ok) return DataLoss("authentication failed (damaged data or wrong key)");
  return Status::Ok();
}

Result<std::vector<uint8_t>> GcmOpen(EVP_CIPHER_CTX* ctx, const uint8_t* key, std::span<const uint8_t> aad,
                                     std::span<const uint8_t> sealed) {
  std::vector<uint8_t> out(sealed.size() >= kSealOverhead ? sealed.size() - kSealOverhead : 0);
  CONTINUUM_RETURN_IF_ERROR(GcmOpenTo(ctx, key, aad, sealed, out));
  return out;
}

}  // namespace

Status RandomBytes(std::span<uint8_t> out) {
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) {
    return Internal("random: openssl RAND_bytes failed");
  }
  return Status::Ok();
}

FileId Sha256(std::span<const uint8_t> data) {
  FileId id;
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), id.bytes.data(), &len, EVP_sha256(), nullptr);
  return id;
}

std::array<uint8_t, 32> HmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> a,
                                   std::span<const uint8_t> b) {
  std::array<uint8_t, 32> out{};
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
                         OSSL_PARAM_construct_end()};
  size_t len = 0;
  EVP_MAC_init(ctx, key.data(), key.size(), params);
  EVP_MAC_update(ctx, a.data(), a.size());
  if (!b.empty()) EVP_MAC_update(ctx, b.data(), b.size());
  EVP_MAC_final(ctx, out.data(), &len, out.size());
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  return out;
}

void SecureZero(std::span<uint8_t> bytes) { OPENSSL_cleanse(bytes.data(), bytes.size()); }

struct Crypto::Contexts {
  CipherCtx enc;
  CipherCtx dec;
  MacCtx mac;  // keyed once; re-initialised with a null key per id
};

Result<std::unique_ptr<Crypto>> Crypto::Create(const MasterKey& key) {
  std::unique_ptr<Crypto> c(new Crypto());
  c->key_ = key;
  c->ctx_ = std::make_unique<Contexts>();
  c->ctx_->enc.reset(EVP_CIPHER_CTX_new());
  c->ctx_->dec.reset(EVP_CIPHER_CTX_new());
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (!mac || !c->ctx_->enc || !c->ctx_->dec) {
    EVP_MAC_free(mac);
    return Internal("crypto: cannot create openssl contexts");
  }
  c->ctx_->mac.reset(EVP_MAC_CTX_new(mac));
  EVP_MAC_free(mac);
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
                         OSSL_PARAM_construct_end()};
  // Key schedules are computed once here; per-call inits pass a null key.
  if (!c->ctx_->mac || EVP_MAC_init(c->ctx_->mac.get(), key.id_key.data(), key.id_key.size(), params) != 1 ||
      EVP_EncryptInit_ex(c->ctx_->enc.get(), EVP_aes_256_gcm(), nullptr, key.data_key.data(), nullptr) != 1 ||
      EVP_DecryptInit_ex(c->ctx_->dec.get(), EVP_aes_256_gcm(), nullptr, key.data_key.data(), nullptr) != 1) {
    return Internal("crypto: cannot initialise openssl contexts");
  }
  return c;
}

Crypto::~Crypto() {
  SecureZero(key_.data_key);
  SecureZero(key_.id_key);
}

BlobId Crypto::Id(BlobType type, std::span<const uint8_t> data) {
  BlobId id;
  uint8_t t = static_cast<uint8_t>(type);
  size_t len = 0;
  EVP_MAC_CTX* m = ctx_->mac.get();
  EVP_MAC_init(m, nullptr, 0, nullptr);
  EVP_MAC_update(m, &t, 1);
  EVP_MAC_update(m, data.data(), data.size());
  EVP_MAC_final(m, id.bytes.data(), &len, id.bytes.size());
  return id;
}

Status Crypto::SealAppend(std::span<const uint8_t> aad, std::span<const uint8_t> plaintext,
                          std::vector<uint8_t>* out) {
  return GcmSeal(ctx_->enc.get(), nullptr, aad, plaintext, out);
}

Result<std::vector<uint8_t>> Crypto::Seal(std::span<const uint8_t> aad, std::span<const uint8_t> plaintext) {
  std::vector<uint8_t> out;
  CONTINUUM_RETURN_IF_ERROR(SealAppend(aad, plaintext, &out));
  return out;
}

Result<std::vector<uint8_t>> Crypto::Open(std::span<const uint8_t> aad, std::span<const uint8_t> sealed,
                                          const std::string& what) {
  auto r = GcmOpen(ctx_->dec.get(), nullptr, aad, sealed);
  if (!r.ok()) return r.status().WithContext(what);
  return r;
}

Status Crypto::OpenTo(std::span<const uint8_t> aad, std::span<const uint8_t> sealed, const std::string& what,
                      std::span<uint8_t> out) {
  Status st = GcmOpenTo(ctx_->dec.get(), nullptr, aad, sealed, out);
  return st.ok() ? st : st.WithContext(what);
}

Result<std::vector<uint8_t>> SealWithKey(std::span<const uint8_t> key, std::span<const uint8_t> aad,
                                         std::span<const uint8_t> plaintext) {
  if (key.size() != 32) return InvalidArgument("encrypt: key must be 32 bytes");
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  std::vector<uint8_t> out;
  CONTINUUM_RETURN_IF_ERROR(GcmSeal(ctx.get(), key.data(), aad, plaintext, &out));
  return out;
}

Result<std::vector<uint8_t>> OpenWithKey(std::span<const uint8_t> key, std::span<const uint8_t> aad,
                                         std::span<const uint8_t> sealed) {
  if (key.size() != 32) return InvalidArgument("decrypt: key must be 32 bytes");
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  return GcmOpen(ctx.get(), key.data(), aad, sealed);
}

}  // namespace continuum::repo
