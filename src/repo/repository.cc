#include "continuum/repo/repository.h"

#include <algorithm>
#include <set>

#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/repo/local_backend.h"
#include "repo/key_file.h"
#include "repo/repository_state.h"

namespace continuum::repo {

Repository::Repository() : s_(std::make_unique<State>()) {}

Repository::~Repository() {
  if (s_ && ((s_->pack && !s_->pack->empty()) || s_->store_pending)) {
    Logger("repo")->warn("{}: dropping unflushed blobs at close", location_);
  }
}

Status Repository::Init(const std::string& path, const Credentials& creds, const InitOptions& options) {
  return Init(std::make_unique<LocalBackend>(path), creds, options);
}

Status Repository::Init(std::unique_ptr<Backend> backend, const Credentials& creds, const InitOptions& options) {
  RepoConfig config;
  CONTINUUM_RETURN_IF_ERROR(RandomBytes(config.repo_id));
  uint8_t seed[8];
  CONTINUUM_RETURN_IF_ERROR(RandomBytes(seed));
  std::memcpy(&config.gear_seed, seed, sizeof(seed));
  config.append_only = options.append_only;
  config.created_ns = WallNowNs();
  config.cdc_min = options.cdc_min;
  config.cdc_avg = options.cdc_avg;
  config.cdc_max = options.cdc_max;
  config.fixed_chunk = options.fixed_chunk;
  Status valid = config.Validate("init options");
  if (!valid.ok()) return InvalidArgument(valid.message());

  MasterKey key;
  CONTINUUM_RETURN_IF_ERROR(RandomBytes(key.data_key));
  CONTINUUM_RETURN_IF_ERROR(RandomBytes(key.id_key));
  auto key_file = KeyFile::Wrap(key, creds, options.kdf);
  auto crypto = Crypto::Create(key);
  SecureZero(key.data_key);
  SecureZero(key.id_key);
  if (!key_file.ok()) return key_file.status();
  if (!crypto.ok()) return crypto.status();
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> config_bytes, config.Encode(**crypto));

  CONTINUUM_RETURN_IF_ERROR(backend->Create());
  // The key and config are never rewritten: immutable from the start.
  backend->SetWriteOnce(options.append_only);
  // The key goes first: a config without a key would be an unopenable repository,
  // while a key without a config is just an unfinished init that can be redone.
  Status st = backend->Write(FileKind::kKey, Sha256(*key_file).Hex(), *key_file);
  if (!st.ok()) return st;
  st = backend->Write(FileKind::kConfig, "config", config_bytes);
  if (st.code() == StatusCode::kAlreadyExists) return AlreadyExists("a repository already exists at " + backend->Location());
  return st;
}

Result<std::unique_ptr<Repository>> Repository::Open(const std::string& path, const Credentials& creds,
                                                     OpenOptions options) {
  return Open(std::make_unique<LocalBackend>(path), creds, std::move(options));
}

Result<std::unique_ptr<Repository>> Repository::Open(std::unique_ptr<Backend> backend, const Credentials& creds,
                                                     OpenOptions options) {
  std::unique_ptr<Repository> r(new Repository());
  r->location_ = backend->Location();
  std::string loc = r->location_;
  auto config_bytes = backend->Read(FileKind::kConfig, "config", kMaxSmallFile);
  if (!config_bytes.ok()) {
    if (config_bytes.status().code() == StatusCode::kNotFound) return NotFound("no repository at " + loc);
    return config_bytes.status();
  }
  std::string config_name = backend->Describe(FileKind::kConfig, "config");
  CONTINUUM_RETURN_IF_ERROR(RepoConfig::PeekRepoId(*config_bytes, config_name).status());

  // Unlock the master key with the first key file that opens.
  CONTINUUM_ASSIGN_OR_RETURN(auto key_names, backend->List(FileKind::kKey));
  if (key_names.empty()) return DataLoss("repository " + loc + " has no key files");
  auto& s = *r->s_;
  bool wrong_credentials = false;
  Status first_error;
  for (const auto& name : key_names) {
    std::string what = backend->Describe(FileKind::kKey, name);
    auto bytes = backend->Read(FileKind::kKey, name, kMaxSmallFile);
    auto key = bytes.ok() ? KeyFile::Unwrap(*bytes, creds, what) : Result<MasterKey>(bytes.status());
    if (!key.ok()) {
      if (key.status().code() == StatusCode::kInvalidArgument) {
        wrong_credentials = true;
      } else if (first_error.ok()) {
        first_error = key.status();
      }
      Logger("repo")->debug("key {} does not open: {}", what, key.status().message());
      continue;
    }
    auto crypto = Crypto::Create(*key);
    SecureZero(key->data_key);
    SecureZero(key->id_key);
    if (!crypto.ok()) return crypto.status();
    // A key left by an interrupted init may open with the same password but
    // wrap another master key: the one that decrypts the config is the right one.
    auto config = RepoConfig::Decode(*config_bytes, **crypto, config_name);
    if (!config.ok()) {
      if (first_error.ok()) first_error = config.status();
      continue;
    }
    s.crypto = std::move(*crypto);
    s.config = std::move(*config);
    break;
  }
  if (!s.crypto) {
    if (!wrong_credentials) return first_error;
    std::string msg = std::string(creds.key_file.empty() ? "wrong password" : "wrong key file") + " for repository " + loc;
    // A damaged key file might have been the one for these credentials: say so.
    if (!first_error.ok()) msg += " (another key file is unusable: " + first_error.message() + ")";
    return InvalidArgument(msg);
  }
  options.pack_target_bytes = std::clamp<uint64_t>(options.pack_target_bytes, 64u << 10, 512u << 20);
  s.options = std::move(options);
  s.codec = std::make_unique<BlobCodec>(s.crypto.get(), s.options.compression_level);
  s.pack = std::make_unique<PackWriter>(s.codec.get(), s.crypto.get());
  backend->SetWriteOnce(s.config.append_only);
  r->backend_ = std::move(backend);

  LockManager::Options lock_options{.stale_ns = s.options.stale_lock_ns,
                                    .refresh_ns = s.options.lock_refresh_ns,
                                    .clock = s.options.clock};
  s.lock = std::make_unique<LockManager>(r->backend_.get(), lock_options);
  CONTINUUM_RETURN_IF_ERROR(s.lock->Acquire(s.options.lock));
  if (s.options.lock != LockMode::kNone) {
    auto cleaned = r->backend_->CleanTemporary(s.options.stale_lock_ns);
    if (cleaned.ok() && *cleaned > 0) Logger("repo")->info("{}: removed {} orphaned temporary files", loc, *cleaned);
  }
  std::vector<std::string> problems;
  CONTINUUM_RETURN_IF_ERROR(r->LoadIndex(&s.index, &s.index_files, &problems));
  for (const auto& p : problems) Logger("repo")->warn("{} (run check, then repair)", p);
  return r;
}

Status Repository::LoadIndex(MasterIndex* index, std::vector<FileId>* files, std::vector<std::string>* problems) {
  index->Clear();
  files->clear();
  CONTINUUM_ASSIGN_OR_RETURN(auto names, backend_->List(FileKind::kIndex));
  std::vector<std::pair<FileId, IndexContents>> loaded;
  std::set<FileId> superseded;
  for (const auto& name : names) {
    std::string what = backend_->Describe(FileKind::kIndex, name);
    auto bytes = backend_->Read(FileKind::kIndex, name, kMaxMetadataFile);
    if (!bytes.ok()) {
      if (bytes.status().code() == StatusCode::kNotFound) continue;  // removed by a repair meanwhile
      problems->push_back(bytes.status().message());
      continue;
    }
    auto id = FileId::FromHex(name);
    if (!id.ok() || Sha256(*bytes) != *id) {
      problems->push_back("index file " + what + ": content does not match its name");
      continue;
    }
    auto contents = IndexFile::Decode(*s_->crypto, *bytes, "index file " + what);
    if (!contents.ok()) {
      problems->push_back(contents.status().message());
      continue;
    }
    for (const auto& sid : contents->supersedes) superseded.insert(sid);
    loaded.emplace_back(*id, std::move(*contents));
  }
  for (const auto& [id, contents] : loaded) {
    if (superseded.count(id)) continue;
    files->push_back(id);
    for (const auto& p : contents.packs) {
      index->AddPack(p.pack, p.pack_size);
      for (const auto& e : p.entries) index->Add(p.pack, p.pack_size, e);
    }
  }
  return Status::Ok();
}

Status Repository::Refresh() { return s_->lock->RefreshIfDue(); }

FastCdcOptions Repository::CdcOptions() const {
  const auto& c = s_->config;
  return {.min_size = c.cdc_min, .avg_size = c.cdc_avg, .max_size = c.cdc_max, .seed = c.gear_seed};
}

FixedChunkerOptions Repository::FixedOptions() const { return {.chunk_size = s_->config.fixed_chunk}; }

bool Repository::append_only() const { return s_->config.append_only; }

std::string Repository::repo_id() const {
  BlobId tmp;
  std::memcpy(tmp.bytes.data(), s_->config.repo_id.data(), 16);
  return tmp.Hex().substr(0, 32);
}

}  // namespace continuum::repo
