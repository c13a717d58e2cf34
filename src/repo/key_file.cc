#include "repo/key_file.h"

#include <fcntl.h>
#include <sodium.h>

#include <algorithm>

#include "continuum/common/checksum.h"
#include "continuum/common/time_util.h"
#include "continuum/io/file.h"
#include "repo/bytes.h"

namespace continuum::repo {

namespace {

constexpr uint16_t kVersion = 1;
constexpr uint16_t kKdfArgon2id = 1;
constexpr uint16_t kKdfKeyFile = 2;
constexpr size_t kAadBytes = 48;      // magic .. created_ns
constexpr size_t kChecksumAt = 164;   // XXH3 covers [0, 164)
constexpr uint64_t kMaxOps = 32;
constexpr uint64_t kMaxMem = 1ull << 30;
constexpr size_t kMaxKeyFile = 1u << 20;

// A kek that wipes itself: it is as secret as the master key.
struct Kek {
  std::array<uint8_t, 32> bytes{};
  ~Kek() { SecureZero(bytes); }
};

Status DeriveFromPassword(const std::string& password, std::span<const uint8_t> salt, uint64_t ops,
                          uint64_t mem, Kek* kek) {
  if (sodium_init() < 0) return Internal("libsodium initialisation failed");
  if (ops < crypto_pwhash_OPSLIMIT_MIN || ops > kMaxOps || mem < crypto_pwhash_MEMLIMIT_MIN || mem > kMaxMem) {
    return InvalidArgument("argon2id parameters out of range: ops " + std::to_string(ops) + ", memory " +
                           std::to_string(mem));
  }
  if (crypto_pwhash(kek->bytes.data(), kek->bytes.size(), password.data(), password.size(), salt.data(), ops,
                    static_cast<size_t>(mem), crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return ResourceExhausted("argon2id: out of memory deriving the key (" + std::to_string(mem >> 20) + " MiB)");
  }
  return Status::Ok();
}

Status DeriveFromKeyFile(const std::string& path, std::span<const uint8_t> salt, Kek* kek) {
  CONTINUUM_ASSIGN_OR_RETURN(std::string contents, io::ReadFileToString(path));
  if (contents.size() < 32) return InvalidArgument("key file " + path + " holds fewer than 32 bytes");
  if (contents.size() > kMaxKeyFile) return InvalidArgument("key file " + path + " is larger than 1 MiB");
  std::string msg = "continuum-keyfile-v1" + contents;
  kek->bytes = HmacSha256(salt, AsBytes(msg));
  SecureZero({reinterpret_cast<uint8_t*>(msg.data()), msg.size()});
  SecureZero({reinterpret_cast<uint8_t*>(contents.data()), contents.size()});
  return Status::Ok();
}

}  // namespace

Result<std::vector<uint8_t>> KeyFile::Wrap(const MasterKey& key, const Credentials& creds, const KdfParams& kdf) {
  bool use_file = !creds.key_file.empty();
  if (!use_file && creds.password.empty()) return InvalidArgument("empty password");
  uint8_t salt[16];
  CONTINUUM_RETURN_IF_ERROR(RandomBytes(salt));
  Kek kek;
  if (use_file) {
    CONTINUUM_RETURN_IF_ERROR(DeriveFromKeyFile(creds.key_file, salt, &kek));
  } else {
    CONTINUUM_RETURN_IF_ERROR(DeriveFromPassword(creds.password, salt, kdf.ops_limit, kdf.mem_limit, &kek));
  }
  std::vector<uint8_t> out;
  ByteWriter w(&out);
  w.U32(Magic("CKEY"));
  w.U16(kVersion);
  w.U16(use_file ? kKdfKeyFile : kKdfArgon2id);
  w.U64(use_file ? 0 : kdf.ops_limit);
  w.U64(use_file ? 0 : kdf.mem_limit);
  w.Bytes(salt);
  w.I64(WallNowNs());
  uint8_t plain[64];
  std::memcpy(plain, key.data_key.data(), 32);
  std::memcpy(plain + 32, key.id_key.data(), 32);
  auto sealed = SealWithKey(kek.bytes, {out.data(), kAadBytes}, plain);
  SecureZero(plain);
  if (!sealed.ok()) return sealed.status();
  w.Bytes(*sealed);
  w.Zeros(24);
  w.U64(Checksum64(out.data(), kChecksumAt));
  return out;
}

Result<MasterKey> KeyFile::Unwrap(std::span<const uint8_t> file, const Credentials& creds, const std::string& name) {
  if (file.size() != kKeyFileBytes) return DataLoss("key file " + name + " has size " + std::to_string(file.size()) +
                                                    ", expected " + std::to_string(kKeyFileBytes));
  ByteReader r(file);
  uint32_t magic = 0;
  uint16_t version = 0, kdf = 0;
  uint64_t ops = 0, mem = 0, checksum = 0;
  r.U32(&magic);
  r.U16(&version);
  r.U16(&kdf);
  r.U64(&ops);
  r.U64(&mem);
  std::span<const uint8_t> salt, sealed;
  r.Take(16, &salt);
  r.Skip(8);  // created_ns: informational
  r.Take(kSealOverhead + 64, &sealed);
  std::span<const uint8_t> reserved;
  r.Take(24, &reserved);
  r.U64(&checksum);
  if (r.failed() || magic != Magic("CKEY")) return DataLoss("key file " + name + " has no CKEY header");
  if (checksum != Checksum64(file.data(), kChecksumAt)) return DataLoss("key file " + name + " is damaged (checksum mismatch)");
  if (!std::all_of(reserved.begin(), reserved.end(), [](uint8_t b) { return b == 0; })) return DataLoss("key file " + name + " has reserved bytes set");
  if (version != kVersion) {
    return FailedPrecondition("key file " + name + " has version " + std::to_string(version) + "; this build reads 1");
  }
  Kek kek;
  if (kdf == kKdfArgon2id) {
    if (!creds.key_file.empty()) return InvalidArgument("key file " + name + " needs a password, not a key file");
    CONTINUUM_RETURN_IF_ERROR(DeriveFromPassword(creds.password, salt, ops, mem, &kek).WithContext("key file " + name));
  } else if (kdf == kKdfKeyFile) {
    if (creds.key_file.empty()) return InvalidArgument("key file " + name + " needs a key file, not a password");
    CONTINUUM_RETURN_IF_ERROR(DeriveFromKeyFile(creds.key_file, salt, &kek));
  } else {
    return DataLoss("key file " + name + " names unknown kdf " + std::to_string(kdf));
  }
  auto plain = OpenWithKey(kek.bytes, file.first(kAadBytes), sealed);
  // The checksum matched, so the bytes are as written: a failing tag means the
  // credentials are wrong, not that the file is damaged.
  if (!plain.ok()) return InvalidArgument("wrong password");
  MasterKey key;
  std::memcpy(key.data_key.data(), plain->data(), 32);
  std::memcpy(key.id_key.data(), plain->data() + 32, 32);
  SecureZero(*plain);
  return key;
}

}  // namespace continuum::repo
