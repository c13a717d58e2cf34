#include "repo/blob_walker.h"

namespace continuum::repo {

BlobWalker::BlobWalker(const MasterIndex* index, TreeReader read_tree, const BlobSet* damaged)
    : index_(index), read_tree_(std::move(read_tree)), damaged_(damaged) {}

WalkResult BlobWalker::Walk(const std::vector<BlobId>& roots) {
  WalkResult out;
  BlobSet seen;
  std::vector<BlobId> stack(roots.rbegin(), roots.rend());
  auto note = [&](const std::string& p) {
    if (out.first_problem.empty()) out.first_problem = p;
  };
  while (!stack.empty()) {
    BlobId id = stack.back();
    stack.pop_back();
    if (!seen.insert(id).second) continue;
    auto loc = index_->Find(id);
    if (!loc) {
      out.missing.push_back(id);
      note("blob " + id.Hex() + " is missing");
      continue;
    }
    if (damaged_ && damaged_->count(id)) {
      out.damaged.push_back(id);
      note("blob " + id.Hex() + " is damaged");
      continue;
    }
    out.blobs.push_back(id);
    if (loc->entry.type != BlobType::kTree) continue;
    if (auto bad = bad_trees_.find(id); bad != bad_trees_.end()) {
      out.damaged.push_back(id);
      note(bad->second);
      continue;
    }
    auto it = refs_.find(id);
    if (it == refs_.end()) {
      auto tree = read_tree_(id);
      if (!tree.ok()) {
        bad_trees_.emplace(id, tree.status().message());
        out.damaged.push_back(id);
        note(tree.status().message());
        continue;
      }
      it = refs_.emplace(id, std::move(tree->refs)).first;
    }
    stack.insert(stack.end(), it->second.rbegin(), it->second.rend());
  }
  return out;
}

}  // namespace continuum::repo
