#include "backup/mount_path_tree.h"

#include <algorithm>
#include <cstring>

namespace continuum::backup {
namespace {

mode_t TypeBits(EntryType type) {
  switch (type) {
    case EntryType::kFile: return S_IFREG;
    case EntryType::kDir: return S_IFDIR;
    case EntryType::kSymlink: return S_IFLNK;
    case EntryType::kCharDev: return S_IFCHR;
    case EntryType::kBlockDev: return S_IFBLK;
    case EntryType::kFifo: return S_IFIFO;
    case EntryType::kSocket: return S_IFSOCK;
  }
  return S_IFREG;
}

timespec ToTimespec(int64_t ns) {
  timespec ts;
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1000000000;
    --ts.tv_sec;
  }
  return ts;
}

Status NoEntry(const std::string& what) { return Status(StatusCode::kNotFound, what, ENOENT); }

}  // namespace

Result<std::unique_ptr<MountPathTree>> MountPathTree::Open(std::shared_ptr<MountBlobCache> blobs,
                                                           const repo::BlobId& root, int64_t time_ns) {
  auto tree = std::unique_ptr<MountPathTree>(new MountPathTree(std::move(blobs)));
  auto node = std::make_unique<Node>();
  node->entry.type = EntryType::kDir;
  node->entry.mode = 0755;
  node->entry.mtime_ns = node->entry.ctime_ns = time_ns;
  node->entry.nlink = 2;
  node->tree = root;
  tree->nodes_[kRootIno] = std::move(node);
  // Decode the root now, so a damaged point fails the mount rather than the first ls.
  std::unique_lock lock(tree->mu_);
  CONTINUUM_RETURN_IF_ERROR(tree->LoadDir(kRootIno, lock));
  lock.unlock();
  return tree;
}

Result<MountPathTree::Node*> MountPathTree::Get(uint64_t ino) {
  auto it = nodes_.find(ino);
  if (it == nodes_.end()) return NoEntry("no inode " + std::to_string(ino));
  return it->second.get();
}

Status MountPathTree::LoadDir(uint64_t ino, std::unique_lock<std::mutex>& lock) {
  CONTINUUM_ASSIGN_OR_RETURN(Node * dir, Get(ino));
  if (dir->entry.type != EntryType::kDir) return Status(StatusCode::kInvalidArgument, "not a directory", ENOTDIR);
  if (dir->listed) return Status::Ok();
  const repo::BlobId tree_id = dir->tree;
  // The tree read runs unlocked; a racing loader of the same directory is
  // detected below and its result kept.
  lock.unlock();
  auto tree = blobs_->GetTree(tree_id);
  Result<std::vector<DirEntry>> entries =
      tree.ok() ? DecodeDirListing(tree->payload, tree->refs.size(), "directory tree " + tree_id.Hex())
                : Result<std::vector<DirEntry>>(tree.status());
  lock.lock();
  CONTINUUM_RETURN_IF_ERROR(entries.status());
  CONTINUUM_ASSIGN_OR_RETURN(dir, Get(ino));
  if (dir->listed) return Status::Ok();
  for (auto& e : *entries) {
    uint64_t child_ino = 0;
    if (e.hardlink_group != 0) {
      if (auto it = link_groups_.find(e.hardlink_group); it != link_groups_.end()) child_ino = it->second;
    }
    if (child_ino == 0) {
      child_ino = next_ino_++;
      auto node = std::make_unique<Node>();
      if (e.type == EntryType::kDir) node->tree = tree->refs[static_cast<size_t>(e.subtree)];
      if (e.type == EntryType::kFile) {
        node->data = std::make_shared<FileData>();
        for (int64_t c : e.chunks) {
          FileData::Piece piece;
          if (c >= 0) {
            piece.id = tree->refs[static_cast<size_t>(c)];
          } else {
            piece.hole = static_cast<uint64_t>(-c);
          }
          node->data->pieces.push_back(piece);
        }
      }
      node->entry = std::move(e);
      node->entry.chunks.clear();
      if (node->entry.hardlink_group != 0) link_groups_[node->entry.hardlink_group] = child_ino;
      dir->children[node->entry.name] = child_ino;
      nodes_[child_ino] = std::move(node);
    } else {
      dir->children[e.name] = child_ino;
    }
  }
  dir->listed = true;
  return Status::Ok();
}

Result<uint64_t> MountPathTree::Lookup(uint64_t parent, const std::string& name) {
  std::unique_lock lock(mu_);
  CONTINUUM_RETURN_IF_ERROR(LoadDir(parent, lock));
  CONTINUUM_ASSIGN_OR_RETURN(Node * dir, Get(parent));
  auto it = dir->children.find(name);
  if (it == dir->children.end()) return NoEntry("no " + name);
  return it->second;
}

Result<struct stat> MountPathTree::Attr(uint64_t ino) {
  std::lock_guard lock(mu_);
  CONTINUUM_ASSIGN_OR_RETURN(Node * node, Get(ino));
  const DirEntry& e = node->entry;
  struct stat st {};
  st.st_ino = ino;
  st.st_mode = TypeBits(e.type) | (e.mode & 07777);
  st.st_nlink = e.nlink ? e.nlink : 1;
  st.st_uid = e.uid;
  st.st_gid = e.gid;
  st.st_rdev = e.rdev;
  st.st_size = static_cast<off_t>(e.type == EntryType::kSymlink ? e.link_target.size() : e.size);
  st.st_blksize = 4096;
  st.st_blocks = (st.st_size + 511) / 512;
  st.st_mtim = ToTimespec(e.mtime_ns);
  st.st_atim = st.st_mtim;  // no atime is stored; restore also sets atime = mtime
  st.st_ctim = ToTimespec(e.ctime_ns);
  return st;
}

Result<std::vector<std::pair<std::string, uint64_t>>> MountPathTree::List(uint64_t ino) {
  std::unique_lock lock(mu_);
  CONTINUUM_RETURN_IF_ERROR(LoadDir(ino, lock));
  CONTINUUM_ASSIGN_OR_RETURN(Node * dir, Get(ino));
  return std::vector<std::pair<std::string, uint64_t>>(dir->children.begin(), dir->children.end());
}

Result<std::string> MountPathTree::ReadLink(uint64_t ino) {
  std::lock_guard lock(mu_);
  CONTINUUM_ASSIGN_OR_RETURN(Node * node, Get(ino));
  if (node->entry.type != EntryType::kSymlink) return Status(StatusCode::kInvalidArgument, "not a symlink", EINVAL);
  return node->entry.link_target;
}

Result<std::map<std::string, std::vector<uint8_t>>> MountPathTree::Xattrs(uint64_t ino) {
  std::lock_guard lock(mu_);
  CONTINUUM_ASSIGN_OR_RETURN(Node * node, Get(ino));
  return node->entry.xattrs;
}

Result<size_t> MountPathTree::Read(uint64_t ino, uint64_t offset, std::span<uint8_t> out) {
  std::shared_ptr<FileData> data;
  uint64_t size = 0;
  {
    std::lock_guard lock(mu_);
    CONTINUUM_ASSIGN_OR_RETURN(Node * node, Get(ino));
    if (node->entry.type != EntryType::kFile) return Status(StatusCode::kInvalidArgument, "not a file", EISDIR);
    data = node->data;
    size = node->entry.size;
  }
  if (offset >= size) return size_t{0};
  const size_t want = static_cast<size_t>(std::min<uint64_t>(out.size(), size - offset));
  size_t done = 0;
  while (done < want) {
    const uint64_t pos = offset + done;
    FileData::Piece piece;
    uint64_t start = 0;
    uint64_t end = 0;
    {
      std::unique_lock lock(data->mu);
      // Learn piece lengths in order until one ends past `pos`.
      while (data->ends.size() < data->pieces.size() && (data->ends.empty() || data->ends.back() <= pos)) {
        const size_t k = data->ends.size();
        const uint64_t prev = k == 0 ? 0 : data->ends[k - 1];
        FileData::Piece next = data->pieces[k];
        uint64_t len = next.hole;
        if (len == 0) {
          lock.unlock();
          CONTINUUM_ASSIGN_OR_RETURN(MountBlobCache::Blob blob, blobs_->Get(next.id));
          lock.lock();
          len = blob->size();
        }
        if (data->ends.size() == k) data->ends.push_back(prev + len);
      }
      auto it = std::upper_bound(data->ends.begin(), data->ends.end(), pos);
      if (it == data->ends.end()) {
        return DataLoss("file inode " + std::to_string(ino) + ": content ends before its recorded size " +
                        std::to_string(size));
      }
      const size_t i = static_cast<size_t>(it - data->ends.begin());
      piece = data->pieces[i];
      start = i == 0 ? 0 : data->ends[i - 1];
      end = *it;
    }
    const size_t n = static_cast<size_t>(std::min<uint64_t>(want - done, end - pos));
    if (piece.hole > 0) {
      std::memset(out.data() + done, 0, n);
    } else {
      CONTINUUM_ASSIGN_OR_RETURN(MountBlobCache::Blob blob, blobs_->Get(piece.id));
      if (blob->size() != end - start) return DataLoss("file inode " + std::to_string(ino) + ": chunk changed size");
      std::memcpy(out.data() + done, blob->data() + (pos - start), n);
    }
    done += n;
  }
  return done;
}

}  // namespace continuum::backup
